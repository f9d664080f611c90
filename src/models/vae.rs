//! The decoder half of diffusers' `AutoencoderKL` (SDXL VAE): scheduler-space latents → image.
//!
//! Facts this port relies on (`shared/design/SDXL-FACTS.md`, "VAE"; diffusers 0.42.1
//! `autoencoders/autoencoder_kl.py`, `autoencoders/vae.py::Decoder`, `unet_2d_blocks.py`):
//!
//! - Latents in the UNet/scheduler space are *scaled*; the pipeline decodes
//!   `vae.decode(latents / scaling_factor)` (0.13025 for SDXL). [`AutoencoderKlDecoder::decode`]
//!   takes the scaled latents and does the division itself; [`AutoencoderKlDecoder::forward`]
//!   takes what `vae.decode` receives. SDXL has no `latents_mean/std` nor `shift_factor`; when
//!   a config has both `latents_mean` and `latents_std`, the SDXL pipeline's rule
//!   `latents * std / scaling_factor + mean` is applied instead.
//! - `decode` = `post_quant_conv` (1x1) → `Decoder`: `conv_in` → mid block (resnet, single-head
//!   self-attention over all pixels with a residual, resnet) → `up_blocks` (reversed widths,
//!   `layers_per_block + 1` resnets each, nearest ×2 + 3x3 conv except in the last block) →
//!   GroupNorm → SiLU → `conv_out`. All norms use eps 1e-6; resnets have no time embedding.
//! - The pipeline image is `(raw * 0.5 + 0.5).clamp(0, 1)`, and `numpy_to_pil` makes bytes with
//!   `(x * 255).round()` (numpy rounds half to even).
//!
//! # Precision (f16 safety)
//!
//! The SDXL VAE overflows in f16 (activations of the last up blocks exceed 65504 and the image
//! turns to NaN/black); that is what `force_upcast: true` in its config says, and diffusers then
//! decodes in f32 even when the UNet runs in f16. [`AutoencoderKlDecoder::new`] does the same:
//! given an f16 `VarBuilder` and `force_upcast`, it loads and runs the decoder in f32.
//! [`VaeConfig::decode_dtype`] tells which dtype that is, and
//! [`AutoencoderKlDecoder::new_with_dtype`] forces a dtype (bf16 is safe: it has f32's range;
//! f16 only with an fp16-fixed VAE whose config says `force_upcast: false`). `decode` converts its
//! input to the decoder's dtype, so f16 latents from the UNet can be passed as they are.

use crate::kernels::conv::{conv2d, Conv2d};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::kernels::group_norm::FusedGroupNorm;
use crate::models::attention::sdpa;
use crate::models::unet::resnet::{conv3x3, ResnetBlock2D};

/// Epsilon of every GroupNorm in diffusers' VAE decoder.
const VAE_NORM_EPS: f64 = 1e-6;

fn default_true() -> bool {
    true
}

/// The fields of a diffusers `vae/config.json` (`AutoencoderKL`) that the decoder needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// 0.13025 for SDXL (0.18215 for SD 1.x).
    pub scaling_factor: f64,
    /// The VAE is not f16-safe and must be decoded in f32 when the rest runs in f16.
    #[serde(default = "default_true")]
    pub force_upcast: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default)]
    pub latents_mean: Option<Vec<f64>>,
    #[serde(default)]
    pub latents_std: Option<Vec<f64>>,
}

impl VaeConfig {
    /// stabilityai/stable-diffusion-xl-base-1.0 `vae/config.json`.
    pub fn sdxl() -> VaeConfig {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.13025,
            force_upcast: true,
            mid_block_add_attention: true,
            use_post_quant_conv: true,
            latents_mean: None,
            latents_std: None,
        }
    }

    pub fn from_json(json: &str) -> serde_json::Result<VaeConfig> {
        serde_json::from_str(json)
    }

    /// Reads and parses a diffusers `vae/config.json`; errors name the file.
    pub fn from_json_file(path: &std::path::Path) -> Result<VaeConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| candle_core::Error::Msg(format!("{}: cannot read VAE config: {e}", path.display())))?;
        Self::from_json(&text)
            .map_err(|e| candle_core::Error::Msg(format!("{}: invalid VAE config: {e}", path.display())))
    }

    /// Image pixels per latent pixel (8 for SDXL): one ×2 upsampler per up block but the last.
    pub fn upscale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// The dtype to decode in when the weights/UNet use `model_dtype`: f32 instead of f16 when
    /// `force_upcast` is set (as diffusers' SDXL pipeline does), `model_dtype` otherwise.
    pub fn decode_dtype(&self, model_dtype: DType) -> DType {
        if model_dtype == DType::F16 && self.force_upcast {
            DType::F32
        } else {
            model_dtype
        }
    }
}

