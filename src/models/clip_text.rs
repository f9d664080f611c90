//! The two CLIP text encoders of SDXL, as transformers' `CLIPTextModel` (encoder 1, OpenAI ViT-L/14)
//! and `CLIPTextModelWithProjection` (encoder 2, OpenCLIP ViT-bigG/14).
//!
//! The rules this port follows are in `shared/design/SDXL-FACTS.md` ("Text encoders") and
//! `tools/parity/README.md` ("Text encoders: padding and pooling (verified)"):
//!
//! - pre-LN transformer with a causal mask and **no** attention mask (padding is attended to);
//! - `prompt_embeds = concat(te1.hidden_states[-2], te2.hidden_states[-2])`, the penultimate layer's
//!   output **before** `final_layer_norm` (`hidden_states[0]` is the embedding output);
//! - `pooled_prompt_embeds = final_layer_norm(last layer)[eos] @ text_projection.weight^T` of encoder 2
//!   only, no bias;
//! - the EOS position follows transformers: with `eos_token_id == 2` (every published SDXL config) it is
//!   `argmax(input_ids)`, the first occurrence of the largest id; otherwise the first position whose id
//!   equals `eos_token_id`.
//!
//! VarBuilder paths are the published checkpoint keys (`text_model.…`, `text_projection.weight`).

use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{embedding, layer_norm, linear_no_bias, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use super::clip_encoder::{ClipEncoderLayer, ClipLayerDims};

pub use super::clip_encoder::ClipActivation;

/// The fields of a transformers `CLIPTextConfig` (`config.json`) that inference uses. Missing
/// fields take transformers' defaults; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "defaults::hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "defaults::intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "defaults::num_hidden_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "defaults::num_attention_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "defaults::hidden_act")]
    pub hidden_act: ClipActivation,
    #[serde(default = "defaults::layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "defaults::projection_dim")]
    pub projection_dim: usize,
    /// `2` in the published SDXL configs (legacy value), which selects the `argmax(input_ids)` rule.
    #[serde(default = "defaults::eos_token_id")]
    pub eos_token_id: u32,
}

/// transformers 5.24 `CLIPTextConfig` defaults.
mod defaults {
    use super::ClipActivation;
    pub fn vocab_size() -> usize {
        49408
    }
    pub fn hidden_size() -> usize {
        512
    }
    pub fn intermediate_size() -> usize {
        2048
    }
    pub fn num_hidden_layers() -> usize {
        12
    }
    pub fn num_attention_heads() -> usize {
        8
    }
    pub fn max_position_embeddings() -> usize {
        77
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
    pub fn eos_token_id() -> u32 {
        49407
    }
}

impl ClipTextConfig {
    /// SDXL `text_encoder/config.json`: OpenAI CLIP ViT-L/14 text tower.
    pub fn sdxl_clip_l() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            projection_dim: 768,
            eos_token_id: 2,
        }
    }

    /// SDXL `text_encoder_2/config.json`: OpenCLIP ViT-bigG/14 text tower with its projection.
    pub fn sdxl_clip_g() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 20,
            max_position_embeddings: 77,
            hidden_act: ClipActivation::Gelu,
            layer_norm_eps: 1e-5,
            projection_dim: 1280,
            eos_token_id: 2,
        }
    }

    /// Parses a transformers `config.json`.
    pub fn from_json(json: &str) -> std::result::Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Reads and parses a transformers `config.json`; errors name the file.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| candle_core::Error::Msg(format!("{}: cannot read CLIP config: {e}", path.display())))?;
        Self::from_json(&text)
            .map_err(|e| candle_core::Error::Msg(format!("{}: invalid CLIP text config: {e}", path.display())))
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(candle_core::Error::Msg(format!("invalid CLIP text config: {what}")));
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_hidden_layers == 0 {
            return bad("num_hidden_layers is 0".to_string());
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 {
            return bad("vocab_size and max_position_embeddings must be positive".to_string());
        }
        Ok(())
    }
}

/// Positions to pool at, one per row, by the transformers rule for `eos_token_id` (module docs).
///
/// With `eos_token_id == 2` this is the first occurrence of the row's largest id (for real token ids,
/// the first EOS 49407, also when CLIP-L pads with EOS). Otherwise it is the first position equal to
/// `eos_token_id`; a row without one is an error (transformers would silently pool at position 0).
pub fn eos_positions(rows: &[Vec<i64>], eos_token_id: u32) -> Result<Vec<usize>> {
    rows.iter()
        .enumerate()
        .map(|(r, row)| {
            let pos = if eos_token_id == 2 {
                first_argmax(row)
            } else {
                row.iter().position(|&v| v == i64::from(eos_token_id))
            };
            pos.ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "CLIP text input row {r} has no end-of-text token (id {eos_token_id}) to pool at"
                ))
            })
        })
        .collect()
}

