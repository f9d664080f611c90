//! Sinusoidal timestep embeddings (diffusers `get_timestep_embedding`) and `TimestepEmbedding`.
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
