//! Multi-head attention as diffusers' `Attention` with `AttnProcessor2_0` (reference spec §3),
//! plus the hook the StoryMaker adapter attaches to (LoRA deltas, decoupled image tokens).
//!
//! Scores are computed in the model dtype with candle's fused last-dim softmax (no f32 upcast of
//! the score tensor), and long sequences are processed in query chunks so the score matrix never
//! exceeds [`MAX_SCORE_ELEMENTS`] elements (SDXL at 1024² has 4096-token self-attention).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{linear, linear_no_bias, Linear, VarBuilder};

/// Upper bound on `batch * heads * q_chunk * kv_len` per softmax, to bound CPU memory.
pub const MAX_SCORE_ELEMENTS: usize = 64 * 1024 * 1024;

/// Which projection a LoRA delta applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proj {
    Q,
    K,
    V,
    Out,
}

/// Extra behaviour attached to one attention layer (the StoryMaker adapter implements it:
/// LoRA on q/k/v/out and the decoupled image-token branch, spec §3.3–3.4).
pub trait AttentionExtension: Send + Sync {
    /// Adds the delta for projection `which` of input `x` to `base` (the plain projection; on the GPU, `to_out`'s
    /// `base` comes without its bias, added afterwards with the residual, so the delta must not depend on it).
    fn project(&self, which: Proj, x: &Tensor, base: Tensor) -> Result<Tensor>;
    /// Number of leading context tokens that are text; the rest go to [`Self::extra_attention`].
    /// `None` means the whole context is text.
    fn text_len(&self) -> Option<usize>;
    /// The extra attention branch for the context tokens after `text_len`, given the shared
    /// query in heads layout `[B, H, T, D]`; its result (merged heads, `[B, T, H*D]`) is added
    /// to the text branch before `to_out`.
    fn extra_attention(&self, q: &Tensor, extra_ctx: &Tensor, heads: usize) -> Result<Option<Tensor>>;
}

/// `[B, T, H*D]` -> `[B, H, T, D]`
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, c) = x.dims3()?;
    x.reshape((b, t, heads, c / heads))?.transpose(1, 2)?.contiguous()
}

/// `[B, T, H*D]` -> `[B, H, T, D]` as a strided view (no copy): what the fused attention kernel reads directly;
/// [`sdpa`] copies it to contiguous only when it takes the reference path.
pub fn split_heads_view(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, c) = x.dims3()?;
    x.reshape((b, t, heads, c / heads))?.transpose(1, 2)
}

/// `[B, H, T, D]` -> `[B, T, H*D]`
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, t, h * d))
}

/// `softmax(q k^T / sqrt(d)) v` on `[B, H, T, D]` tensors: the fused CUDA kernel where it applies
/// ([`crate::kernels::flash_attention::supported`]), otherwise [`sdpa_reference`].
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let _p = crate::kernels::profile::scope("attn.sdpa", q.device());
    if crate::kernels::flash_attention::supported(q, k, v) {
        return crate::kernels::flash_attention::flash_attention(q, k, v);
    }
    sdpa_reference(&q.contiguous()?, &k.contiguous()?, &v.contiguous()?)
}

/// The candle-ops path of [`sdpa`] (every CPU tensor; the reference the fused kernel is checked against),
/// chunked over queries.
pub fn sdpa_reference(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    sdpa_with_limit(q, k, v, MAX_SCORE_ELEMENTS)
}

/// [`sdpa`] with an explicit bound on the score-matrix size per chunk.
pub fn sdpa_with_limit(q: &Tensor, k: &Tensor, v: &Tensor, max_score_elements: usize) -> Result<Tensor> {
    let (b, h, tq, d) = q.dims4()?;
    let tk = k.dim(2)?;
    let scale = 1.0 / (d as f64).sqrt();
    let kt = k.transpose(2, 3)?.contiguous()?;
    let per_row = (b * h * tk).max(1);
    let chunk = (max_score_elements / per_row).clamp(1, tq.max(1));
    let mut outs = Vec::with_capacity(tq.div_ceil(chunk));
    let mut start = 0;
    while start < tq {
        let len = chunk.min(tq - start);
        let qc = if len == tq { q.clone() } else { q.narrow(2, start, len)? };
        let scores = (qc.matmul(&kt)? * scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        outs.push(probs.matmul(v)?);
        start += len;
    }
    if outs.len() == 1 {
        Ok(outs.remove(0))
    } else {
        Tensor::cat(&outs, 2)
    }
}

/// diffusers `Attention`: `to_q`, `to_k`, `to_v` without bias, `to_out.0` with bias.
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    extension: Option<Box<dyn AttentionExtension>>,
}

impl Attention {
    /// `query_dim` = inner width (heads × head_dim in SDXL), `context_dim` = None for self-attention.
    pub fn new(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let ctx = context_dim.unwrap_or(query_dim);
        Ok(Attention {
            to_q: linear_no_bias(query_dim, inner, vb.pp("to_q"))?,
            to_k: linear_no_bias(ctx, inner, vb.pp("to_k"))?,
            to_v: linear_no_bias(ctx, inner, vb.pp("to_v"))?,
            to_out: linear(inner, query_dim, vb.pp("to_out").pp("0"))?,
            heads,
            extension: None,
        })
    }

