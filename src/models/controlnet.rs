//! SDXL ControlNet (diffusers `ControlNetModel`), for pose control (issue 6).
//!
//! A ControlNet is a trainable copy of the UNet's encoder: the same `conv_in`, time and `text_time`
//! embeddings, down blocks and mid block (built here from the UNet's own block types, so the two
//! cannot drift apart), plus
//! * `controlnet_cond_embedding`: a small conv stack that brings the conditioning image (the
//!   rendered OpenPose skeleton, `[B, 3, 8h, 8w]` in [0, 1]) down to the latent size, added to
//!   `conv_in(sample)`;
//! * `controlnet_down_blocks.{i}`: one 1x1 ("zero") conv per UNet skip connection;
//! * `controlnet_mid_block`: one 1x1 conv on the mid-block output.
//!
//! Their outputs, times the conditioning scale, are the residuals the UNet adds to its skip
//! connections and mid block ([`crate::models::unet::UNetInput::down_residuals`] /
//! [`crate::models::unet::UNetInput::mid_residual`]).
//!
//! **Text context.** The ControlNet's cross-attention gets the *text* tokens only
//! (`prompt_embeds`, `[B, 77, 2048]`), as in diffusers' `StableDiffusionXLControlNetPipeline` and
//! the InstantID-style pipelines that combine a ControlNet with an image adapter: the released
//! pose ControlNets were trained on text, and the StoryMaker adapter's image tokens only mean
//! something to the UNet's adapter processors. With the adapter on, pass the first 77 tokens of the
//! UNet context. (StoryMaker's training script fed its own optional ControlNet the image tokens
//! instead — reference §1.5 — but no such weights were released.)
//!
//! **When it runs.** [`ControlGuidance`] is diffusers' `controlnet_conditioning_scale` with
//! `control_guidance_start/end`: at steps outside the window the scale is 0, the residuals are
//! exactly zero, and the caller should skip the ControlNet (and pass no residuals), which gives the
//! same UNet output without the cost. A panel without a pose never loads or runs it.
//!
//! Weights: a diffusers folder (`config.json` + `diffusion_pytorch_model[.fp16].safetensors`, e.g.
//! xinsir/controlnet-openpose-sdxl-1.0, Apache-2.0) or one `.safetensors` file with the diffusers
//! key names; see [`ControlNetFiles`] and [`load_controlnet`].

use std::path::{Path, PathBuf};

use crate::kernels::conv::{conv2d, Conv2d};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::models::unet::blocks::{AttnDims, BlockDims, DownBlock, MidBlock};
use crate::models::unet::config::PerBlock;
use crate::models::unet::embeddings::TimeConditioning;
use crate::models::unet::resnet::conv3x3;
use crate::weights::diffusers::component_weight_files;
use crate::weights::store::TensorStore;
use crate::weights::WeightsError;

/// `<models>/controlnet-openpose/`: the SDXL OpenPose ControlNet.
pub const CONTROLNET_SUBDIR: &str = "controlnet-openpose";
/// The ControlNet we document and test against.
pub const CONTROLNET_REPO: &str = "xinsir/controlnet-openpose-sdxl-1.0";

/// A tensor only a diffusers-layout ControlNet has (its conditioning image encoder).
const COND_EMBEDDING_KEY: &str = "controlnet_cond_embedding.conv_in.weight";

#[derive(Debug, Error)]
pub enum ControlNetError {
    #[error(
        "the pose ControlNet is not installed: put config.json and diffusion_pytorch_model.safetensors of \
         {CONTROLNET_REPO} (huggingface.co/{CONTROLNET_REPO}) in {dir}"
    )]
    NotInstalled { dir: String },
    #[error("{path}: not a usable ControlNet config: {detail}")]
    BadConfig { path: String, detail: String },
    #[error("{path}: not a usable SDXL ControlNet: {detail}")]
    BadWeights { path: String, detail: String },
    #[error("control guidance: {0}")]
    Guidance(String),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// diffusers `ControlNetModel` config (`config.json`). Missing fields take diffusers' defaults
/// (which are SD 1.5's, so a real SDXL config names them all); only the SDXL family is accepted by
/// [`ControlNetConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlNetConfig {
    pub in_channels: usize,
    pub conditioning_channels: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub only_cross_attention: serde_json::Value,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    pub transformer_layers_per_block: PerBlock,
    pub encoder_hid_dim: Option<usize>,
    pub encoder_hid_dim_type: Option<String>,
    /// Diffusers' legacy name: the number of heads per block (as in the UNet config).
    pub attention_head_dim: PerBlock,
    /// When set, the number of heads; overrides `attention_head_dim`.
    pub num_attention_heads: Option<PerBlock>,
    pub use_linear_projection: bool,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub addition_time_embed_dim: Option<usize>,
    pub num_class_embeds: Option<usize>,
    /// Only changes fp16 softmax precision in diffusers; accepted and not needed here.
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// `rgb` or `bgr` (the model flips a BGR-trained net's input itself).
    pub controlnet_conditioning_channel_order: String,
    pub conditioning_embedding_out_channels: Vec<usize>,
    pub global_pool_conditions: bool,
}

