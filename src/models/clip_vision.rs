//! The CLIP image encoder StoryMaker conditions on (reference spec §1.2): transformers'
//! `CLIPVisionModel` / `CLIPVisionModelWithProjection`, ViT-H/14 from `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`.
//!
//! Structure (as `modeling_clip.py`):
//!
//! - embeddings: `[class_embedding; patch_embedding(pixels)] + position_embedding`, where the patch
//!   embedding is a `patch_size`-strided convolution **without bias** and the position table has
//!   `(image_size / patch_size)^2 + 1` rows (no interpolation: other image sizes are an error);
//! - `pre_layrnorm` (sic, the checkpoint's spelling) on the embedding output, which is `hidden_states[0]`;
//! - pre-LN encoder layers (`x + attn(ln1(x))`, `h + fc2(act(fc1(ln2(h))))`), no attention mask;
//! - `pooled = post_layernorm(hidden_states[-1][:, 0])`, `image_embeds = pooled @ visual_projection^T`.
//!
//! StoryMaker uses only `hidden_states[-2]`, the residual stream after the penultimate layer, with no
//! `post_layernorm` and no projection ([`ClipVisionModel::forward_penultimate`] skips the last layer).
//!
//! VarBuilder paths are the published checkpoint keys (`vision_model.…`, `visual_projection.weight`).

use std::path::Path;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{conv2d_no_bias, layer_norm, linear_no_bias, Conv2d, Conv2dConfig, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

pub use crate::models::clip_encoder::ClipActivation;
use crate::models::clip_encoder::{ClipEncoderLayer, ClipLayerDims};

/// The fields of a transformers `CLIPVisionConfig` that inference uses. Missing fields take
/// transformers' defaults; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "defaults::hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "defaults::intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "defaults::num_hidden_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "defaults::num_attention_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "defaults::num_channels")]
    pub num_channels: usize,
    #[serde(default = "defaults::image_size")]
    pub image_size: usize,
    #[serde(default = "defaults::patch_size")]
    pub patch_size: usize,
    #[serde(default = "defaults::hidden_act")]
    pub hidden_act: ClipActivation,
    #[serde(default = "defaults::layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "defaults::projection_dim")]
    pub projection_dim: usize,
}

/// transformers 5.24 `CLIPVisionConfig` defaults.
mod defaults {
    use super::ClipActivation;
    pub fn hidden_size() -> usize {
        768
    }
    pub fn intermediate_size() -> usize {
        3072
    }
    pub fn num_hidden_layers() -> usize {
        12
    }
    pub fn num_attention_heads() -> usize {
        12
    }
    pub fn num_channels() -> usize {
        3
    }
    pub fn image_size() -> usize {
        224
    }
    pub fn patch_size() -> usize {
        32
    }
    pub fn hidden_act() -> ClipActivation {
        ClipActivation::QuickGelu
    }
    pub fn layer_norm_eps() -> f64 {
        1e-5
    }
    pub fn projection_dim() -> usize {
        512
    }
}

impl ClipVisionConfig {
    /// `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` vision tower (spec §1.2): 257 tokens of width 1280.
    pub fn vit_h14() -> Self {
        ClipVisionConfig {
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 224,
            patch_size: 14,
            hidden_act: ClipActivation::Gelu,
            layer_norm_eps: 1e-5,
            projection_dim: 1024,
        }
    }

