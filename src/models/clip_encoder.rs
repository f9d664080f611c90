//! The transformer layer shared by CLIP's text and image encoders (transformers' `CLIPEncoderLayer`):
//! pre-LayerNorm self-attention with biased q/k/v/out projections, then a two-layer MLP.
//! The text encoder passes a causal mask; the image encoder attends everywhere.

use candle_core::{Module, Result, Tensor};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use super::attention::{merge_heads, sdpa, split_heads};

/// The MLP activation of a CLIP model (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP ViT-L, SDXL encoder 1).
    QuickGelu,
    /// Exact (erf) GELU (OpenCLIP bigG, SDXL encoder 2; ViT-H image encoder).
    Gelu,
}

impl ClipActivation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            ClipActivation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            ClipActivation::Gelu => x.gelu_erf(),
        }
    }
}

/// Sizes of one encoder layer.
#[derive(Debug, Clone, Copy)]
pub struct ClipLayerDims {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub eps: f64,
    pub act: ClipActivation,
}

struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl SelfAttention {
    fn new(vb: VarBuilder, h: usize, heads: usize) -> Result<Self> {
        Ok(SelfAttention {
            q_proj: linear(h, h, vb.pp("q_proj"))?,
            k_proj: linear(h, h, vb.pp("k_proj"))?,
            v_proj: linear(h, h, vb.pp("v_proj"))?,
            out_proj: linear(h, h, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// `x` `[B, T, C]`; `mask` `[T, T]` additive (0 / -inf) in the model dtype, or none.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let q = split_heads(&self.q_proj.forward(x)?, self.heads)?;
        let k = split_heads(&self.k_proj.forward(x)?, self.heads)?;
        let v = split_heads(&self.v_proj.forward(x)?, self.heads)?;
        let z = match mask {
            None => sdpa(&q, &k, &v)?,
            Some(mask) => {
                let scale = 1.0 / (q.dim(3)? as f64).sqrt();
                let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? * scale)?.broadcast_add(mask)?;
                candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?
            }
        };
        self.out_proj.forward(&merge_heads(&z)?)
    }
}

/// `self_attn`, `layer_norm1`, `mlp.fc1`, `mlp.fc2`, `layer_norm2` (checkpoint key names).
pub struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: ClipActivation,
}

impl ClipEncoderLayer {
    pub fn new(vb: VarBuilder, d: ClipLayerDims) -> Result<Self> {
        Ok(ClipEncoderLayer {
            layer_norm1: layer_norm(d.hidden, d.eps, vb.pp("layer_norm1"))?,
            self_attn: SelfAttention::new(vb.pp("self_attn"), d.hidden, d.heads)?,
            layer_norm2: layer_norm(d.hidden, d.eps, vb.pp("layer_norm2"))?,
            fc1: linear(d.hidden, d.intermediate, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(d.intermediate, d.hidden, vb.pp("mlp").pp("fc2"))?,
            act: d.act,
        })
    }

    /// Pre-LN block: `x + attn(ln1(x))`, then `h + fc2(act(fc1(ln2(h))))`.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let h = (x + self.self_attn.forward(&self.layer_norm1.forward(x)?, mask)?)?;
        let m = self.fc2.forward(&self.act.apply(&self.fc1.forward(&self.layer_norm2.forward(&h)?)?)?)?;
        h + m
    }
}