/// A `[c, c]` projection with bias, stored under `new` (diffusers) or `old` (the legacy names in
/// published SDXL VAE files). A `[c, c, 1, 1]` 1x1-conv weight (original LDM layout) is accepted.
fn attn_linear(vb: &VarBuilder, new: &str, old: &str, c: usize) -> Result<Linear> {
    let name = if !vb.contains_tensor(&format!("{new}.weight")) && vb.contains_tensor(&format!("{old}.weight")) {
        old
    } else {
        new
    };
    let vb = vb.pp(name);
    let w = vb.get_unchecked("weight")?;
    let w = match w.dims() {
        [o, i] if *o == c && *i == c => w,
        [o, i, 1, 1] if *o == c && *i == c => w.reshape((c, c))?,
        dims => candle_core::bail!("{}.weight has shape {dims:?}, expected [{c}, {c}]", vb.prefix()),
    };
    Ok(Linear::new(w, Some(vb.get(c, "bias")?)))
}

/// diffusers `Attention` as built by `UNetMidBlock2D` for the VAE: one head of width `channels`,
/// GroupNorm before the projections, biases on q/k/v/out, residual added, rescale factor 1.
struct VaeAttention {
    group_norm: FusedGroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl VaeAttention {
    fn new(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        Ok(VaeAttention {
            group_norm: FusedGroupNorm::new(groups, channels, VAE_NORM_EPS, vb.pp("group_norm"))?,
            to_q: attn_linear(&vb, "to_q", "query", channels)?,
            to_k: attn_linear(&vb, "to_k", "key", channels)?,
            to_v: attn_linear(&vb, "to_v", "value", channels)?,
            to_out: attn_linear(&vb, "to_out.0", "proj_attn", channels)?,
        })
    }

    /// `x` `[B, C, H, W]`; the H·W pixels attend to each other (queries chunked by [`sdpa`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hs = self.group_norm.forward(x)?.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let heads = |l: &Linear| l.forward(&hs)?.unsqueeze(1)?.contiguous();
        let z = sdpa(&heads(&self.to_q)?, &heads(&self.to_k)?, &heads(&self.to_v)?)?.squeeze(1)?;
        let out = self.to_out.forward(&z)?.transpose(1, 2)?.reshape((b, c, h, w))?;
        out + x
    }
}

/// `UNetMidBlock2D` without time embedding: resnet → attention (optional) → resnet.
struct MidBlock {
    resnet0: ResnetBlock2D,
    attention: Option<VaeAttention>,
    resnet1: ResnetBlock2D,
}

impl MidBlock {
    fn new(vb: VarBuilder, channels: usize, groups: usize, add_attention: bool) -> Result<Self> {
        let resnet =
            |i: usize| ResnetBlock2D::new(vb.pp("resnets").pp(i), channels, channels, None, groups, VAE_NORM_EPS);
        Ok(MidBlock {
            resnet0: resnet(0)?,
            attention: add_attention
                .then(|| VaeAttention::new(vb.pp("attentions").pp(0), channels, groups))
                .transpose()?,
            resnet1: resnet(1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.resnet0.forward(x, None)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h)?;
        }
        self.resnet1.forward(&h, None)
    }
}

/// `UpDecoderBlock2D`: resnets, then (except in the last block) nearest ×2 and a 3x3 conv.
struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Conv2d>,
}