    /// Parses a transformers `config.json`: either a `CLIPVisionConfig` itself or a full `CLIPConfig`,
    /// whose `vision_config` (and top-level `projection_dim`, if the vision config lacks it) is used.
    pub fn from_json(json: &str) -> std::result::Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        match value.get("vision_config") {
            Some(vision) if vision.is_object() => {
                let mut vision = vision.clone();
                if let (Some(p), Some(obj)) = (value.get("projection_dim"), vision.as_object_mut()) {
                    obj.entry("projection_dim").or_insert_with(|| p.clone());
                }
                serde_json::from_value(vision)
            }
            _ => serde_json::from_value(value),
        }
    }

    /// Reads and parses a transformers `config.json`; errors name the file.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| candle_core::Error::Msg(format!("{}: cannot read CLIP vision config: {e}", path.display())))?;
        Self::from_json(&text)
            .map_err(|e| candle_core::Error::Msg(format!("{}: invalid CLIP vision config: {e}", path.display())))
    }

    /// Patches per side (`image_size / patch_size`).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Sequence length: patches plus the class token (257 for ViT-H/14 at 224).
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(candle_core::Error::Msg(format!("invalid CLIP vision config: {what}")));
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_hidden_layers < 2 {
            return bad(format!(
                "num_hidden_layers is {}, the penultimate layer needs at least 2",
                self.num_hidden_layers
            ));
        }
        if self.patch_size == 0 || self.image_size < self.patch_size {
            return bad(format!("image_size {} / patch_size {}", self.image_size, self.patch_size));
        }
        if self.num_channels == 0 {
            return bad("num_channels is 0".to_string());
        }
        Ok(())
    }
}

/// The outputs of one forward pass over a batch of images.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// `hidden_states[-2]`: the residual stream after the penultimate layer, no `post_layernorm`,
    /// `[B, num_positions, hidden]` (`[B, 257, 1280]` for ViT-H/14). What StoryMaker consumes.
    pub penultimate: Tensor,
    /// `post_layernorm(hidden_states[-1][:, 0])`, the pooled CLS token `[B, hidden]`; only when the last
    /// layer ran ([`ClipVisionModel::forward`]).
    pub last_hidden: Option<Tensor>,
    /// `image_embeds = last_hidden @ visual_projection^T`, `[B, projection_dim]`; only for a model built
    /// `with_projection`, from [`ClipVisionModel::forward`].
    pub image_embeds: Option<Tensor>,
}

/// A CLIP image encoder (`CLIPVisionModel`, or `CLIPVisionModelWithProjection` when built `with_projection`).
pub struct ClipVisionModel {
    class_embedding: Tensor,
    patch_embedding: Conv2d,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipEncoderLayer>,
    post_layernorm: LayerNorm,
    visual_projection: Option<Linear>,
    cfg: ClipVisionConfig,
    dtype: DType,
}

