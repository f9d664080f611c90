//! Sinusoidal timestep embeddings (diffusers `get_timestep_embedding`), `TimestepEmbedding`, and
//! the SDXL time conditioning built from them, shared by the UNet and the ControlNet.
//!
//! The sinusoid is computed in f32 like diffusers (the UNet input `timesteps` may be int64 or
//! float; per-sample values are supported), then cast to the model dtype.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

/// `[N]` values → `[N, dim]` sinusoids, `[cos | sin]` when `flip_sin_to_cos` (SDXL).
pub fn timestep_sinusoid(
    values: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f64,
    dev: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let denom = (half as f64 - shift) as f32;
    let log_max = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| ((log_max * i as f32) / denom).exp()).collect();
    let mut out = Vec::with_capacity(values.len() * dim);
    for &t in values {
        let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
        let (sin, cos): (Vec<f32>, Vec<f32>) = args.iter().map(|a| (a.sin(), a.cos())).unzip();
        if flip_sin_to_cos {
            out.extend_from_slice(&cos);
            out.extend_from_slice(&sin);
        } else {
            out.extend_from_slice(&sin);
            out.extend_from_slice(&cos);
        }
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_vec(out, (values.len(), dim), dev)
}

/// Reads a 1-D tensor of timesteps (any dtype) as f32 values on the host.
pub fn host_values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec1::<f32>()
}

/// `linear_1` → SiLU → `linear_2`.
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(vb: VarBuilder, cin: usize, dim: usize) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: linear(cin, dim, vb.pp("linear_1"))?,
            linear_2: linear(dim, dim, vb.pp("linear_2"))?,
        })
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&candle_nn::ops::silu(&self.linear_1.forward(x)?)?)
    }
}

/// The SDXL time conditioning `[B, temb]`: `time_embedding(sinusoid(t))` plus, for `text_time`
/// models, `add_embedding(cat[text_embeds, sinusoid(time_ids)])` (pooled text first, §6). The UNet
/// and the ControlNet each own one under the same key names (`time_embedding.*`,
/// `add_embedding.*`) with their own weights, so the rule lives here once.
pub struct TimeConditioning {
    time_embedding: TimestepEmbedding,
    /// The `add_embedding` MLP and `addition_time_embed_dim`.
    add_embedding: Option<(TimestepEmbedding, usize)>,
    channels: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    /// Names the model in error messages.
    model: &'static str,
}

impl TimeConditioning {
    /// `channels` = `block_out_channels[0]` (sinusoid width), `temb` = 4 × channels,
    /// `text_time` = (`addition_time_embed_dim`, `projection_class_embeddings_input_dim`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        model: &'static str,
        channels: usize,
        temb: usize,
        text_time: Option<(usize, usize)>,
        flip_sin_to_cos: bool,
        freq_shift: f64,
    ) -> Result<Self> {
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), channels, temb)?;
        let add_embedding = match text_time {
            Some((dim, input_dim)) => Some((TimestepEmbedding::new(vb.pp("add_embedding"), input_dim, temb)?, dim)),
            None => None,
        };
        Ok(TimeConditioning { time_embedding, add_embedding, channels, flip_sin_to_cos, freq_shift, model })
    }

    /// `timesteps` holds one value per sample of `sample` `[B, ...]`, or one value for all; the result
    /// is in `sample`'s dtype.
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        text_embeds: Option<&Tensor>,
        time_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        let b = sample.dim(0)?;
        let dev = sample.device();
        let dtype = sample.dtype();
        let mut t = host_values(timesteps)?;
        if t.len() == 1 && b > 1 {
            t = vec![t[0]; b];
        }
        if t.len() != b {
            return Err(candle_core::Error::Msg(format!("{}: {} timesteps for a batch of {b}", self.model, t.len())));
        }
        let t_proj = timestep_sinusoid(&t, self.channels, self.flip_sin_to_cos, self.freq_shift, dev)?;
        let mut emb = self.time_embedding.forward(&t_proj.to_dtype(dtype)?)?;
        if let Some((add, dim)) = &self.add_embedding {
            let (Some(text), Some(ids)) = (text_embeds, time_ids) else {
                return Err(candle_core::Error::Msg(format!(
                    "{}: this model needs text_embeds and time_ids (SDXL text_time conditioning)",
                    self.model
                )));
            };
            let ids = host_values(ids)?;
            let proj = timestep_sinusoid(&ids, *dim, self.flip_sin_to_cos, self.freq_shift, dev)?;
            let proj = proj.reshape((b, ids.len() / b.max(1) * dim))?.to_dtype(dtype)?;
            let aug = add.forward(&Tensor::cat(&[&text.to_dtype(dtype)?, &proj], 1)?)?;
            emb = (emb + aug)?;
        }
        Ok(emb)
    }
}