impl Default for ControlNetConfig {
    /// diffusers 0.42 `ControlNetModel.__init__` defaults.
    fn default() -> Self {
        ControlNetConfig {
            in_channels: 4,
            conditioning_channels: 3,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
                .map(String::from)
                .to_vec(),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            only_cross_attention: serde_json::Value::Bool(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: 1280,
            transformer_layers_per_block: PerBlock::One(1),
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            num_class_embeds: None,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            projection_class_embeddings_input_dim: None,
            controlnet_conditioning_channel_order: "rgb".into(),
            conditioning_embedding_out_channels: vec![16, 32, 96, 256],
            global_pool_conditions: false,
        }
    }
}

impl ControlNetConfig {
    /// The SDXL ControlNet config (`config.json` of xinsir/controlnet-openpose-sdxl-1.0 and
    /// diffusers/controlnet-*-sdxl-1.0): SDXL base's encoder with the standard conditioning embedding.
    pub fn sdxl() -> ControlNetConfig {
        ControlNetConfig {
            down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
                .map(String::from)
                .to_vec(),
            block_out_channels: vec![320, 640, 1280],
            cross_attention_dim: 2048,
            transformer_layers_per_block: PerBlock::Each(vec![1, 2, 10]),
            attention_head_dim: PerBlock::Each(vec![5, 10, 20]),
            use_linear_projection: true,
            addition_embed_type: Some("text_time".into()),
            addition_time_embed_dim: Some(256),
            projection_class_embeddings_input_dim: Some(2816),
            ..ControlNetConfig::default()
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<ControlNetConfig, String> {
        let c: ControlNetConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    /// Heads of down block `i` (diffusers' `num_attention_heads or attention_head_dim`).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim).get(i)
    }

    /// The `text_time` sizes (`addition_time_embed_dim`, `projection_class_embeddings_input_dim`).
    pub fn text_time(&self) -> Option<(usize, usize)> {
        match (
            self.addition_embed_type.as_deref(),
            self.addition_time_embed_dim,
            self.projection_class_embeddings_input_dim,
        ) {
            (Some("text_time"), Some(t), Some(p)) => Some((t, p)),
            _ => None,
        }
    }

    /// Number of down residuals = the UNet's skip connections: `conv_in`, one per resnet, one per
    /// downsampler.
    pub fn down_residual_count(&self) -> usize {
        let n = self.block_out_channels.len();
        1 + n * self.layers_per_block + n.saturating_sub(1)
    }

    /// Factor by which the conditioning embedding shrinks the conditioning image (8 for SDXL's
    /// four stages): the image must be this many times the latent size.
    pub fn cond_downscale(&self) -> usize {
        1 << self.conditioning_embedding_out_channels.len().saturating_sub(1)
    }

    /// Rejects what this port does not implement, naming the field, instead of computing
    /// something else silently.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n {
            return Err("block_out_channels and down_block_types must have the same, non-zero length".into());
        }
        for t in &self.down_block_types {
            if t != "DownBlock2D" && t != "CrossAttnDownBlock2D" {
                return Err(format!("unsupported down block type {t}"));
            }
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2DCrossAttn") => {}
            Some(t) => return Err(format!("unsupported mid_block_type {t} (SDXL uses UNetMidBlock2DCrossAttn)")),
        }
        let only_cross_false = match &self.only_cross_attention {
            serde_json::Value::Bool(b) => !b,
            serde_json::Value::Array(v) => v.iter().all(|x| x == &serde_json::Value::Bool(false)),
            serde_json::Value::Null => true,
            _ => false,
        };
        if !only_cross_false {
            return Err("only_cross_attention must be false".into());
        }
        if !self.use_linear_projection {
            return Err("only use_linear_projection = true (SDXL) is supported; SD 1.5 ControlNets are not".into());
        }
        if self.class_embed_type.is_some() || self.num_class_embeds.is_some() {
            return Err("class embeddings are not supported".into());
        }
        if self.encoder_hid_dim.is_some() || self.encoder_hid_dim_type.is_some() {
            return Err("encoder_hid_dim projections are not supported".into());
        }
        match self.addition_embed_type.as_deref() {
            None => {}
            Some("text_time") if self.text_time().is_some() => {}
            Some("text_time") => {
                return Err("text_time needs addition_time_embed_dim and projection_class_embeddings_input_dim".into())
            }
            Some(t) => return Err(format!("unsupported addition_embed_type {t}")),
        }
        if self.resnet_time_scale_shift != "default" {
            return Err(format!("unsupported resnet_time_scale_shift {}", self.resnet_time_scale_shift));
        }
        if self.act_fn != "silu" {
            return Err(format!("unsupported act_fn {}", self.act_fn));
        }
        if self.downsample_padding != 1 {
            return Err("downsample_padding must be 1".into());
        }
        if self.mid_block_scale_factor != 1.0 {
            return Err("mid_block_scale_factor must be 1".into());
        }
        if !matches!(self.controlnet_conditioning_channel_order.as_str(), "rgb" | "bgr") {
            return Err(format!(
                "unknown controlnet_conditioning_channel_order {}",
                self.controlnet_conditioning_channel_order
            ));
        }
        if self.global_pool_conditions {
            return Err("global_pool_conditions (shuffle-style ControlNets) is not supported".into());
        }
        if self.conditioning_embedding_out_channels.is_empty() {
            return Err("conditioning_embedding_out_channels is empty".into());
        }
        if self.block_out_channels.iter().any(|c| c % self.norm_num_groups != 0) {
            return Err("every block width must be divisible by norm_num_groups".into());
        }
        for (i, t) in self.down_block_types.iter().enumerate() {
            let heads = self.heads(i);
            let cross = t == "CrossAttnDownBlock2D" || i + 1 == n;
            if cross && (heads == 0 || !self.block_out_channels[i].is_multiple_of(heads)) {
                return Err(format!(
                    "block {i}: width {} is not divisible by {heads} heads",
                    self.block_out_channels[i]
                ));
            }
        }
        Ok(())
    }