impl ClipVisionModel {
    /// Loads from `vb` rooted at the checkpoint's top level (`vision_model.…` and, when `with_projection`,
    /// `visual_projection.weight`). The model dtype is `vb`'s.
    pub fn new(vb: VarBuilder, cfg: &ClipVisionConfig, with_projection: bool) -> Result<Self> {
        cfg.validate()?;
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let vm = vb.pp("vision_model");
        let emb = vm.pp("embeddings");
        let conv_cfg = Conv2dConfig { stride: cfg.patch_size, ..Default::default() };
        let dims = ClipLayerDims {
            hidden: cfg.hidden_size,
            intermediate: cfg.intermediate_size,
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps,
            act: cfg.hidden_act,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(vm.pp("encoder").pp("layers").pp(i), dims))
            .collect::<Result<Vec<_>>>()?;
        let visual_projection = if with_projection {
            Some(linear_no_bias(h, cfg.projection_dim, vb.pp("visual_projection"))?)
        } else {
            None
        };
        Ok(ClipVisionModel {
            class_embedding: emb.get(h, "class_embedding")?,
            patch_embedding: conv2d_no_bias(cfg.num_channels, h, cfg.patch_size, conv_cfg, emb.pp("patch_embedding"))?,
            position_embedding: emb.get((cfg.num_positions(), h), "position_embedding.weight")?,
            pre_layrnorm: layer_norm(h, eps, vm.pp("pre_layrnorm"))?,
            layers,
            post_layernorm: layer_norm(h, eps, vm.pp("post_layernorm"))?,
            visual_projection,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }

    pub fn has_projection(&self) -> bool {
        self.visual_projection.is_some()
    }

    /// All outputs: runs every layer; `last_hidden` is always set, `image_embeds` when built
    /// `with_projection`. `pixel_values` is `[B, num_channels, image_size, image_size]`, CLIP-normalised.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<ClipVisionOutput> {
        let hidden = self.run(pixel_values, self.layers.len())?;
        let n = hidden.len();
        let pooled = self.post_layernorm.forward(&hidden[n - 1].narrow(1, 0, 1)?.squeeze(1)?)?;
        let image_embeds = match &self.visual_projection {
            Some(p) => Some(p.forward(&pooled)?),
            None => None,
        };
        Ok(ClipVisionOutput { penultimate: hidden[n - 2].clone(), last_hidden: Some(pooled), image_embeds })
    }

    /// What StoryMaker uses: `hidden_states[-2]` only; the last layer is not run.
    pub fn forward_penultimate(&self, pixel_values: &Tensor) -> Result<ClipVisionOutput> {
        let mut hidden = self.run(pixel_values, self.layers.len() - 1)?;
        let penultimate = hidden.pop().expect("at least the embedding output");
        Ok(ClipVisionOutput { penultimate, last_hidden: None, image_embeds: None })
    }

    /// transformers' `hidden_states`: the `pre_layrnorm` output followed by each layer's output
    /// (`num_hidden_layers + 1` tensors of `[B, T, hidden]`).
    pub fn hidden_states(&self, pixel_values: &Tensor) -> Result<Vec<Tensor>> {
        self.run(pixel_values, self.layers.len())
    }

    /// Checks the input shape, then the embeddings, `pre_layrnorm` and the first `n_layers` layers.
    fn run(&self, pixel_values: &Tensor, n_layers: usize) -> Result<Vec<Tensor>> {
        let cfg = &self.cfg;
        let (b, c, hgt, wid) = pixel_values.dims4().map_err(|_| {
            candle_core::Error::Msg(format!(
                "CLIP vision input must be [batch, {}, {}, {}], got shape {:?}",
                cfg.num_channels,
                cfg.image_size,
                cfg.image_size,
                pixel_values.dims()
            ))
        })?;
        if c != cfg.num_channels || hgt != cfg.image_size || wid != cfg.image_size {
            return Err(candle_core::Error::Msg(format!(
                "CLIP vision input is [{b}, {c}, {hgt}, {wid}] but the model expects [batch, {}, {}, {}] \
                 (resize/crop the image to {}x{} first)",
                cfg.num_channels, cfg.image_size, cfg.image_size, cfg.image_size, cfg.image_size
            )));
        }
        if b == 0 {
            return Err(candle_core::Error::Msg("CLIP vision input has an empty batch".to_string()));
        }
        let x = pixel_values.to_dtype(self.dtype)?;
        // [B, C, g, g] -> [B, g*g, C]
        let patches = self.patch_embedding.forward(&x)?.flatten_from(2)?.transpose(1, 2)?;
        let cls = self.class_embedding.reshape((1, 1, cfg.hidden_size))?.broadcast_as((b, 1, cfg.hidden_size))?;
        let emb = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let mut h = self.pre_layrnorm.forward(&emb)?;
        let mut out = Vec::with_capacity(n_layers + 1);
        out.push(h.clone());
        for layer in &self.layers[..n_layers] {
            h = layer.forward(&h, None)?;
            out.push(h.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vit_h14_has_257_tokens() {
        let cfg = ClipVisionConfig::vit_h14();
        assert_eq!(cfg.num_positions(), 257);
        assert_eq!(cfg.hidden_size / cfg.num_attention_heads, 80);
        cfg.validate().unwrap();
    }

    #[test]
    fn config_parses_vision_or_full_clip_config() {
        let v = ClipVisionConfig::from_json(
            r#"{"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
                "patch_size": 14, "hidden_act": "gelu", "projection_dim": 1024, "model_type": "clip_vision_model"}"#,
        )
        .unwrap();
        assert_eq!(v, ClipVisionConfig::vit_h14());
        let full = ClipVisionConfig::from_json(
            r#"{"projection_dim": 1024, "vision_config": {"hidden_size": 1280, "intermediate_size": 5120,
                "num_hidden_layers": 32, "num_attention_heads": 16, "patch_size": 14, "hidden_act": "gelu"}}"#,
        )
        .unwrap();
        assert_eq!(full, ClipVisionConfig::vit_h14());
        let mut bad = ClipVisionConfig::vit_h14();
        bad.num_attention_heads = 7;
        assert!(bad.validate().is_err());
    }
}
