//! The Positional-aware Perceiver Resampler (`image_proj_model.*`, reference spec §2): turns each
//! character's ArcFace identity and CLIP features into 20 image tokens and prepends the learned
//! background tokens. Dimensions are read from the weights, so the released checkpoint and tiny
//! test checkpoints load without flags.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, linear_no_bias, LayerNorm, Linear, VarBuilder};

/// Head width of every perceiver attention in the reference (spec §2.1).
pub const DIM_HEAD: usize = 64;

/// Sizes of the resampler, inferred from the checkpoint's tensor shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct PprConfig {
    /// ArcFace embedding width (512).
    pub id_dim: usize,
    /// Hidden width of the ID MLP (1024).
    pub id_hidden: usize,
    /// Output / cross-attention width C (2048).
    pub dim: usize,
    /// ID tokens per character (4).
    pub id_tokens: usize,
    /// CLIP hidden width (1280).
    pub clip_dim: usize,
    /// Face resampler (R1) depth and inner width.
    pub face_depth: usize,
    pub face_inner: usize,
    /// Character resampler (R2) width, depth, inner width and queries (1280, 4, 1280, 16).
    pub char_dim: usize,
    pub char_depth: usize,
    pub char_inner: usize,
    pub char_queries: usize,
    /// Character slots in `pos_embed` (3) and tokens per character (20).
    pub max_persons: usize,
    pub tokens: usize,
    /// Head width of both perceivers (64 in the released model; not inferable from shapes).
    pub dim_head: usize,
}

fn dims(vb: &VarBuilder, name: &str) -> Result<Vec<usize>> {
    Ok(vb.get_unchecked(name)?.dims().to_vec())
}

fn depth(vb: &VarBuilder, prefix: &str) -> usize {
    (0..).take_while(|i| vb.contains_tensor(&format!("{prefix}.layers.{i}.0.to_q.weight"))).count()
}

impl PprConfig {
    /// Reads the sizes from the tensors under `image_proj_model`; `dim_head` is the perceivers'
    /// head width ([`DIM_HEAD`] for the released checkpoint).
    pub fn infer(vb: &VarBuilder, dim_head: usize) -> Result<PprConfig> {
        let proj0 = dims(vb, "proj.0.weight")?;
        let proj2 = dims(vb, "proj.2.weight")?;
        let pos = dims(vb, "pos_embed")?;
        let lat = dims(vb, "resample.latents")?;
        let (&[id_hidden, id_dim], &[id_out, _], &[max_persons, tokens, dim], &[_, char_queries, char_dim]) =
            (proj0.as_slice(), proj2.as_slice(), pos.as_slice(), lat.as_slice())
        else {
            return Err(candle_core::Error::Msg("image_proj_model: unexpected tensor ranks".into()));
        };
        let clip_dim = dims(vb, "perceiver_resampler.proj_in.weight")?[1];
        let face_inner = dims(vb, "perceiver_resampler.layers.0.0.to_q.weight")?[0];
        let char_inner = dims(vb, "resample.layers.0.0.to_q.weight")?[0];
        let cfg = PprConfig {
            id_dim,
            id_hidden,
            dim,
            id_tokens: id_out / dim.max(1),
            clip_dim,
            face_depth: depth(vb, "perceiver_resampler"),
            face_inner,
            char_dim,
            char_depth: depth(vb, "resample"),
            char_inner,
            char_queries,
            max_persons,
            tokens,
            dim_head,
        };
        if cfg.id_tokens + cfg.char_queries != cfg.tokens
            || dim_head == 0
            || face_inner % dim_head != 0
            || char_inner % dim_head != 0
        {
            return Err(candle_core::Error::Msg(format!("image_proj_model: inconsistent sizes {cfg:?}")));
        }
        Ok(cfg)
    }
}

/// `PerceiverAttention` (spec §2.2): queries from the latents, keys/values from
/// `[x; latents]`, scale `1/sqrt(sqrt(dim_head))` on both q and k, softmax in f32.
struct PerceiverAttention {
    norm1: LayerNorm,
    norm2: LayerNorm,
    to_q: Linear,
    to_kv: Linear,
    to_out: Linear,
    heads: usize,
    dim_head: usize,
}

impl PerceiverAttention {
    fn new(vb: VarBuilder, dim: usize, inner: usize, dim_head: usize) -> Result<Self> {
        Ok(PerceiverAttention {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            to_q: linear_no_bias(dim, inner, vb.pp("to_q"))?,
            to_kv: linear_no_bias(dim, inner * 2, vb.pp("to_kv"))?,
            to_out: linear_no_bias(inner, dim, vb.pp("to_out"))?,
            heads: inner / dim_head,
            dim_head,
        })
    }

