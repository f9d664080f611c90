//! The SDXL UNet (diffusers `UNet2DConditionModel`), faithful to the reference (spec §6):
//! `text_time` micro-conditioning, per-sample timesteps, exact upsampling for odd latent sizes,
//! attention hooks for the StoryMaker adapter, and ControlNet residual inputs.

pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod resnet;
pub mod transformer;

use crate::kernels::conv::Conv2d;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::kernels::group_norm::FusedGroupNorm;

use self::blocks::{AttnDims, BlockDims, DownBlock, MidBlock, UpBlock};
pub use self::config::UNetConfig;
use self::embeddings::TimeConditioning;
use self::resnet::conv3x3;
use self::transformer::BasicTransformerBlock;

/// Everything one UNet evaluation takes.
pub struct UNetInput<'a> {
    /// Noisy latents `[B, 4, H, W]` (already scaled by the scheduler).
    pub sample: &'a Tensor,
    /// One timestep per sample `[B]` (or one value `[1]`/`[]` broadcast to the batch).
    pub timesteps: &'a Tensor,
    /// Text (and adapter) tokens `[B, S, cross_attention_dim]`.
    pub encoder_hidden_states: &'a Tensor,
    /// Pooled CLIP-G text embedding `[B, 1280]` (text_time conditioning).
    pub text_embeds: Option<&'a Tensor>,
    /// `[B, 6]`: original size, crop top-left, target size.
    pub time_ids: Option<&'a Tensor>,
    /// ControlNet residuals: one per down skip connection, then one for the mid block.
    pub down_residuals: Option<&'a [Tensor]>,
    pub mid_residual: Option<&'a Tensor>,
}

pub struct UNet2DConditionModel {
    config: UNetConfig,
    conv_in: Conv2d,
    time: TimeConditioning,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: FusedGroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    pub fn new(vb: VarBuilder, config: &UNetConfig) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let temb = ch[0] * 4;
        let d = BlockDims {
            temb,
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            context_dim: config.cross_attention_dim,
        };
        let attn_for = |i: usize, cross: bool| {
            cross.then(|| AttnDims { heads: config.heads(i), depth: config.transformer_layers_per_block.get(i) })
        };
        let time = TimeConditioning::new(
            vb.clone(),
            "UNet",
            ch[0],
            temb,
            config.text_time(),
            config.flip_sin_to_cos,
            config.freq_shift,
        )?;
        let mut down_blocks = Vec::with_capacity(n);
        let mut out = ch[0];
        for (i, &width) in ch.iter().enumerate() {
            let cin = out;
            out = width;
            let cross = config.down_block_types[i] == "CrossAttnDownBlock2D";
            down_blocks.push(DownBlock::new(
                vb.pp("down_blocks").pp(i),
                cin,
                out,
                config.layers_per_block,
                attn_for(i, cross),
                i + 1 < n,
                d,
            )?);
        }
        let mid_attn = AttnDims { heads: config.heads(n - 1), depth: config.transformer_layers_per_block.get(n - 1) };
        let mid_block = MidBlock::new(vb.pp("mid_block"), ch[n - 1], mid_attn, d)?;
        let mut up_blocks = Vec::with_capacity(n);
        let mut out = ch[n - 1];
        for i in 0..n {
            let rev = n - 1 - i;
            let prev = out;
            out = ch[rev];
            let input = ch[rev.saturating_sub(1)];
            let layers = config.layers_per_block + 1;
            let skips: Vec<usize> = (0..layers).map(|j| if j == layers - 1 { input } else { out }).collect();
            let cross = config.up_block_types[i] == "CrossAttnUpBlock2D";
            up_blocks.push(UpBlock::new(
                vb.pp("up_blocks").pp(i),
                prev,
                out,
                &skips,
                attn_for(rev, cross),
                i + 1 < n,
                d,
            )?);
        }
        Ok(UNet2DConditionModel {
            config: config.clone(),
            conv_in: conv3x3(vb.pp("conv_in"), config.in_channels, ch[0])?,
            time,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: FusedGroupNorm::new(config.norm_num_groups, ch[0], config.norm_eps, vb.pp("conv_norm_out"))?,
            conv_out: conv3x3(vb.pp("conv_out"), ch[0], config.out_channels)?,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Every transformer block, in a fixed order (down, mid, up), for attaching adapter hooks.
    pub fn transformer_blocks_mut(&mut self) -> Vec<(String, &mut BasicTransformerBlock)> {
        let mut out = Vec::new();
        for (i, b) in self.down_blocks.iter_mut().enumerate() {
            for (j, a) in b.attentions.iter_mut().enumerate() {
                for (k, t) in a.blocks.iter_mut().enumerate() {
                    out.push((format!("down_blocks.{i}.attentions.{j}.transformer_blocks.{k}"), t));
                }
            }
        }
        for (k, t) in self.mid_block.attention.blocks.iter_mut().enumerate() {
            out.push((format!("mid_block.attentions.0.transformer_blocks.{k}"), t));
        }
        for (i, b) in self.up_blocks.iter_mut().enumerate() {
            for (j, a) in b.attentions.iter_mut().enumerate() {
                for (k, t) in a.blocks.iter_mut().enumerate() {
                    out.push((format!("up_blocks.{i}.attentions.{j}.transformer_blocks.{k}"), t));
                }
            }
        }
        out
    }

    /// Time embedding `[B, temb]` in the model dtype: sinusoid(t) → MLP, plus the text_time
    /// embedding `add_embedding(cat[text_embeds, sinusoid(time_ids)])` (pooled text first, §6).
    pub fn time_embedding(&self, input: &UNetInput) -> Result<Tensor> {
        let _p = crate::kernels::profile::scope("unet.time_embedding", input.sample.device());
        self.time.forward(input.sample, input.timesteps, input.text_embeds, input.time_ids)
    }

    /// Predicts the noise for `input.sample`.
    pub fn forward(&self, input: &UNetInput) -> Result<Tensor> {
        let emb = self.time_embedding(input)?;
        let ctx = input.encoder_hidden_states;
        let (_, _, h, w) = input.sample.dims4()?;
        let factor = 1usize << (self.up_blocks.len() - 1);
        let exact_upsample = h % factor != 0 || w % factor != 0;

        let mut hs = self.conv_in.forward(input.sample)?;
        let mut skips = vec![hs.clone()];
        for block in &self.down_blocks {
            hs = block.forward(&hs, &emb, ctx, &mut skips)?;
        }
        if let Some(res) = input.down_residuals {
            if res.len() != skips.len() {
                return Err(candle_core::Error::Msg(format!(
                    "ControlNet gave {} down residuals; the UNet has {} skip connections",
                    res.len(),
                    skips.len()
                )));
            }
            for (s, r) in skips.iter_mut().zip(res) {
                *s = (&*s + r)?;
            }
        }
        hs = self.mid_block.forward(&hs, &emb, ctx)?;
        if let Some(r) = input.mid_residual {
            hs = (hs + r)?;
        }
        for block in &self.up_blocks {
            let n_res = block.resnets.len();
            let size = if exact_upsample && skips.len() > n_res {
                let (_, _, sh, sw) = skips[skips.len() - n_res - 1].dims4()?;
                Some((sh, sw))
            } else {
                None
            };
            hs = block.forward(&hs, &emb, ctx, &mut skips, size)?;
        }
        let hs = self.conv_norm_out.forward_silu(&hs)?;
        self.conv_out.forward(&hs)
    }
}