    /// The SDXL config ([`ControlNetConfig::sdxl`]) checked against, and adapted to, the stored
    /// shapes of a single `.safetensors` file that came without `config.json`.
    ///
    /// Head counts and group counts cannot be read from shapes, so the widths, layer counts and
    /// attention layout must be SDXL's. What legitimately varies between released SDXL
    /// ControlNets is taken from the file: the transformer depth per block (the "-mid"/"-small"
    /// variants) and the conditioning embedding's channels. `shape(name)` gives a stored shape.
    pub fn sdxl_from_shapes(shape: &dyn Fn(&str) -> Option<Vec<usize>>) -> Result<ControlNetConfig, String> {
        let mut c = ControlNetConfig::sdxl();
        let expect = |name: &str, want: &[usize]| -> Result<(), String> {
            match shape(name) {
                Some(s) if s == want => Ok(()),
                Some(s) => Err(format!(
                    "{name} has shape {s:?}, SDXL's ControlNet has {want:?}; use the model's config.json \
                     (next to the weights in its folder, or --config)"
                )),
                None => Err(format!("it has no tensor {name} (an SDXL ControlNet in diffusers key names has)")),
            }
        };
        let ch = c.block_out_channels.clone();
        expect("conv_in.weight", &[ch[0], c.in_channels, 3, 3])?;
        let (_, proj) = c.text_time().expect("SDXL has text_time");
        expect("add_embedding.linear_1.weight", &[ch[0] * 4, proj])?;
        // Conditioning embedding: conv_in, then (same-width conv, stride-2 conv) pairs.
        let cin = shape(COND_EMBEDDING_KEY).ok_or_else(|| format!("it has no tensor {COND_EMBEDDING_KEY}"))?;
        if cin.len() != 4 {
            return Err(format!("{COND_EMBEDDING_KEY} has shape {cin:?}"));
        }
        c.conditioning_channels = cin[1];
        let mut cond = vec![cin[0]];
        let block_width = |j: usize| shape(&format!("controlnet_cond_embedding.blocks.{j}.weight"))?.first().copied();
        while let Some(w) = block_width(2 * cond.len() - 1) {
            cond.push(w);
        }
        c.conditioning_embedding_out_channels = cond;
        expect(
            "controlnet_cond_embedding.conv_out.weight",
            &[ch[0], *c.conditioning_embedding_out_channels.last().unwrap(), 3, 3],
        )?;
        // Transformer depth per block: count the blocks of each attention; all attentions of a
        // block must agree, and the mid block uses the last entry (diffusers ties them).
        let depth_of = |prefix: &str| {
            (0..).take_while(|k| shape(&format!("{prefix}.transformer_blocks.{k}.norm1.weight")).is_some()).count()
        };
        let mut depths = Vec::with_capacity(ch.len());
        for (i, t) in c.down_block_types.iter().enumerate() {
            expect(
                &format!("down_blocks.{i}.resnets.0.conv1.weight"),
                &[ch[i], if i == 0 { ch[0] } else { ch[i - 1] }, 3, 3],
            )?;
            let attn = format!("down_blocks.{i}.attentions.0");
            let has_attn = shape(&format!("{attn}.proj_in.weight")).is_some();
            if has_attn != (t == "CrossAttnDownBlock2D") {
                return Err(format!(
                    "down_blocks.{i} {} attentions, unlike SDXL's {t}",
                    if has_attn { "has" } else { "has no" }
                ));
            }
            let d = if has_attn { depth_of(&attn) } else { 0 };
            for j in 1..c.layers_per_block {
                if has_attn && depth_of(&format!("down_blocks.{i}.attentions.{j}")) != d {
                    return Err(format!("down_blocks.{i}: its attentions have different transformer depths"));
                }
            }
            depths.push(d);
        }
        let mid = depth_of("mid_block.attentions.0");
        let last = *depths.last().unwrap();
        if mid != last {
            return Err(format!("mid_block has {mid} transformer blocks but down_blocks.{} has {last}", ch.len() - 1));
        }
        // Blocks without attention keep SDXL's nominal entry (unused), so the plain SDXL file
        // gives back exactly `sdxl()`.
        let nominal = [1, 2, 10];
        let depths: Vec<usize> = depths
            .iter()
            .enumerate()
            .map(|(i, &d)| if c.down_block_types[i] == "CrossAttnDownBlock2D" { d } else { nominal[i] })
            .collect();
        c.transformer_layers_per_block = PerBlock::Each(depths);
        if let Some(s) = (0..ch.len())
            .flat_map(|i| (0..c.layers_per_block).map(move |j| (i, j)))
            .find_map(|(i, j)| shape(&format!("down_blocks.{i}.attentions.{j}.transformer_blocks.0.attn2.to_k.weight")))
        {
            if s.get(1) != Some(&c.cross_attention_dim) {
                return Err(format!(
                    "its cross-attention width is {:?}, SDXL's is {}",
                    s.get(1),
                    c.cross_attention_dim
                ));
            }
        }
        for (i, &w) in ch.iter().enumerate() {
            let k = i * (c.layers_per_block + 1) + 1;
            expect(&format!("controlnet_down_blocks.{k}.weight"), &[w, w, 1, 1])?;
        }
        expect("controlnet_mid_block.weight", &[ch[ch.len() - 1], ch[ch.len() - 1], 1, 1])?;
        if shape(&format!("controlnet_down_blocks.{}.weight", c.down_residual_count())).is_some() {
            return Err("it has more controlnet_down_blocks than SDXL's ControlNet".into());
        }
        c.validate()?;
        Ok(c)
    }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// `controlnet_cond_embedding`: conv_in → SiLU → (conv → SiLU → stride-2 conv → SiLU)* → conv_out.
struct ConditioningEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl ConditioningEmbedding {
    fn new(vb: VarBuilder, cin: usize, channels: &[usize], cout: usize) -> candle_core::Result<Self> {
        let mut blocks = Vec::with_capacity(2 * channels.len());
        let stride2 = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
        for (j, w) in channels.windows(2).enumerate() {
            blocks.push(conv3x3(vb.pp("blocks").pp(2 * j), w[0], w[0])?);
            blocks.push(conv2d(w[0], w[1], 3, stride2, vb.pp("blocks").pp(2 * j + 1))?);
        }
        Ok(ConditioningEmbedding {
            conv_in: conv3x3(vb.pp("conv_in"), cin, channels[0])?,
            blocks,
            conv_out: conv3x3(vb.pp("conv_out"), channels[channels.len() - 1], cout)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = candle_nn::ops::silu(&self.conv_in.forward(x)?)?;
        for b in &self.blocks {
            h = candle_nn::ops::silu(&b.forward(&h)?)?;
        }
        self.conv_out.forward(&h)
    }
}

/// Everything one ControlNet evaluation takes.
pub struct ControlNetInput<'a> {
    /// The UNet's input latents `[B, 4, h, w]` (the same scaled CFG batch the UNet gets).
    pub sample: &'a Tensor,
    /// One timestep per sample `[B]`, or one for all.
    pub timesteps: &'a Tensor,
    /// The **text** tokens only, `[B, 77, cross_attention_dim]` — not the StoryMaker image tokens
    /// the UNet also gets (see the module docs).
    pub encoder_hidden_states: &'a Tensor,
    /// Pooled CLIP-G embedding `[B, 1280]` and `time_ids` `[B, 6]`, as for the UNet.
    pub text_embeds: Option<&'a Tensor>,
    pub time_ids: Option<&'a Tensor>,
    /// The pose image `[1 or B, 3, 8h, 8w]`, RGB in [0, 1] (not normalised to [-1, 1]); a batch of
    /// one is used for every sample, e.g. both halves of the CFG batch. See [`conditioning_image`].
    pub cond_image: &'a Tensor,
    /// Multiplies every residual (diffusers' `conditioning_scale`; already including the
    /// [`ControlGuidance`] keep factor of the step).
    pub conditioning_scale: f64,
}

pub struct ControlNetModel {
    config: ControlNetConfig,
    conv_in: Conv2d,
    time: TimeConditioning,
    cond_embedding: ConditioningEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    controlnet_down_blocks: Vec<Conv2d>,
    controlnet_mid_block: Conv2d,
}

impl ControlNetModel {
    /// VarBuilder paths are the diffusers key names.
    pub fn new(vb: VarBuilder, config: &ControlNetConfig) -> candle_core::Result<Self> {
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
        let time = TimeConditioning::new(
            vb.clone(),
            "ControlNet",
            ch[0],
            temb,
            config.text_time(),
            config.flip_sin_to_cos,
            config.freq_shift,
        )?;
        let one_by_one = |vb: VarBuilder, c: usize| conv2d(c, c, 1, Default::default(), vb);
        let zero = vb.pp("controlnet_down_blocks");
        let mut controlnet_down_blocks = vec![one_by_one(zero.pp(0), ch[0])?];
        let mut down_blocks = Vec::with_capacity(n);
        let mut out = ch[0];
        for (i, &width) in ch.iter().enumerate() {
            let cin = out;
            out = width;
            let cross = config.down_block_types[i] == "CrossAttnDownBlock2D";
            let attn =
                cross.then(|| AttnDims { heads: config.heads(i), depth: config.transformer_layers_per_block.get(i) });
            let downsample = i + 1 < n;
            down_blocks.push(DownBlock::new(
                vb.pp("down_blocks").pp(i),
                cin,
                out,
                config.layers_per_block,
                attn,
                downsample,
                d,
            )?);
            for _ in 0..config.layers_per_block + usize::from(downsample) {
                controlnet_down_blocks.push(one_by_one(zero.pp(controlnet_down_blocks.len()), out)?);
            }
        }
        let mid_attn = AttnDims { heads: config.heads(n - 1), depth: config.transformer_layers_per_block.get(n - 1) };
        Ok(ControlNetModel {
            config: config.clone(),
            conv_in: conv3x3(vb.pp("conv_in"), config.in_channels, ch[0])?,
            time,
            cond_embedding: ConditioningEmbedding::new(
                vb.pp("controlnet_cond_embedding"),
                config.conditioning_channels,
                &config.conditioning_embedding_out_channels,
                ch[0],
            )?,
            down_blocks,
            mid_block: MidBlock::new(vb.pp("mid_block"), ch[n - 1], mid_attn, d)?,
            controlnet_down_blocks,
            controlnet_mid_block: one_by_one(vb.pp("controlnet_mid_block"), ch[n - 1])?,
        })
    }

    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    /// Time embedding `[B, temb]` (for localising a parity failure).
    pub fn time_embedding(&self, input: &ControlNetInput) -> candle_core::Result<Tensor> {
        self.time.forward(input.sample, input.timesteps, input.text_embeds, input.time_ids)
    }