    fn forward(&self, x: &Tensor, latents: &Tensor) -> Result<Tensor> {
        let xn = self.norm1.forward(x)?;
        let ln = self.norm2.forward(latents)?;
        let q = self.to_q.forward(&ln)?;
        let kv = self.to_kv.forward(&Tensor::cat(&[&xn, &ln], 1)?)?;
        let inner = q.dim(D::Minus1)?;
        let (k, v) = (kv.narrow(D::Minus1, 0, inner)?, kv.narrow(D::Minus1, inner, inner)?);
        let split = |t: &Tensor| crate::models::attention::split_heads(t, self.heads);
        let (q, k, v) = (split(&q)?, split(&k)?, split(&v)?);
        let s = 1.0 / (self.dim_head as f64).sqrt().sqrt();
        let w = (q * s)?.matmul(&(k * s)?.transpose(2, 3)?.contiguous()?)?;
        let dtype = w.dtype();
        let w = candle_nn::ops::softmax_last_dim(&w.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
        let o = crate::models::attention::merge_heads(&w.matmul(&v)?)?;
        self.to_out.forward(&o)
    }
}

/// `LN → Linear(4D, no bias) → GELU → Linear(D, no bias)` with state-dict indices 0, 1, 3.
struct FeedForward {
    norm: LayerNorm,
    up: Linear,
    down: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(FeedForward {
            norm: layer_norm(dim, 1e-5, vb.pp("0"))?,
            up: linear_no_bias(dim, dim * 4, vb.pp("1"))?,
            down: linear_no_bias(dim * 4, dim, vb.pp("3"))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&self.up.forward(&self.norm.forward(x)?)?.gelu_erf()?)
    }
}

/// A stack of (attention, feed-forward) layers plus `proj_in` / `proj_out` / `norm_out`.
struct Perceiver {
    proj_in: Linear,
    layers: Vec<(PerceiverAttention, FeedForward)>,
    proj_out: Linear,
    norm_out: LayerNorm,
    latents: Option<Tensor>,
}

impl Perceiver {
    #[allow(clippy::too_many_arguments)]
    fn new(
        vb: VarBuilder,
        in_dim: usize,
        dim: usize,
        inner: usize,
        dim_head: usize,
        depth: usize,
        out: usize,
        learned: bool,
    ) -> Result<Self> {
        let layers = (0..depth)
            .map(|i| {
                let l = vb.pp("layers").pp(i);
                Ok((PerceiverAttention::new(l.pp("0"), dim, inner, dim_head)?, FeedForward::new(l.pp("1"), dim)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Perceiver {
            proj_in: linear(in_dim, dim, vb.pp("proj_in"))?,
            layers,
            proj_out: linear(dim, out, vb.pp("proj_out"))?,
            norm_out: layer_norm(out, 1e-5, vb.pp("norm_out"))?,
            latents: if learned { Some(vb.get_unchecked("latents")?) } else { None },
        })
    }

    /// `queries` replaces the learned latents for R1 (its first argument, spec §2.2).
    fn forward(&self, x: &Tensor, queries: Option<&Tensor>) -> Result<Tensor> {
        let b = x.dim(0)?;
        let mut lat = match (queries, &self.latents) {
            (Some(q), _) => q.clone(),
            (None, Some(l)) => l.broadcast_as((b, l.dim(1)?, l.dim(2)?))?.contiguous()?,
            (None, None) => return Err(candle_core::Error::Msg("perceiver without queries".into())),
        };
        let x = self.proj_in.forward(x)?;
        for (attn, ff) in &self.layers {
            lat = (attn.forward(&x, &lat)? + &lat)?;
            lat = (ff.forward(&lat)? + &lat)?;
        }
        self.norm_out.forward(&self.proj_out.forward(&lat)?)
    }
}

/// The whole `image_proj_model`.
pub struct PositionalPerceiverResampler {
    cfg: PprConfig,
    proj0: Linear,
    proj2: Linear,
    norm: LayerNorm,
    face: Perceiver,
    character: Perceiver,
    pos_embed: Tensor,
    bg_embed: Tensor,
    proj_out: Linear,
    norm_out: LayerNorm,
}

impl PositionalPerceiverResampler {
    /// `vb` at the `image_proj_model` prefix.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Self::with_dim_head(vb, DIM_HEAD)
    }

    /// For checkpoints whose perceivers use another head width (e.g. tiny test models).
    pub fn with_dim_head(vb: VarBuilder, dim_head: usize) -> Result<Self> {
        let c = PprConfig::infer(&vb, dim_head)?;
        Ok(PositionalPerceiverResampler {
            proj0: linear(c.id_dim, c.id_hidden, vb.pp("proj").pp("0"))?,
            proj2: linear(c.id_hidden, c.id_tokens * c.dim, vb.pp("proj").pp("2"))?,
            norm: layer_norm(c.dim, 1e-5, vb.pp("norm"))?,
            face: Perceiver::new(
                vb.pp("perceiver_resampler"),
                c.clip_dim,
                c.dim,
                c.face_inner,
                c.dim_head,
                c.face_depth,
                c.dim,
                false,
            )?,
            character: Perceiver::new(
                vb.pp("resample"),
                c.clip_dim,
                c.char_dim,
                c.char_inner,
                c.dim_head,
                c.char_depth,
                c.dim,
                true,
            )?,
            pos_embed: vb.get_unchecked("pos_embed")?,
            bg_embed: vb.get_unchecked("bg_embed")?,
            proj_out: linear(c.dim, c.dim, vb.pp("proj_out"))?,
            norm_out: layer_norm(c.dim, 1e-5, vb.pp("norm_out"))?,
            cfg: c,
        })
    }

    pub fn config(&self) -> &PprConfig {
        &self.cfg
    }

    /// `id` `[N, 512]`, `clip_face`/`clip_crop` `[N, 257, 1280]` (CLIP penultimate states), one row
    /// per character slot → `[N + 1, 20, C]` with the background tokens first (spec §2.3).
    pub fn forward(&self, id: &Tensor, clip_face: &Tensor, clip_crop: &Tensor) -> Result<Tensor> {
        let n = id.dim(0)?;
        self.check_count(n)?;
        let slots: Vec<usize> = (0..n).collect();
        let ei = self.characters(id, clip_face, clip_crop, &slots, &vec![true; n])?;
        Tensor::cat(&[&self.bg_embed.to_dtype(ei.dtype())?, &ei], 0)
    }

    fn check_count(&self, n: usize) -> Result<()> {
        if n == 0 || n > self.cfg.max_persons {
            return Err(candle_core::Error::Msg(format!(
                "{n} characters; this adapter supports 1 to {}",
                self.cfg.max_persons
            )));
        }
        Ok(())
    }

    /// The learned background tokens `[1, 20, C]` (row 0 of every output, both CFG branches).
    pub fn background(&self) -> &Tensor {
        &self.bg_embed
    }

    /// The 20 tokens of each character row without the background: `[B, 20, C]`. Row `b` is
    /// placed in position slot `slots[b]` (its `pos_embed` row), so two inputs can be computed for
    /// the same slot (character interpolation blends them). `keep_character[b] == false` replaces
    /// that row's character embedding E2 by zeros before `pos_embed` — the "ID only" mode of the
    /// paper (Fig. 4, §5.5 of the spec; maintainer recipe FireRedTeam/StoryMaker #16).
    pub fn characters(
        &self,
        id: &Tensor,
        clip_face: &Tensor,
        clip_crop: &Tensor,
        slots: &[usize],
        keep_character: &[bool],
    ) -> Result<Tensor> {
        let n = id.dim(0)?;
        if slots.len() != n || keep_character.len() != n {
            return Err(candle_core::Error::Msg(format!(
                "{n} character rows but {} slots and {} flags",
                slots.len(),
                keep_character.len()
            )));
        }
        if let Some(&s) = slots.iter().find(|&&s| s >= self.cfg.max_persons) {
            return Err(candle_core::Error::Msg(format!(
                "character slot {s}; this adapter has {} slots",
                self.cfg.max_persons
            )));
        }
        let dtype = self.pos_embed.dtype();
        let dev = self.pos_embed.device();
        let (id, clip_face, clip_crop) = (id.to_dtype(dtype)?, clip_face.to_dtype(dtype)?, clip_crop.to_dtype(dtype)?);
        let t = self.proj2.forward(&self.proj0.forward(&id)?.gelu_erf()?)?;
        let t = self.norm.forward(&t.reshape((n, self.cfg.id_tokens, self.cfg.dim))?)?;
        let e1 = (&t + self.face.forward(&clip_face, Some(&t))?)?;
        let mut e2 = self.character.forward(&clip_crop, None)?;
        if keep_character.iter().any(|k| !k) {
            let keep: Vec<f32> = keep_character.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
            let keep = Tensor::from_vec(keep, (n, 1, 1), dev)?.to_dtype(dtype)?;
            e2 = e2.broadcast_mul(&keep)?;
        }
        let idx = Tensor::from_vec(slots.iter().map(|&s| s as u32).collect::<Vec<_>>(), n, dev)?;
        let pos = self.pos_embed.index_select(&idx, 0)?;
        let cat = (Tensor::cat(&[&e1, &e2], 1)? + pos)?;
        self.norm_out.forward(&self.proj_out.forward(&cat)?)? + &cat
    }

    /// The unconditional image tokens: the same module on zero features (spec §2.5).
    pub fn unconditional(&self, n: usize, clip_tokens: usize) -> Result<Tensor> {
        let dev = self.pos_embed.device();
        let dtype = self.pos_embed.dtype();
        let id = Tensor::zeros((n, self.cfg.id_dim), dtype, dev)?;
        let clip = Tensor::zeros((n, clip_tokens, self.cfg.clip_dim), dtype, dev)?;
        self.forward(&id, &clip, &clip)
    }
}