impl UpDecoderBlock {
    fn new(vb: VarBuilder, cin: usize, cout: usize, layers: usize, groups: usize, upsample: bool) -> Result<Self> {
        let resnets = (0..layers)
            .map(|j| {
                let c = if j == 0 { cin } else { cout };
                ResnetBlock2D::new(vb.pp("resnets").pp(j), c, cout, None, groups, VAE_NORM_EPS)
            })
            .collect::<Result<Vec<_>>>()?;
        let upsampler = upsample.then(|| conv3x3(vb.pp("upsamplers").pp(0).pp("conv"), cout, cout)).transpose()?;
        Ok(UpDecoderBlock { resnets, upsampler })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(&h, None)?;
        }
        if let Some(conv) = &self.upsampler {
            let (_, _, hh, ww) = h.dims4()?;
            h = conv.forward(&h.upsample_nearest2d(2 * hh, 2 * ww)?)?;
        }
        Ok(h)
    }
}

/// `AutoencoderKL`'s `post_quant_conv` + `decoder`, with diffusers' key names.
pub struct AutoencoderKlDecoder {
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<UpDecoderBlock>,
    conv_norm_out: FusedGroupNorm,
    conv_out: Conv2d,
    cfg: VaeConfig,
    dtype: DType,
}

impl AutoencoderKlDecoder {
    /// Loads the decoder in `cfg.decode_dtype(vb.dtype())`: f32 for an f16 `vb` when
    /// `force_upcast` is set (see the module docs), the `vb` dtype otherwise.
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let dtype = cfg.decode_dtype(vb.dtype());
        Self::new_with_dtype(vb, cfg, dtype)
    }

    /// Loads the decoder in exactly `dtype` (f32 or bf16 for the SDXL VAE; f16 overflows).
    pub fn new_with_dtype(vb: VarBuilder, cfg: &VaeConfig, dtype: DType) -> Result<Self> {
        let vb = vb.set_dtype(dtype);
        let ch = &cfg.block_out_channels;
        let (Some(&first), Some(&last)) = (ch.first(), ch.last()) else {
            candle_core::bail!("VAE config: block_out_channels is empty");
        };
        let groups = cfg.norm_num_groups;
        let post_quant_conv = cfg
            .use_post_quant_conv
            .then(|| {
                let c = cfg.latent_channels;
                conv2d(c, c, 1, Default::default(), vb.pp("post_quant_conv"))
            })
            .transpose()?;
        let dec = vb.pp("decoder");
        let mut up_blocks = Vec::with_capacity(ch.len());
        let mut prev = last;
        for (i, &cout) in ch.iter().rev().enumerate() {
            let upsample = i + 1 < ch.len();
            let vb_up = dec.pp("up_blocks").pp(i);
            up_blocks.push(UpDecoderBlock::new(vb_up, prev, cout, cfg.layers_per_block + 1, groups, upsample)?);
            prev = cout;
        }
        Ok(AutoencoderKlDecoder {
            post_quant_conv,
            conv_in: conv3x3(dec.pp("conv_in"), cfg.latent_channels, last)?,
            mid_block: MidBlock::new(dec.pp("mid_block"), last, groups, cfg.mid_block_add_attention)?,
            up_blocks,
            conv_norm_out: FusedGroupNorm::new(groups, first, VAE_NORM_EPS, dec.pp("conv_norm_out"))?,
            conv_out: conv3x3(dec.pp("conv_out"), first, cfg.out_channels)?,
            cfg: cfg.clone(),
            dtype,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// The dtype the decoder runs in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Scheduler-space latents `[B, C, h, w]` → what `vae.decode` receives (in the decoder dtype):
    /// `latents / scaling_factor`, or `latents * std / scaling_factor + mean` when the config has both.
    pub fn unscale(&self, latents_scaled: &Tensor) -> Result<Tensor> {
        let x = latents_scaled.to_dtype(self.dtype)?;
        let inv = 1.0 / self.cfg.scaling_factor;
        match (&self.cfg.latents_mean, &self.cfg.latents_std) {
            (Some(mean), Some(std)) => {
                let per_channel = |v: &[f64]| -> Result<Tensor> {
                    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                    let n = v.len();
                    Tensor::from_vec(v, (1, n, 1, 1), x.device())?.to_dtype(self.dtype)
                };
                ((x.broadcast_mul(&per_channel(std)?)? * inv)?).broadcast_add(&per_channel(mean)?)
            }
            _ => x * inv,
        }
    }

    /// diffusers `AutoencoderKL.decode(z)` without tiling: `z` is already unscaled
    /// (`latents / scaling_factor`); returns the raw image `[B, out_channels, 8h, 8w]`, ≈[-1, 1].
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let z = z.to_dtype(self.dtype)?;
        let z = match &self.post_quant_conv {
            Some(c) => c.forward(&z)?,
            None => z,
        };
        let mut h = self.mid_block.forward(&self.conv_in.forward(&z)?)?;
        for block in &self.up_blocks {
            h = block.forward(&h)?;
        }
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&h)?)
    }

    /// Scheduler-space latents → raw image in ≈[-1, 1] (decoder dtype); see [`to_image`].
    pub fn decode(&self, latents_scaled: &Tensor) -> Result<Tensor> {
        self.forward(&self.unscale(latents_scaled)?)
    }

    /// Like [`Self::decode`] but in overlapping tiles of `tile`×`tile` latent pixels, `overlap`
    /// latent pixels shared between neighbours, blended linearly as diffusers' `tiled_decode`
    /// (whose `tile_overlap_factor` is `overlap / tile`; SDXL default: tile 128, overlap 32).
    /// Bounds peak memory at large sizes; results differ slightly from the untiled decode
    /// because GroupNorm statistics and the mid-block attention see one tile at a time.
    pub fn decode_tiled(&self, latents_scaled: &Tensor, tile: usize, overlap: usize) -> Result<Tensor> {
        if tile == 0 || overlap >= tile {
            candle_core::bail!("decode_tiled: need 0 <= overlap < tile, got tile {tile}, overlap {overlap}");
        }
        let z = self.unscale(latents_scaled)?;
        let (_, _, h, w) = z.dims4()?;
        if h <= tile && w <= tile {
            return self.forward(&z);
        }
        let f = self.cfg.upscale_factor();
        let (stride, blend, keep) = (tile - overlap, overlap * f, (tile - overlap) * f);
        let mut rows: Vec<Vec<Tensor>> = Vec::new();
        for i in (0..h).step_by(stride) {
            let mut row = Vec::new();
            for j in (0..w).step_by(stride) {
                let t = z.narrow(2, i, tile.min(h - i))?.narrow(3, j, tile.min(w - j))?;
                let mut t = self.forward(&t)?;
                // diffusers blends in place, so later tiles see their neighbours' blended values.
                if let Some(above) = rows.last().and_then(|r: &Vec<Tensor>| r.get(row.len())) {
                    t = blend_edge(above, &t, blend, 2)?;
                }
                if let Some(left) = row.last() {
                    t = blend_edge(left, &t, blend, 3)?;
                }
                row.push(t);
            }
            rows.push(row);
        }
        let rows = rows
            .iter()
            .map(|row| {
                let cropped = row.iter().map(|t| crop(t, keep)).collect::<Result<Vec<_>>>()?;
                Tensor::cat(&cropped, 3)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&rows, 2)
    }
}