    /// The scaled residuals: one per UNet skip connection (in the UNet's order), and the mid one.
    pub fn forward(&self, input: &ControlNetInput) -> candle_core::Result<(Vec<Tensor>, Tensor)> {
        let dtype = input.sample.dtype();
        let emb = self.time_embedding(input)?;
        let ctx = input.encoder_hidden_states;
        let mut cond = input.cond_image.to_dtype(dtype)?;
        if self.config.controlnet_conditioning_channel_order == "bgr" {
            let order = Tensor::new(&[2u32, 1, 0], cond.device())?;
            cond = cond.index_select(&order, 1)?;
        }
        let hs = self.conv_in.forward(input.sample)?;
        let cond = self.cond_embedding.forward(&cond)?;
        let (cb, _, chh, cw) = cond.dims4()?;
        let (b, _, h, w) = hs.dims4()?;
        if (chh, cw) != (h, w) || (cb != 1 && cb != b) {
            let f = self.config.cond_downscale();
            let (ib, _, ih, iw) = input.cond_image.dims4()?;
            return Err(candle_core::Error::Msg(format!(
                "ControlNet: the conditioning image is {ib}x{ih}x{iw} (batch x height x width); for latents \
                 {b}x{h}x{w} it must be 1 or {b} images of {}x{} pixels",
                h * f,
                w * f
            )));
        }
        let mut hs = hs.broadcast_add(&cond)?;
        let mut skips = vec![hs.clone()];
        for block in &self.down_blocks {
            hs = block.forward(&hs, &emb, ctx, &mut skips)?;
        }
        let hs = self.mid_block.forward(&hs, &emb, ctx)?;
        let scale = input.conditioning_scale;
        let down = skips
            .iter()
            .zip(&self.controlnet_down_blocks)
            .map(|(s, conv)| conv.forward(s)? * scale)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mid = (self.controlnet_mid_block.forward(&hs)? * scale)?;
        Ok((down, mid))
    }
}

/// An RGB image (`width * height * 3` bytes, rows top to bottom) as the ControlNet's conditioning
/// input `[1, 3, height, width]` f32 in [0, 1], exactly as diffusers' control image processor
/// (`float32 / 255`, no normalisation) for an image already at the target size.
pub fn conditioning_image(rgb: &[u8], width: usize, height: usize, dev: &Device) -> candle_core::Result<Tensor> {
    if rgb.len() != width * height * 3 {
        return Err(candle_core::Error::Msg(format!(
            "conditioning image: {} bytes for {width}x{height} RGB ({} expected)",
            rgb.len(),
            width * height * 3
        )));
    }
    let mut planes = vec![0f32; rgb.len()];
    let n = width * height;
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            planes[c * n + i] = px[c] as f32 / 255.0;
        }
    }
    Tensor::from_vec(planes, (1, 3, height, width), dev)
}

// ---------------------------------------------------------------------------------------------
// Guidance window
// ---------------------------------------------------------------------------------------------

/// diffusers' `controlnet_keep[i]` for one ControlNet: 1 when step `step` of `steps` (0-based;
/// `steps` = the number of UNet evaluations, `len(timesteps)`) lies inside the fraction window
/// [`start`, `end`], else 0. A step is inside when it starts at or after `start` and ends at or
/// before `end`: `!(step/steps < start || (step+1)/steps > end)`, in f64 like Python.
pub fn controlnet_keep(step: usize, steps: usize, start: f64, end: f64) -> f64 {
    let n = steps as f64;
    let outside = (step as f64) / n < start || ((step + 1) as f64) / n > end;
    if outside {
        0.0
    } else {
        1.0
    }
}

/// How strongly and when the ControlNet acts: diffusers' `controlnet_conditioning_scale`,
/// `control_guidance_start` and `control_guidance_end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControlGuidance {
    pub scale: f64,
    pub start: f64,
    pub end: f64,
}