/// Index of the first occurrence of the maximum, as `torch.argmax` (`Iterator::max_by_key` returns the last).
fn first_argmax(row: &[i64]) -> Option<usize> {
    let mut best: Option<(usize, i64)> = None;
    for (i, &v) in row.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The outputs of one encoder for a batch of token ids.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// `hidden_states[-2]`: the penultimate layer's output, before `final_layer_norm`, `[B, T, hidden]`.
    pub penultimate: Tensor,
    /// `final_layer_norm(hidden_states[-1])`, `[B, T, hidden]`; only when the last layer ran (see
    /// [`ClipTextModel::forward`]).
    pub last_hidden: Option<Tensor>,
    /// `text_embeds`: `last_hidden[eos] @ text_projection^T`, `[B, projection_dim]`; only for a model
    /// built `with_projection`.
    pub pooled: Option<Tensor>,
}

/// A CLIP text encoder (`CLIPTextModel`, or `CLIPTextModelWithProjection` when built `with_projection`).
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    cfg: ClipTextConfig,
    dtype: DType,
    device: Device,
}

impl ClipTextModel {
    /// Loads the weights under the checkpoint keys: `text_model.embeddings.{token,position}_embedding`,
    /// `text_model.encoder.layers.{i}.…`, `text_model.final_layer_norm` and, `with_projection`,
    /// `text_projection.weight` (`[projection_dim, hidden]`, no bias). Computation runs in `vb`'s dtype.
    pub fn new(vb: VarBuilder, cfg: &ClipTextConfig, with_projection: bool) -> Result<Self> {
        cfg.validate()?;
        let tm = vb.pp("text_model");
        let emb = tm.pp("embeddings");
        let token_embedding = embedding(cfg.vocab_size, cfg.hidden_size, emb.pp("token_embedding"))?;
        let position_embedding = embedding(cfg.max_position_embeddings, cfg.hidden_size, emb.pp("position_embedding"))?;
        let dims = ClipLayerDims {
            hidden: cfg.hidden_size,
            intermediate: cfg.intermediate_size,
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps,
            act: cfg.hidden_act,
        };
        let layers_vb = tm.pp("encoder").pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(layers_vb.pp(i), dims))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, tm.pp("final_layer_norm"))?;
        let text_projection = if with_projection {
            Some(linear_no_bias(cfg.hidden_size, cfg.projection_dim, vb.pp("text_projection"))?)
        } else {
            None
        };
        Ok(ClipTextModel {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            text_projection,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.cfg
    }

    pub fn has_projection(&self) -> bool {
        self.text_projection.is_some()
    }

    /// What SDXL needs from this encoder: always `penultimate`; with a projection also the last layer,
    /// `last_hidden` and `pooled`. Without a projection the last layer is skipped (both `None`).
    ///
    /// `input_ids`: `[B, T]` integer ids (u32/i64/…), `T <= max_position_embeddings` (77), on any device.
    pub fn forward(&self, input_ids: &Tensor) -> Result<ClipTextOutput> {
        self.run(input_ids, self.has_projection())
    }

    /// Like [`Self::forward`] but always runs the last layer, so `last_hidden` is set for both models.
    pub fn forward_all(&self, input_ids: &Tensor) -> Result<ClipTextOutput> {
        self.run(input_ids, true)
    }

    /// The pooling position of each row of `input_ids` (see [`eos_positions`]).
    pub fn eos_positions(&self, input_ids: &Tensor) -> Result<Vec<usize>> {
        eos_positions(&self.host_ids(input_ids)?, self.cfg.eos_token_id)
    }

    /// Checks `input_ids` (rank, dtype, length, vocabulary) and copies them to the host.
    fn host_ids(&self, input_ids: &Tensor) -> Result<Vec<Vec<i64>>> {
        let msg = |s: String| candle_core::Error::Msg(format!("CLIP text input_ids: {s}"));
        if !input_ids.dtype().is_int() {
            return Err(msg(format!("expected integer token ids, got {:?}", input_ids.dtype())));
        }
        let (b, t) =
            input_ids.dims2().map_err(|_| msg(format!("expected shape [B, T], got {:?}", input_ids.dims())))?;
        if b == 0 || t == 0 || t > self.cfg.max_position_embeddings {
            return Err(msg(format!(
                "shape {:?}: need B >= 1 and 1 <= T <= {} (max_position_embeddings)",
                input_ids.dims(),
                self.cfg.max_position_embeddings
            )));
        }
        let rows = input_ids.to_dtype(DType::I64)?.to_vec2::<i64>()?;
        for (r, row) in rows.iter().enumerate() {
            if let Some((p, id)) =
                row.iter().enumerate().find(|(_, &id)| id < 0 || id as u64 >= self.cfg.vocab_size as u64)
            {
                return Err(msg(format!(
                    "token id {id} at row {r}, position {p} is outside the vocabulary (size {})",
                    self.cfg.vocab_size
                )));
            }
        }
        Ok(rows)
    }

    fn run(&self, input_ids: &Tensor, with_last: bool) -> Result<ClipTextOutput> {
        let rows = self.host_ids(input_ids)?;
        let (b, t) = (rows.len(), rows[0].len());
        let flat: Vec<u32> = rows.iter().flatten().map(|&id| id as u32).collect();
        let ids = Tensor::from_vec(flat, (b, t), &self.device)?;

        let positions = self.position_embedding.embeddings().narrow(0, 0, t)?;
        let mut h = self.token_embedding.forward(&ids)?.broadcast_add(&positions)?;
        let mask = causal_mask(t, self.dtype, &self.device)?;

        let n = self.layers.len();
        for layer in &self.layers[..n - 1] {
            h = layer.forward(&h, Some(&mask))?;
        }
        let penultimate = h;
        if !with_last {
            return Ok(ClipTextOutput { penultimate, last_hidden: None, pooled: None });
        }
        let last = self.final_layer_norm.forward(&self.layers[n - 1].forward(&penultimate, Some(&mask))?)?;
        let pooled = match &self.text_projection {
            Some(proj) => {
                let eos = eos_positions(&rows, self.cfg.eos_token_id)?;
                let index: Vec<u32> = eos.iter().enumerate().map(|(r, &p)| (r * t + p) as u32).collect();
                let index = Tensor::from_vec(index, b, &self.device)?;
                let at_eos = last.reshape((b * t, self.cfg.hidden_size))?.index_select(&index, 0)?;
                Some(proj.forward(&at_eos)?)
            }
            None => None,
        };
        Ok(ClipTextOutput { penultimate, last_hidden: Some(last), pooled })
    }
}