/// `t[:, :, :keep, :keep]` (clipped to its size).
fn crop(t: &Tensor, keep: usize) -> Result<Tensor> {
    let (_, _, h, w) = t.dims4()?;
    t.narrow(2, 0, keep.min(h))?.narrow(3, 0, keep.min(w))
}

/// diffusers `blend_v` (`dim` 2) / `blend_h` (`dim` 3): the first `e` rows/columns of `b` become
/// `a[-e + y] * (1 - y/e) + b[y] * (y/e)`, `e = min(extent, a's size, b's size)`.
fn blend_edge(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let (na, nb) = (a.dim(dim)?, b.dim(dim)?);
    let e = extent.min(na).min(nb);
    if e == 0 {
        return Ok(b.clone());
    }
    let ramp: Vec<f32> = (0..e).map(|y| y as f32 / e as f32).collect();
    let mut shape = vec![1usize; 4];
    shape[dim] = e;
    let wb = Tensor::from_vec(ramp, shape, b.device())?.to_dtype(b.dtype())?;
    let wa = (1.0 - &wb)?;
    let mixed = (a.narrow(dim, na - e, e)?.broadcast_mul(&wa)? + b.narrow(dim, 0, e)?.broadcast_mul(&wb)?)?;
    if e == nb {
        Ok(mixed)
    } else {
        Tensor::cat(&[mixed, b.narrow(dim, e, nb - e)?], dim)
    }
}

