//! `Transformer2DModel` with linear projections and `BasicTransformerBlock`s (self-attention,
//! cross-attention, GEGLU feed-forward), as SDXL uses them (reference spec §3, §6).

use candle_core::{Module, Result, Tensor};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};

use crate::kernels::group_norm::FusedGroupNorm;

use crate::models::attention::{Attention, FeedForward};

pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    pub attn1: Attention,
    norm2: LayerNorm,
    pub attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn new(vb: VarBuilder, dim: usize, heads: usize, head_dim: usize, context_dim: usize) -> Result<Self> {
        Ok(BasicTransformerBlock {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, None, heads, head_dim)?,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, Some(context_dim), heads, head_dim)?,
            norm3: layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(vb.pp("ff"), dim, 4)?,
        })
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        if crate::kernels::fuse_on(x) {
            return self.forward_fused(x, context);
        }
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self.attn2.forward(&self.norm2.forward(&x)?, Some(context))? + &x)?;
        self.ff.forward(&self.norm3.forward(&x)?)? + x
    }

    /// The GPU path (issue 9): each residual add is fused with the bias of the layer before it, and GEGLU with
    /// its projection's bias (`kernels::elementwise`); the same maths as [`Self::forward`].
    fn forward_fused(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let norm = |n: &LayerNorm, x: &Tensor| {
            let _p = crate::kernels::profile::scope("layer_norm", x.device());
            n.forward(x)
        };
        let x = self.attn1.forward_residual(&norm(&self.norm1, x)?, None, x)?;
        let x = self.attn2.forward_residual(&norm(&self.norm2, &x)?, Some(context), &x)?;
        self.ff.forward_residual(&norm(&self.norm3, &x)?, &x)
    }
}

pub struct Transformer2DModel {
    norm: FusedGroupNorm,
    proj_in: Linear,
    pub blocks: Vec<BasicTransformerBlock>,
    proj_out: Linear,
}

impl Transformer2DModel {
    /// `channels` = heads × head_dim; `depth` transformer blocks; GroupNorm eps is 1e-6 here
    /// (diffusers' Transformer2DModel default), unlike the resnets.
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        heads: usize,
        depth: usize,
        context_dim: usize,
        groups: usize,
    ) -> Result<Self> {
        let head_dim = channels / heads;
        let blocks = (0..depth)
            .map(|i| {
                BasicTransformerBlock::new(vb.pp("transformer_blocks").pp(i), channels, heads, head_dim, context_dim)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer2DModel {
            norm: FusedGroupNorm::new(groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: linear(channels, channels, vb.pp("proj_in"))?,
            blocks,
            proj_out: linear(channels, channels, vb.pp("proj_out"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let residual = x;
        let hs = self.norm.forward(x)?;
        let p = crate::kernels::profile::scope("transformer.proj_in", x.device());
        let hs = hs.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?;
        let mut hs = self.proj_in.forward(&hs)?;
        drop(p);
        for block in &self.blocks {
            hs = block.forward(&hs, context)?;
        }
        let _p = crate::kernels::profile::scope("transformer.proj_out", x.device());
        let hs = self.proj_out.forward(&hs)?;
        let hs = hs.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?;
        hs + residual
    }
}