/// Additive causal mask `[T, T]`: 0 on and below the diagonal, -inf above.
fn causal_mask(t: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(m, (t, t), device)?.to_dtype(dtype)
}

/// SDXL's text conditioning from encoder 1 (`l`, CLIP-L) and encoder 2 (`g`, CLIP-G with projection):
/// `prompt_embeds = concat(l.penultimate, g.penultimate)` on the channel axis, `[B, T, hidden_l + hidden_g]`,
/// and `pooled = g.pooled`, `[B, projection_dim_g]`.
pub fn sdxl_text_embeddings(l: &ClipTextOutput, g: &ClipTextOutput) -> Result<(Tensor, Tensor)> {
    let pooled = g.pooled.clone().ok_or_else(|| {
        candle_core::Error::Msg("SDXL text encoder 2 output has no pooled embedding (build it with_projection)".into())
    })?;
    let (lb, lt, _) = l.penultimate.dims3()?;
    let (gb, gt, _) = g.penultimate.dims3()?;
    if (lb, lt) != (gb, gt) || l.penultimate.dtype() != g.penultimate.dtype() {
        return Err(candle_core::Error::Msg(format!(
            "SDXL text encoders disagree: encoder 1 gave {:?} {:?}, encoder 2 gave {:?} {:?}",
            l.penultimate.dims(),
            l.penultimate.dtype(),
            g.penultimate.dims(),
            g.penultimate.dtype()
        )));
    }
    let prompt_embeds = Tensor::cat(&[&l.penultimate, &g.penultimate], D::Minus1)?;
    Ok((prompt_embeds, pooled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_rule_follows_the_config() {
        // CLIP-L style: EOS padding; the legacy rule takes the first maximum.
        let l = vec![vec![998, 5, 2, 999, 999, 999]];
        assert_eq!(eos_positions(&l, 2).unwrap(), vec![3]);
        // the "== eos_token_id" rule with id 2 would pick position 2; with the real id it picks the first EOS.
        assert_eq!(eos_positions(&l, 999).unwrap(), vec![3]);
        let g = vec![vec![998, 7, 999, 0, 0], vec![998, 999, 0, 0, 0]];
        assert_eq!(eos_positions(&g, 2).unwrap(), vec![2, 1]);
        assert!(eos_positions(&[vec![998, 1, 0]], 999).unwrap_err().to_string().contains("row 0"));
    }

    #[test]
    fn config_parses_and_validates() {
        let cfg = ClipTextConfig::from_json(r#"{"hidden_act":"gelu","hidden_size":1280,"extra":1}"#).unwrap();
        assert_eq!(cfg.hidden_act, ClipActivation::Gelu);
        assert_eq!((cfg.eos_token_id, cfg.max_position_embeddings), (49407, 77));
        assert!(ClipTextConfig::from_json(r#"{"hidden_act":"relu"}"#).is_err());
        let bad = ClipTextConfig { num_attention_heads: 7, ..ClipTextConfig::sdxl_clip_l() };
        assert!(bad.validate().unwrap_err().to_string().contains("not a multiple"));
        assert!(ClipTextConfig::sdxl_clip_g().validate().is_ok());
    }

    #[test]
    fn causal_mask_hides_the_future() {
        let m = causal_mask(3, DType::F32, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m[0][0], 0.0);
        assert!(m[0][1].is_infinite() && m[1][2].is_infinite());
        assert_eq!(m[2], vec![0.0, 0.0, 0.0]);
    }
}