    pub fn set_extension(&mut self, ext: Option<Box<dyn AttentionExtension>>) {
        self.extension = ext;
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    /// heads × head_dim (the width of q, k and v).
    pub fn inner_dim(&self) -> usize {
        self.to_q.weight().dim(0).unwrap_or(0)
    }

    fn proj(&self, which: Proj, layer: &Linear, x: &Tensor) -> Result<Tensor> {
        let base = match (crate::kernels::fuse_on(x), layer.bias()) {
            // One [B·T, K] GEMM on the GPU (q/k/v have no bias).
            (true, None) => crate::kernels::elementwise::matmul_t(x, layer.weight())?,
            _ => layer.forward(x)?,
        };
        match &self.extension {
            Some(ext) => ext.project(which, x, base),
            None => Ok(base),
        }
    }

    /// `x` `[B, T, C]`; `context` `[B, S, C_ctx]` for cross-attention, `None` for self-attention.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let z = self.attend(x, context)?;
        let _p = crate::kernels::profile::scope("attn.out", x.device());
        self.proj(Proj::Out, &self.to_out, &z)
    }

    /// `forward(x, context) + residual`; on the GPU `to_out`'s bias and the residual are added in one fused pass
    /// after the bias-free projection (and the extension's LoRA delta, which does not depend on the bias) (issue 9).
    pub fn forward_residual(&self, x: &Tensor, context: Option<&Tensor>, residual: &Tensor) -> Result<Tensor> {
        use crate::kernels::{elementwise, profile::scope};
        if let (true, Some(bias)) = (crate::kernels::fuse_on(x), self.to_out.bias()) {
            let z = self.attend(x, context)?;
            let a = {
                let _p = scope("attn.out", x.device());
                let base = elementwise::matmul_t(&z, self.to_out.weight())?;
                match &self.extension {
                    Some(ext) => ext.project(Proj::Out, &z, base)?,
                    None => base,
                }
            };
            let _p = scope("attn.bias+residual", x.device());
            return elementwise::linear_bias_residual(&a, bias, residual);
        }
        self.forward(x, context)? + residual
    }

    /// Everything before `to_out`: projections, attention, the extension's extra branch; `[B, T, H*D]`.
    fn attend(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let p = crate::kernels::profile::scope("attn.qkv", x.device());
        let q = split_heads_view(&self.proj(Proj::Q, &self.to_q, x)?, self.heads)?;
        let (text, extra) = match (context, self.extension.as_ref().and_then(|e| e.text_len())) {
            (Some(c), Some(n)) if c.dim(1)? > n => (c.narrow(1, 0, n)?, Some(c.narrow(1, n, c.dim(1)? - n)?)),
            (Some(c), _) => (c.clone(), None),
            (None, _) => (x.clone(), None),
        };
        let k = split_heads_view(&self.proj(Proj::K, &self.to_k, &text)?, self.heads)?;
        let v = split_heads_view(&self.proj(Proj::V, &self.to_v, &text)?, self.heads)?;
        drop(p);
        let mut z = merge_heads(&sdpa(&q, &k, &v)?)?;
        if let (Some(ext), Some(extra)) = (&self.extension, extra) {
            if let Some(zi) = ext.extra_attention(&q, &extra, self.heads)? {
                z = (z + zi)?;
            }
        }
        Ok(z)
    }
}

/// GELU-gated feed-forward (`ff.net.0.proj` → value ⊙ gelu_erf(gate) → `ff.net.2`), the value
/// being the first half of the projection as in diffusers' `GEGLU`.
pub struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    pub fn new(vb: VarBuilder, dim: usize, mult: usize) -> Result<Self> {
        let inner = dim * mult;
        Ok(FeedForward {
            proj: linear(dim, inner * 2, vb.pp("net").pp("0").pp("proj"))?,
            out: linear(inner, dim, vb.pp("net").pp("2"))?,
        })
    }
}

impl FeedForward {
    /// `forward(x) + residual`; on the GPU, GEGLU takes the projection's bias and `net.2`'s bias is added with
    /// the residual, each in one fused pass (issue 9).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        use crate::kernels::{elementwise, profile::scope};
        if let (true, Some(b1), Some(b2)) = (crate::kernels::fuse_on(x), self.proj.bias(), self.out.bias()) {
            let h = {
                let _p = scope("ff.proj", x.device());
                elementwise::matmul_t(x, self.proj.weight())?
            };
            let g = {
                let _p = scope("ff.geglu", x.device());
                elementwise::geglu(&h, b1)?
            };
            let o = {
                let _p = scope("ff.out", x.device());
                elementwise::matmul_t(&g, self.out.weight())?
            };
            let _p = scope("ff.bias+residual", x.device());
            return elementwise::linear_bias_residual(&o, b2, residual);
        }
        self.forward(x)? + residual
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?;
        let half = h.dim(D::Minus1)? / 2;
        let value = h.narrow(D::Minus1, 0, half)?;
        let gate = h.narrow(D::Minus1, half, half)?;
        self.out.forward(&(value * gate.gelu_erf()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn chunked_sdpa_equals_one_shot() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 2, 37, 8), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (1, 2, 23, 8), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (1, 2, 23, 8), &dev)?;
        // 2*23*5 elements per chunk: 5 query rows at a time, 8 chunks.
        let full = sdpa_with_limit(&q, &k, &v, 2 * 23 * 5)?;
        // Reference: explicit softmax over the whole score matrix.
        let s = (q.matmul(&k.transpose(2, 3)?)? / (8f64).sqrt())?;
        let p = candle_nn::ops::softmax(&s, D::Minus1)?;
        let expect = p.matmul(&v)?;
        let diff = (full - expect)?.abs()?.max_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        Ok(())
    }
}
