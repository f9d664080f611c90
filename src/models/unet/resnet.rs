//! `ResnetBlock2D` (diffusers) with the SDXL settings: GroupNorm → SiLU → conv, timestep
//! projection added after the first conv, 1x1 `conv_shortcut` when the width changes.

use crate::kernels::conv::{conv2d, Conv2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::{linear, Conv2dConfig, Linear, VarBuilder};

use crate::kernels::group_norm::FusedGroupNorm;

pub struct ResnetBlock2D {
    norm1: FusedGroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: FusedGroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

pub fn conv3x3(vb: VarBuilder, cin: usize, cout: usize) -> Result<Conv2d> {
    conv2d(cin, cout, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb)
}

impl ResnetBlock2D {
    /// `temb_channels` = None for the VAE (no timestep input).
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        let conv_shortcut =
            if cin != cout { Some(conv2d(cin, cout, 1, Default::default(), vb.pp("conv_shortcut"))?) } else { None };
        Ok(ResnetBlock2D {
            norm1: FusedGroupNorm::new(groups, cin, eps, vb.pp("norm1"))?,
            conv1: conv3x3(vb.pp("conv1"), cin, cout)?,
            time_emb_proj: temb_channels.map(|t| linear(t, cout, vb.pp("time_emb_proj"))).transpose()?,
            norm2: FusedGroupNorm::new(groups, cout, eps, vb.pp("norm2"))?,
            conv2: conv3x3(vb.pp("conv2"), cout, cout)?,
            conv_shortcut,
        })
    }

    /// `temb` is the already-activated-free time embedding `[B, T]` (SiLU is applied here).
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        if crate::kernels::fuse_on(x) {
            return self.forward_fused(x, temb);
        }
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = match (&self.time_emb_proj, temb) {
            (Some(p), Some(t)) => {
                let t = p.forward(&candle_nn::ops::silu(t)?)?;
                h.broadcast_add(&t.unsqueeze(2)?.unsqueeze(3)?)?
            }
            _ => h,
        };
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        skip + h
    }

    /// The GPU path (issue 9): conv1's bias and the timestep projection are summed on the small `[B, C]` tensor
    /// and added in one pass; conv2's bias and the skip connection are added in one fused pass. Same maths as
    /// [`Self::forward`]'s candle ops, which the CPU runs.
    fn forward_fused(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        use crate::kernels::profile::scope;
        let h = self.conv1.forward_no_bias(&self.norm1.forward_silu(x)?)?;
        let add = match (&self.time_emb_proj, temb) {
            (Some(p), Some(t)) => {
                let _p = scope("resnet.temb", x.device());
                let t = p.forward(&candle_nn::ops::silu(t)?)?;
                Some(match self.conv1.bias() {
                    Some(b) => t.broadcast_add(&b.unsqueeze(0)?)?,
                    None => t,
                })
            }
            _ => self.conv1.bias().cloned(),
        };
        let h = match add {
            Some(a) => {
                let _p = scope("resnet.bias+temb", x.device());
                crate::kernels::elementwise::channel_bias(&h, &a)?
            }
            None => h,
        };
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let h = self.conv2.forward_no_bias(&self.norm2.forward_silu(&h)?)?;
        let _p = scope("resnet.bias+skip", x.device());
        match self.conv2.bias() {
            Some(b) => crate::kernels::elementwise::conv_bias_residual(&h, b, &skip),
            None => skip + h,
        }
    }
}