/// The pipeline image: `(raw * 0.5 + 0.5).clamp(0, 1)`, in f32.
pub fn to_image(raw: &Tensor) -> Result<Tensor> {
    raw.to_dtype(DType::F32)?.affine(0.5, 0.5)?.clamp(0f32, 1f32)
}

/// `[B, 3, H, W]` image in [0, 1] → one `RgbImage` per batch row, bytes `(x * 255).round()`
/// computed in f32 with ties to even, as diffusers' `numpy_to_pil`.
pub fn to_rgb_images(image: &Tensor) -> Result<Vec<image::RgbImage>> {
    let (b, c, h, w) = image.dims4()?;
    if c != 3 {
        candle_core::bail!("to_rgb_images: expected 3 channels, got {c}");
    }
    let hwc = (image.to_dtype(DType::F32)? * 255.0)?.permute((0, 2, 3, 1))?.contiguous()?;
    (0..b)
        .map(|i| {
            let bytes: Vec<u8> = hwc.get(i)?.flatten_all()?.to_vec1::<f32>()?.iter().map(|v| to_u8(*v)).collect();
            image::RgbImage::from_raw(w as u32, h as u32, bytes)
                .ok_or_else(|| candle_core::Error::Msg("to_rgb_images: buffer size mismatch".into()))
        })
        .collect()
}

/// `raw` decoder output → RGB images ([`to_image`] then [`to_rgb_images`]).
pub fn raw_to_rgb_images(raw: &Tensor) -> Result<Vec<image::RgbImage>> {
    to_rgb_images(&to_image(raw)?)
}

fn to_u8(v: f32) -> u8 {
    // `as` saturates (and maps NaN to 0), as numpy's uint8 cast does for in-range values.
    v.round_ties_even() as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sdxl_config_parses_from_diffusers_json() {
        let json = r#"{"_class_name":"AutoencoderKL","act_fn":"silu","block_out_channels":[128,256,512,512],
            "down_block_types":["DownEncoderBlock2D"],"force_upcast":true,"in_channels":3,"latent_channels":4,
            "layers_per_block":2,"norm_num_groups":32,"out_channels":3,"sample_size":1024,
            "scaling_factor":0.13025,"up_block_types":["UpDecoderBlock2D"]}"#;
        let cfg = VaeConfig::from_json(json).expect("valid config");
        assert_eq!(cfg, VaeConfig::sdxl());
        assert_eq!(cfg.upscale_factor(), 8);
        assert_eq!(cfg.decode_dtype(DType::F16), DType::F32);
        assert_eq!(cfg.decode_dtype(DType::BF16), DType::BF16);
    }

    #[test]
    fn blend_matches_diffusers_loop() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 24.0, &dev)?.reshape((1, 1, 4, 6))?;
        let b = (Tensor::ones((1, 1, 3, 6), DType::F32, &dev)? * 100.0)?;
        let got = blend_edge(&a, &b, 2, 2)?.flatten_to(2)?.to_vec2::<f32>()?;
        let a = a.flatten_to(2)?.to_vec2::<f32>()?;
        for (y, row) in got.iter().enumerate() {
            for (x, v) in row.iter().enumerate() {
                let expect =
                    if y < 2 { a[2 + y][x] * (1.0 - y as f32 / 2.0) + 100.0 * (y as f32 / 2.0) } else { 100.0 };
                assert!((v - expect).abs() < 1e-6, "({y},{x}) {v} vs {expect}");
            }
        }
        Ok(())
    }

    #[test]
    fn bytes_round_like_numpy() {
        assert_eq!([0.5f32, 1.5, 2.5, 254.5, 254.6, 300.0].map(to_u8), [0, 2, 2, 254, 255, 255]);
    }

    #[test]
    fn to_rgb_images_is_hwc() -> Result<()> {
        let t = Tensor::from_vec(vec![0f32, 1.0, 0.2, 0.4, 1.0, 0.0], (1, 3, 1, 2), &Device::Cpu)?;
        let img = to_rgb_images(&t)?.remove(0);
        assert_eq!(img.as_raw(), &vec![0, 51, 255, 255, 102, 0]);
        Ok(())
    }
}