impl Default for ControlGuidance {
    /// diffusers' defaults: full strength over all steps.
    fn default() -> Self {
        ControlGuidance { scale: 1.0, start: 0.0, end: 1.0 }
    }
}

impl ControlGuidance {
    /// Checks the window as diffusers' `check_inputs` does (`0 <= start < end <= 1`).
    pub fn new(scale: f64, start: f64, end: f64) -> Result<ControlGuidance, ControlNetError> {
        if !(scale.is_finite() && start.is_finite() && end.is_finite()) {
            return Err(ControlNetError::Guidance("scale, start and end must be finite numbers".into()));
        }
        if start >= end {
            return Err(ControlNetError::Guidance(format!("start {start} must be smaller than end {end}")));
        }
        if start < 0.0 || end > 1.0 {
            return Err(ControlNetError::Guidance(format!("start {start} and end {end} must lie in [0, 1]")));
        }
        Ok(ControlGuidance { scale, start, end })
    }

    /// The conditioning scale to pass at step `step` of `steps`: `scale × keep`.
    pub fn scale_at(&self, step: usize, steps: usize) -> f64 {
        self.scale * controlnet_keep(step, steps, self.start, self.end)
    }

    /// Whether the ControlNet contributes at this step at all; when not, skip it and give the UNet
    /// no residuals (identical output: the residuals would be exact zeros).
    pub fn is_active(&self, step: usize, steps: usize) -> bool {
        self.scale_at(step, steps) != 0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// Where a ControlNet's weights and (optional) config are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlNetFiles {
    pub weights: Vec<PathBuf>,
    /// `config.json`; without it the SDXL config is inferred from the shapes.
    pub config: Option<PathBuf>,
}

impl ControlNetFiles {
    /// A diffusers folder (`config.json` + `diffusion_pytorch_model[.fp16].safetensors` or shards;
    /// failing those, the first `.safetensors` in it, e.g. a community file next to its config) or
    /// one `.safetensors` file (no config: inferred).
    pub fn from_path(path: &Path) -> Result<ControlNetFiles, ControlNetError> {
        if path.is_file() {
            return Ok(ControlNetFiles { weights: vec![path.to_path_buf()], config: None });
        }
        if !path.is_dir() {
            return Err(ControlNetError::NotInstalled { dir: path.display().to_string() });
        }
        let config = Some(path.join("config.json")).filter(|p| p.is_file());
        let weights = match component_weight_files(path, "diffusion_pytorch_model") {
            Ok(w) => w,
            Err(e) => {
                let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|_| ControlNetError::NotInstalled { dir: path.display().to_string() })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("safetensors")))
                    .collect();
                found.sort();
                match found.into_iter().next() {
                    Some(f) => vec![f],
                    None if config.is_some() => return Err(e.into()),
                    None => return Err(ControlNetError::NotInstalled { dir: path.display().to_string() }),
                }
            }
        };
        Ok(ControlNetFiles { weights, config })
    }
}

