//! UNet configuration, read from a diffusers `unet/config.json` (reference spec §6).
//!
//! Only the SDXL family of `UNet2DConditionModel` is supported: positional timesteps,
//! `text_time` additional conditioning, `DownBlock2D`/`CrossAttnDownBlock2D` down blocks,
//! `CrossAttnUpBlock2D`/`UpBlock2D` up blocks and a cross-attention mid block.

use serde::{Deserialize, Serialize};

/// A value diffusers allows either once for all blocks or per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    pub fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.get(i).or(v.last()).copied().unwrap_or(1),
        }
    }
}

fn default_groups() -> usize {
    32
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_one() -> PerBlock {
    PerBlock::One(1)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub layers_per_block: usize,
    #[serde(default = "default_one")]
    pub transformer_layers_per_block: PerBlock,
    /// Diffusers' legacy name: for SDXL this is the number of heads per block (§6).
    pub attention_head_dim: PerBlock,
    /// When set, the number of heads (the non-legacy name); overrides `attention_head_dim`.
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    pub cross_attention_dim: usize,
    #[serde(default = "default_true")]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
}

impl UNetConfig {
    /// stabilityai/stable-diffusion-xl-base-1.0 `unet/config.json` (for single-file checkpoints).
    pub fn sdxl_base() -> UNetConfig {
        UNetConfig {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280],
            down_block_types: vec!["DownBlock2D".into(), "CrossAttnDownBlock2D".into(), "CrossAttnDownBlock2D".into()],
            up_block_types: vec!["CrossAttnUpBlock2D".into(), "CrossAttnUpBlock2D".into(), "UpBlock2D".into()],
            layers_per_block: 2,
            transformer_layers_per_block: PerBlock::Each(vec![1, 2, 10]),
            attention_head_dim: PerBlock::Each(vec![5, 10, 20]),
            num_attention_heads: None,
            cross_attention_dim: 2048,
            use_linear_projection: true,
            addition_embed_type: Some("text_time".into()),
            addition_time_embed_dim: Some(256),
            projection_class_embeddings_input_dim: Some(2816),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<UNetConfig, String> {
        let c: UNetConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    /// Heads of down block `i` (diffusers' `num_attention_heads or attention_head_dim`).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim).get(i)
    }

    pub fn validate(&self) -> Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err("block_out_channels, down_block_types and up_block_types must have the same length".into());
        }
        for t in &self.down_block_types {
            if t != "DownBlock2D" && t != "CrossAttnDownBlock2D" {
                return Err(format!("unsupported down block type {t}"));
            }
        }
        for t in &self.up_block_types {
            if t != "UpBlock2D" && t != "CrossAttnUpBlock2D" {
                return Err(format!("unsupported up block type {t}"));
            }
        }
        if self.block_out_channels.iter().any(|c| c % self.norm_num_groups != 0) {
            return Err("every block width must be divisible by norm_num_groups".into());
        }
        if !self.use_linear_projection {
            return Err("only use_linear_projection = true (SDXL) is supported".into());
        }
        Ok(())
    }

    /// The `text_time` micro-conditioning sizes, if the model has it.
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
}
