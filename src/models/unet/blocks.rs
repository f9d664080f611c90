//! The UNet's down, mid and up blocks (diffusers `DownBlock2D`, `CrossAttnDownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`, `UpBlock2D`).

use crate::kernels::conv::{conv2d, Conv2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::resnet::{conv3x3, ResnetBlock2D};
use super::transformer::Transformer2DModel;

/// Shared sizes for building blocks.
#[derive(Debug, Clone, Copy)]
pub struct BlockDims {
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
    pub context_dim: usize,
}

/// Attention settings of a block: heads and transformer depth, `None` for plain blocks.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    pub heads: usize,
    pub depth: usize,
}

pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    downsampler: Option<Conv2d>,
}

impl DownBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        layers: usize,
        attn: Option<AttnDims>,
        downsample: bool,
        d: BlockDims,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for j in 0..layers {
            let c = if j == 0 { cin } else { cout };
            resnets.push(ResnetBlock2D::new(vb.pp("resnets").pp(j), c, cout, Some(d.temb), d.groups, d.eps)?);
            if let Some(a) = attn {
                attentions.push(Transformer2DModel::new(
                    vb.pp("attentions").pp(j),
                    cout,
                    a.heads,
                    a.depth,
                    d.context_dim,
                    d.groups,
                )?);
            }
        }
        let downsampler = if downsample {
            let cfg = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
            Some(conv2d(cout, cout, 3, cfg, vb.pp("downsamplers").pp(0).pp("conv"))?)
        } else {
            None
        };
        Ok(DownBlock { resnets, attentions, downsampler })
    }

    /// Returns the block output and pushes every skip connection onto `skips`.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut h = x.clone();
        for (j, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h, Some(temb))?;
            if let Some(a) = self.attentions.get(j) {
                h = a.forward(&h, context)?;
            }
            skips.push(h.clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h)?;
            skips.push(h.clone());
        }
        Ok(h)
    }
}

pub struct MidBlock {
    resnet0: ResnetBlock2D,
    pub attention: Transformer2DModel,
    resnet1: ResnetBlock2D,
}

impl MidBlock {
    pub fn new(vb: VarBuilder, channels: usize, attn: AttnDims, d: BlockDims) -> Result<Self> {
        Ok(MidBlock {
            resnet0: ResnetBlock2D::new(vb.pp("resnets").pp(0), channels, channels, Some(d.temb), d.groups, d.eps)?,
            attention: Transformer2DModel::new(
                vb.pp("attentions").pp(0),
                channels,
                attn.heads,
                attn.depth,
                d.context_dim,
                d.groups,
            )?,
            resnet1: ResnetBlock2D::new(vb.pp("resnets").pp(1), channels, channels, Some(d.temb), d.groups, d.eps)?,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let h = self.resnet0.forward(x, Some(temb))?;
        let h = self.attention.forward(&h, context)?;
        self.resnet1.forward(&h, Some(temb))
    }
}

pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    upsampler: Option<Conv2d>,
}

impl UpBlock {
    /// `skip_channels[j]` is the width of the skip connection consumed by resnet `j`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        prev_out: usize,
        cout: usize,
        skip_channels: &[usize],
        attn: Option<AttnDims>,
        upsample: bool,
        d: BlockDims,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(skip_channels.len());
        let mut attentions = Vec::new();
        for (j, &skip) in skip_channels.iter().enumerate() {
            let cin = if j == 0 { prev_out } else { cout };
            resnets.push(ResnetBlock2D::new(vb.pp("resnets").pp(j), cin + skip, cout, Some(d.temb), d.groups, d.eps)?);
            if let Some(a) = attn {
                attentions.push(Transformer2DModel::new(
                    vb.pp("attentions").pp(j),
                    cout,
                    a.heads,
                    a.depth,
                    d.context_dim,
                    d.groups,
                )?);
            }
        }
        let upsampler = if upsample { Some(conv3x3(vb.pp("upsamplers").pp(0).pp("conv"), cout, cout)?) } else { None };
        Ok(UpBlock { resnets, attentions, upsampler })
    }

    /// Consumes skips from the end of `skips`; `upsample_size` is the exact target size when
    /// the latent is not divisible by the total down factor (diffusers' `forward_upsample_size`).
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for (j, r) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| candle_core::Error::Msg("UNet: skip connections exhausted".into()))?;
            h = {
                let _p = crate::kernels::profile::scope("unet.skip_cat", h.device());
                Tensor::cat(&[&h, &skip], 1)?
            };
            h = r.forward(&h, Some(temb))?;
            if let Some(a) = self.attentions.get(j) {
                h = a.forward(&h, context)?;
            }
        }
        if let Some(conv) = &self.upsampler {
            let (_, _, hh, ww) = h.dims4()?;
            let (th, tw) = upsample_size.unwrap_or((hh * 2, ww * 2));
            let up = {
                let _p = crate::kernels::profile::scope("unet.upsample", h.device());
                h.upsample_nearest2d(th, tw)?
            };
            h = conv.forward(&up)?;
        }
        Ok(h)
    }
}