/// The pose ControlNet of a models folder: `<models>/controlnet-openpose/` (a diffusers folder or
/// a single `.safetensors` file in it).
pub fn find_controlnet(models_dir: &Path) -> Result<ControlNetFiles, ControlNetError> {
    ControlNetFiles::from_path(&models_dir.join(CONTROLNET_SUBDIR))
}

/// Opens the files, reads or infers the config, and builds the model. `config` overrides the
/// files' own config (for a single file of a non-SDXL-sized ControlNet).
pub fn load_controlnet(
    files: &ControlNetFiles,
    config: Option<&ControlNetConfig>,
    dtype: DType,
    dev: &Device,
) -> Result<ControlNetModel, ControlNetError> {
    let store = TensorStore::open(&files.weights)?;
    let where_ = files.weights.first().map(|p| p.display().to_string()).unwrap_or_default();
    let bad = |detail: String| ControlNetError::BadWeights { path: where_.clone(), detail };
    if store.contains("task_embedding") || store.contains("control_add_embedding.linear_1.weight") {
        return Err(bad("this is a ControlNet-Union (ControlNetUnionModel); use a single-condition pose \
                        ControlNet such as "
            .to_string()
            + CONTROLNET_REPO));
    }
    if !store.contains(COND_EMBEDDING_KEY) {
        let sample: Vec<&str> = {
            let mut v: Vec<&str> = store.names().collect();
            v.sort();
            v.into_iter().take(3).collect()
        };
        return Err(bad(format!(
            "it has no {COND_EMBEDDING_KEY}: not a ControlNet in diffusers key names (first keys: {})",
            sample.join(", ")
        )));
    }
    let cfg = match (config, &files.config) {
        (Some(c), _) => {
            c.validate().map_err(|d| bad(format!("config: {d}")))?;
            c.clone()
        }
        (None, Some(path)) => {
            let bytes = std::fs::read(path)
                .map_err(|e| ControlNetError::BadConfig { path: path.display().to_string(), detail: e.to_string() })?;
            ControlNetConfig::from_json(&bytes)
                .map_err(|detail| ControlNetError::BadConfig { path: path.display().to_string(), detail })?
        }
        (None, None) => ControlNetConfig::sdxl_from_shapes(&|n| store.shape(n).map(<[usize]>::to_vec)).map_err(bad)?,
    };
    Ok(ControlNetModel::new(store.into_var_builder(dtype, dev), &cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    /// A VarBuilder backend that records every requested name and shape and hands out zero-cost
    /// broadcast views, so the full-size SDXL ControlNet can be "built" to list its tensors.
    struct Recorder(Arc<Mutex<BTreeMap<String, Vec<usize>>>>);

    impl candle_nn::var_builder::SimpleBackend for Recorder {
        fn get(
            &self,
            s: candle_core::Shape,
            name: &str,
            _: candle_nn::Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            self.0.lock().unwrap().insert(name.to_string(), s.dims().to_vec());
            Tensor::zeros(1, dtype, dev)?.broadcast_as(s)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            Err(candle_core::Error::Msg(format!("unexpected get_unchecked {name}")))
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    fn shapes_of(cfg: &ControlNetConfig) -> BTreeMap<String, Vec<usize>> {
        let map = Arc::new(Mutex::new(BTreeMap::new()));
        let vb = VarBuilder::from_backend(Box::new(Recorder(map.clone())), DType::F32, Device::Cpu);
        ControlNetModel::new(vb, cfg).expect("build with recorded shapes");
        let shapes = map.lock().unwrap().clone();
        shapes
    }

    #[test]
    fn sdxl_structure_matches_diffusers_tensor_list() {
        // diffusers 0.42.1 ControlNetModel(**xinsir config) on the meta device: 844 tensors,
        // 1,251,014,160 parameters (tools/parity/gen_controlnet.py documents how this was read).
        let shapes = shapes_of(&ControlNetConfig::sdxl());
        assert_eq!(shapes.len(), 844);
        let params: usize = shapes.values().map(|s| s.iter().product::<usize>()).sum();
        assert_eq!(params, 1_251_014_160);
        for (k, s) in [
            ("controlnet_cond_embedding.conv_out.weight", vec![320, 256, 3, 3]),
            ("controlnet_cond_embedding.blocks.5.weight", vec![256, 96, 3, 3]),
            ("controlnet_down_blocks.8.weight", vec![1280, 1280, 1, 1]),
            ("add_embedding.linear_1.weight", vec![1280, 2816]),
            ("controlnet_mid_block.weight", vec![1280, 1280, 1, 1]),
            ("down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight", vec![1280, 2048]),
        ] {
            assert_eq!(shapes.get(k), Some(&s), "{k}");
        }
    }

    #[test]
    fn single_file_config_is_inferred_from_sdxl_shapes() {
        let sdxl = ControlNetConfig::sdxl();
        let shapes = shapes_of(&sdxl);
        let inferred = ControlNetConfig::sdxl_from_shapes(&|n| shapes.get(n).cloned()).unwrap();
        assert_eq!(inferred, sdxl);

        // Reduced transformer depth (as in the "-mid"/"-small" variants; here none in block 1) is
        // read from the file.
        let small = ControlNetConfig { transformer_layers_per_block: PerBlock::Each(vec![1, 0, 1]), ..sdxl.clone() };
        let shapes = shapes_of(&small);
        let inferred = ControlNetConfig::sdxl_from_shapes(&|n| shapes.get(n).cloned()).unwrap();
        assert_eq!(inferred.transformer_layers_per_block, PerBlock::Each(vec![1, 0, 1]));

        // Non-standard conditioning embedding widths are read from the file too.
        let cond = ControlNetConfig { conditioning_embedding_out_channels: vec![16, 32, 64], ..sdxl.clone() };
        let shapes = shapes_of(&cond);
        let inferred = ControlNetConfig::sdxl_from_shapes(&|n| shapes.get(n).cloned()).unwrap();
        assert_eq!(inferred.conditioning_embedding_out_channels, vec![16, 32, 64]);
        assert_eq!(inferred.cond_downscale(), 4);

        // Something that is not SDXL-sized is refused with the tensor, both shapes and the remedy.
        let mut shapes = shapes_of(&sdxl);
        shapes.insert("conv_in.weight".into(), vec![320, 9, 3, 3]);
        let err = ControlNetConfig::sdxl_from_shapes(&|n| shapes.get(n).cloned()).unwrap_err();
        assert!(
            err.contains("conv_in.weight") && err.contains("[320, 9, 3, 3]") && err.contains("config.json"),
            "{err}"
        );
        let mut shapes = shapes_of(&sdxl);
        shapes.remove("mid_block.attentions.0.transformer_blocks.9.norm1.weight");
        let err = ControlNetConfig::sdxl_from_shapes(&|n| shapes.get(n).cloned()).unwrap_err();
        assert!(err.contains("mid_block has 9"), "{err}");
    }

    #[test]
    fn keep_factor_follows_the_diffusers_formula() {
        // 10 steps, window [0.3, 1.0]: steps 0..2 start before 0.3.
        let k: Vec<f64> = (0..10).map(|i| controlnet_keep(i, 10, 0.3, 1.0)).collect();
        assert_eq!(k, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        // A step must end by `end`: with 3 steps and end 0.5 only step 0 (ends at 1/3) is kept.
        let k: Vec<f64> = (0..3).map(|i| controlnet_keep(i, 3, 0.0, 0.5)).collect();
        assert_eq!(k, [1.0, 0.0, 0.0]);
        // Boundaries are inclusive on both sides: step 2 of 4 spans exactly [0.5, 0.75].
        let k: Vec<f64> = (0..4).map(|i| controlnet_keep(i, 4, 0.5, 0.75)).collect();
        assert_eq!(k, [0.0, 0.0, 1.0, 0.0]);
        // f64 rounding as in Python: 3/10 == 0.3 is not < 0.3.
        assert_eq!(controlnet_keep(3, 10, 0.3, 1.0), 1.0);
        let g = ControlGuidance::new(0.7, 0.2, 0.7).unwrap();
        let s: Vec<f64> = (0..7).map(|i| g.scale_at(i, 7)).collect();
        assert_eq!(s, [0.0, 0.0, 0.7, 0.7, 0.0, 0.0, 0.0]);
        assert!(!g.is_active(0, 7) && g.is_active(2, 7));
        assert_eq!((0..5).map(|i| ControlGuidance::default().scale_at(i, 5)).sum::<f64>(), 5.0);
    }

    #[test]
    fn guidance_window_is_checked_like_diffusers() {
        assert!(ControlGuidance::new(1.0, 0.5, 0.5).unwrap_err().to_string().contains("smaller than end"));
        assert!(ControlGuidance::new(1.0, -0.1, 0.5).is_err());
        assert!(ControlGuidance::new(1.0, 0.0, 1.1).is_err());
        assert!(ControlGuidance::new(f64::NAN, 0.0, 1.0).is_err());
        assert!(ControlGuidance::new(0.0, 0.0, 1.0).is_ok_and(|g| !g.is_active(0, 1)));
    }

    #[test]
    fn config_rejects_what_is_not_implemented() {
        let ok = ControlNetConfig::sdxl();
        assert!(ok.validate().is_ok());
        assert_eq!(ok.down_residual_count(), 9);
        let bad = |c: ControlNetConfig, what: &str| {
            let e = c.validate().unwrap_err();
            assert!(e.contains(what), "{e}");
        };
        bad(ControlNetConfig::default(), "use_linear_projection");
        bad(ControlNetConfig { global_pool_conditions: true, ..ok.clone() }, "global_pool");
        bad(ControlNetConfig { controlnet_conditioning_channel_order: "rgba".into(), ..ok.clone() }, "rgba");
        bad(ControlNetConfig { mid_block_type: Some("UNetMidBlock2D".into()), ..ok.clone() }, "mid_block_type");
        bad(
            ControlNetConfig { only_cross_attention: serde_json::json!([false, true, false]), ..ok.clone() },
            "only_cross",
        );
        bad(ControlNetConfig { addition_time_embed_dim: None, ..ok.clone() }, "text_time");
        bad(ControlNetConfig { attention_head_dim: PerBlock::Each(vec![5, 7, 20]), ..ok.clone() }, "7 heads");
        // A real config parses; unknown keys (`_class_name`, ...) are ignored.
        let json = serde_json::to_vec(&serde_json::json!({
            "_class_name": "ControlNetModel", "block_out_channels": [320, 640, 1280],
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "cross_attention_dim": 2048, "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
            "use_linear_projection": true, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816, "only_cross_attention": false, "mid_block_type": null
        }))
        .unwrap();
        assert_eq!(ControlNetConfig::from_json(&json).unwrap(), ControlNetConfig { mid_block_type: None, ..ok });
    }

    #[test]
    fn conditioning_image_is_planar_rgb_over_255() {
        let rgb = [255u8, 0, 51, 0, 102, 255];
        let t = conditioning_image(&rgb, 2, 1, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 1, 2]);
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, [1.0, 0.0, 0.0, 0.4, 0.2, 1.0]);
        assert!(conditioning_image(&rgb, 3, 1, &Device::Cpu).is_err());
    }

    #[test]
    fn missing_controlnet_names_the_folder_and_the_model() {
        let d = tempfile::tempdir().unwrap();
        let e = find_controlnet(d.path()).unwrap_err().to_string();
        assert!(e.contains(&d.path().join(CONTROLNET_SUBDIR).display().to_string()), "{e}");
        assert!(e.contains(CONTROLNET_REPO), "{e}");
        let dir = d.path().join(CONTROLNET_SUBDIR);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(find_controlnet(d.path()), Err(ControlNetError::NotInstalled { .. })));
        std::fs::write(dir.join("config.json"), b"{}").unwrap();
        let e = find_controlnet(d.path()).unwrap_err().to_string();
        assert!(e.contains("diffusion_pytorch_model.safetensors"), "{e}");
        std::fs::write(dir.join("OpenPoseXL2.safetensors"), b"x").unwrap();
        let f = find_controlnet(d.path()).unwrap();
        assert_eq!(f.weights, vec![dir.join("OpenPoseXL2.safetensors")]);
        assert_eq!(f.config, Some(dir.join("config.json")));
        std::fs::write(dir.join("diffusion_pytorch_model.fp16.safetensors"), b"x").unwrap();
        assert_eq!(
            find_controlnet(d.path()).unwrap().weights,
            vec![dir.join("diffusion_pytorch_model.fp16.safetensors")]
        );
    }
}
