//! StoryMaker generation (reference spec §5): the character adapter on top of the SDXL pipeline.
//!
//! * loading (§5.1): CLIP ViT-H/14 image encoder + `mask.bin` (PPR + the 140 attention
//!   processors attached to the UNet's hooks);
//! * per character, once per content (§1.3–1.4, §5.3 step 3): white-background crop and aligned
//!   face → CLIP `hidden_states[-2]`, plus the ArcFace identity → [`CharacterEmbedding`];
//! * per generation: PPR → image tokens (background first), unconditional tokens from zero features
//!   exactly as the reference (§2.5), appended after the 77 text tokens of both CFG branches.
//!
//! Where the reference crashes we do better (§5.2): guidance ≤ 1 runs without CFG (cond tokens
//! only), sizes always have values, an empty mask or a face outside the photo is an error message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::sdxl::{generate_conditioned, Generated, SdxlModels, Txt2ImgRequest};
use super::txt2img::{Control, PipelineError, SdxlConditioning, StepControl, StepInfo};
use crate::imaging::character::{character_crop, clip_pixels, resize_bicubic_pil, CLIP_SIZE};
use crate::imaging::face_align::{aligned_face, check_face_in_mask};
use crate::imaging::mask::Mask;
use crate::models::adapter::{attach_ip_adapter, processor_names, AdapterScales, PositionalPerceiverResampler};
use crate::models::clip_vision::{ClipVisionConfig, ClipVisionModel};
use crate::models::unet::UNet2DConditionModel;
use crate::weights::adapter_bin::load_adapter;
use crate::weights::diffusers::component_weight_files;
use crate::weights::store::TensorStore;

/// Where the adapter's two models live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterFiles {
    /// StoryMaker's `mask.bin` (or its `.safetensors` conversion).
    pub adapter: PathBuf,
    /// The CLIP ViT-H/14 image encoder folder (transformers layout: `config.json` +
    /// `model.safetensors`), e.g. `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` or IP-Adapter's
    /// `models/image_encoder`.
    pub image_encoder: PathBuf,
}

/// What the weight shapes cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterOptions {
    /// Head width of the PPR perceivers (64 in the released model; spec §2.1).
    pub ppr_dim_head: usize,
}

impl Default for AdapterOptions {
    fn default() -> Self {
        AdapterOptions { ppr_dim_head: crate::models::adapter::resampler::DIM_HEAD }
    }
}

/// One character's adapter inputs, computed once per character content and cached by the
/// caller (prompt or seed changes never recompute them).
#[derive(Debug, Clone)]
pub struct CharacterEmbedding {
    /// The L2-normalised ArcFace identity `[1, 512]`.
    pub id: Tensor,
    /// CLIP `hidden_states[-2]` of the white-background crop (or the clothing image) `[1, 257, 1280]`.
    pub clip_crop: Tensor,
    /// CLIP `hidden_states[-2]` of the aligned 224 face crop `[1, 257, 1280]`.
    pub clip_face: Tensor,
}

/// What a character is made of, before the models see it.
pub struct CharacterInput<'a> {
    /// The full reference photo (the face is aligned from it, spec §1.4).
    pub photo: &'a RgbImage,
    /// The character's mask, same size as the photo.
    pub mask: &'a Mask,
    /// The ArcFace identity (512 values for buffalo_l); normalised here.
    pub identity: &'a [f32],
    /// The five face keypoints in photo pixels (eyes, nose, mouth corners).
    pub keypoints: [[f32; 2]; 5],
    /// Clothing swap (spec §5.5): this image replaces the masked crop (resized to 224 with no mask).
    pub cloth: Option<&'a RgbImage>,
}

/// One character slot of a generation.
#[derive(Debug, Clone)]
pub struct SlotCondition {
    pub character: Arc<CharacterEmbedding>,
    /// "ID only": the character embedding E2 is zeroed in both CFG branches (spec §5.5), so only the
    /// face identity carries over (clothes and hair come from the prompt).
    pub id_only: bool,
    /// Character interpolation: `(other, w)` gives `(1 - w) · this + w · other`, both computed at
    /// this slot's position (paper Fig. 5f; the released code has no such mode, see the module doc
    /// of `models::adapter`).
    pub blend: Option<(Arc<CharacterEmbedding>, f32)>,
}

impl SlotCondition {
    pub fn new(character: Arc<CharacterEmbedding>) -> SlotCondition {
        SlotCondition { character, id_only: false, blend: None }
    }
}

/// The image tokens of both CFG branches, `[1, 20 (N + 1), C]` each.
#[derive(Debug, Clone)]
pub struct ImageTokens {
    pub cond: Tensor,
    pub uncond: Tensor,
}

/// The StoryMaker adapter, loaded and attached to a UNet.
pub struct StoryMakerAdapter {
    clip: ClipVisionModel,
    ppr: PositionalPerceiverResampler,
    scales: Arc<AdapterScales>,
    processors: usize,
    device: Device,
    dtype: DType,
    files: AdapterFiles,
}

fn input(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Input(e.to_string())
}

impl StoryMakerAdapter {
    /// Loads CLIP and `mask.bin` and attaches the processors to `unet` (spec §5.1). The scales start
    /// at 0.8 / 0.8 like the reference's `load_storymaker_adapter`.
    pub fn load(
        files: &AdapterFiles,
        unet: &mut UNet2DConditionModel,
        device: &Device,
        dtype: DType,
        opts: AdapterOptions,
    ) -> Result<StoryMakerAdapter, PipelineError> {
        let clip = load_image_encoder(&files.image_encoder, device, dtype)?;
        let weights = load_adapter(&files.adapter, device).map_err(input)?;
        let named = |e: candle_core::Error| {
            PipelineError::Input(format!("StoryMaker adapter {}: {e}", files.adapter.display()))
        };
        let ppr_vb = VarBuilder::from_tensors(weights.image_proj_model, dtype, device);
        let ppr = PositionalPerceiverResampler::with_dim_head(ppr_vb, opts.ppr_dim_head).map_err(named)?;
        let clip_dim = clip.config().hidden_size;
        if ppr.config().clip_dim != clip_dim {
            return Err(PipelineError::Input(format!(
                "the StoryMaker adapter expects CLIP features of width {}, but the image encoder in {} has \
                 width {clip_dim} (StoryMaker needs CLIP ViT-H/14)",
                ppr.config().clip_dim,
                files.image_encoder.display()
            )));
        }
        if ppr.config().dim != unet.config().cross_attention_dim {
            return Err(PipelineError::Input(format!(
                "the StoryMaker adapter makes tokens of width {}, but this UNet's cross-attention width is {} \
                 (StoryMaker is an SDXL adapter)",
                ppr.config().dim,
                unet.config().cross_attention_dim
            )));
        }
        let expected = processor_names(unet.config()).len();
        let in_file = distinct_processors(weights.ip_adapter.keys());
        if in_file != expected {
            return Err(PipelineError::Input(format!(
                "the StoryMaker adapter {} has attention processors 0..{in_file} but this UNet has {expected} \
                 attention layers (it must be an SDXL UNet)",
                files.adapter.display()
            )));
        }
        let scales = Arc::new(AdapterScales::default());
        let ip_vb = VarBuilder::from_tensors(weights.ip_adapter, dtype, device);
        let processors = attach_ip_adapter(unet, ip_vb, scales.clone()).map_err(named)?;
        Ok(StoryMakerAdapter { clip, ppr, scales, processors, device: device.clone(), dtype, files: files.clone() })
    }

    pub fn files(&self) -> &AdapterFiles {
        &self.files
    }

    /// Number of attention processors attached (140 for SDXL).
    pub fn processors(&self) -> usize {
        self.processors
    }

    pub fn resampler(&self) -> &PositionalPerceiverResampler {
        &self.ppr
    }

    pub fn image_encoder(&self) -> &ClipVisionModel {
        &self.clip
    }

    /// Sets `ip_scale` / `lora_scale` on all processors (spec §5.3 step 1).
    pub fn set_scales(&self, ip: f32, lora: f32) {
        self.scales.set(ip, lora);
    }

    /// CLIP `hidden_states[-2]` of 224x224 images, `[B, 257, E]`.
    pub fn clip_features(&self, images: &[&RgbImage]) -> Result<Tensor, PipelineError> {
        let size = self.clip.config().image_size;
        let mut rows = Vec::with_capacity(images.len());
        for img in images {
            if img.dimensions() != (size as u32, size as u32) {
                return Err(PipelineError::Input(format!(
                    "CLIP input must be {size}x{size}, got {}x{}",
                    img.width(),
                    img.height()
                )));
            }
            rows.push(Tensor::from_vec(clip_pixels(img), (1, 3, size, size), &self.device)?);
        }
        let px = Tensor::cat(&rows, 0)?.to_dtype(self.dtype)?;
        Ok(self.clip.forward_penultimate(&px)?.penultimate)
    }

    /// Preprocesses one character and runs CLIP on its crop and aligned face (spec §1.3–1.4,
    /// §5.3 step 3; with `cloth`, §5.5).
    pub fn embed_character(&self, c: &CharacterInput) -> Result<CharacterEmbedding, PipelineError> {
        let id_dim = self.ppr.config().id_dim;
        if c.identity.len() != id_dim {
            return Err(PipelineError::Input(format!(
                "the face identity has {} values; this adapter expects {id_dim} (an ArcFace embedding)",
                c.identity.len()
            )));
        }
        let norm = c.identity.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        if !norm.is_finite() || norm < 1e-6 {
            return Err(PipelineError::Input("the face identity is zero or not a number; redo the face".into()));
        }
        let id: Vec<f32> = c.identity.iter().map(|v| (f64::from(*v) / norm) as f32).collect();
        let id = Tensor::from_vec(id, (1, id_dim), &self.device)?.to_dtype(self.dtype)?;
        if self.clip.config().image_size != CLIP_SIZE as usize {
            return Err(PipelineError::Input(format!(
                "StoryMaker feeds CLIP {CLIP_SIZE}x{CLIP_SIZE} images; this image encoder takes {}",
                self.clip.config().image_size
            )));
        }
        let crop = match c.cloth {
            // Reference: `cloth.resize((224, 224))`, aspect ignored, no mask, no white background.
            Some(cloth) => resize_bicubic_pil(cloth, CLIP_SIZE, CLIP_SIZE),
            None => character_crop(c.photo, c.mask).map_err(input)?,
        };
        check_face_in_mask(&c.keypoints, c.mask).map_err(input)?;
        let face = aligned_face(c.photo, &c.keypoints, CLIP_SIZE).map_err(input)?;
        let clip_crop = self.clip_features(&[&crop])?;
        let clip_face = self.clip_features(&[&face])?;
        Ok(CharacterEmbedding { id, clip_crop, clip_face })
    }

    /// The PPR image tokens of both CFG branches for 1–3 slots (spec §5.3 step 3): cond from the
    /// characters, uncond from zero features of the same shapes (the learned background included,
    /// as the reference computes it, §2.5).
    pub fn image_tokens(&self, slots: &[SlotCondition]) -> Result<ImageTokens, PipelineError> {
        let max = self.ppr.config().max_persons;
        if slots.is_empty() || slots.len() > max {
            return Err(PipelineError::Input(format!(
                "{} characters in one panel; the adapter takes 1 to {}",
                slots.len(),
                max.min(2)
            )));
        }
        // Rows: each slot's character, then (for blends) the other character at the same slot.
        let mut rows: Vec<(&CharacterEmbedding, usize, bool)> = Vec::new();
        for (k, s) in slots.iter().enumerate() {
            rows.push((&s.character, k, !s.id_only));
            if let Some((other, _)) = &s.blend {
                rows.push((other, k, !s.id_only));
            }
        }
        let cat = |f: &dyn Fn(&CharacterEmbedding) -> &Tensor| -> candle_core::Result<Tensor> {
            Tensor::cat(&rows.iter().map(|r| f(r.0)).collect::<Vec<_>>(), 0)
        };
        let (ids, faces, crops) = (cat(&|e| &e.id)?, cat(&|e| &e.clip_face)?, cat(&|e| &e.clip_crop)?);
        let slot_of: Vec<usize> = rows.iter().map(|r| r.1).collect();
        let keep: Vec<bool> = rows.iter().map(|r| r.2).collect();
        let out = self.ppr.characters(&ids, &faces, &crops, &slot_of, &keep)?;
        let mut parts = vec![self.ppr.background().to_dtype(out.dtype())?];
        let mut r = 0;
        for s in slots {
            let mine = out.narrow(0, r, 1)?;
            r += 1;
            parts.push(match &s.blend {
                Some((_, w)) => {
                    let other = out.narrow(0, r, 1)?;
                    r += 1;
                    ((mine * (1.0 - f64::from(*w)))? + (other * f64::from(*w))?)?
                }
                None => mine,
            });
        }
        let cond = flatten_tokens(&Tensor::cat(&parts, 0)?)?;

        // Unconditional: the module on zeros_like(id / crop / face), one row per slot.
        let n = slots.len();
        let zeros_like_rows = |t: &Tensor| -> candle_core::Result<Tensor> {
            let mut dims = t.dims().to_vec();
            dims[0] = n;
            Tensor::zeros(dims, t.dtype(), t.device())
        };
        let slot_ids: Vec<usize> = (0..n).collect();
        let keep_u: Vec<bool> = slots.iter().map(|s| !s.id_only).collect();
        let unc = self.ppr.characters(
            &zeros_like_rows(&ids)?,
            &zeros_like_rows(&faces)?,
            &zeros_like_rows(&crops)?,
            &slot_ids,
            &keep_u,
        )?;
        let bg = self.ppr.background().to_dtype(unc.dtype())?;
        let uncond = flatten_tokens(&Tensor::cat(&[&bg, &unc], 0)?)?;
        Ok(ImageTokens { cond, uncond })
    }
}

/// `[N + 1, 20, C]` → `[1, 20 (N + 1), C]` (the reference's `view(1, B*C, D)`).
fn flatten_tokens(t: &Tensor) -> candle_core::Result<Tensor> {
    let (n, k, c) = t.dims3()?;
    t.reshape((1, n * k, c))
}

/// Number of distinct leading processor indices among `ip_adapter` keys (`{k}.to_q_lora...`).
fn distinct_processors<'a>(keys: impl Iterator<Item = &'a String>) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for k in keys {
        if let Some(i) = k.split('.').next().and_then(|s| s.parse::<usize>().ok()) {
            seen.insert(i);
        }
    }
    seen.len()
}

/// Loads a transformers `CLIPVisionModel(WithProjection)` folder.
pub fn load_image_encoder(dir: &Path, device: &Device, dtype: DType) -> Result<ClipVisionModel, PipelineError> {
    let cfg_path = dir.join("config.json");
    let cfg = ClipVisionConfig::from_json_file(&cfg_path)
        .map_err(|e| PipelineError::Input(format!("CLIP image encoder config {}: {e}", cfg_path.display())))?;
    let files = component_weight_files(dir, "model").map_err(input)?;
    let vb = TensorStore::open(&files).map_err(input)?.into_var_builder(dtype, device);
    ClipVisionModel::new(vb, &cfg, false)
        .map_err(|e| PipelineError::Input(format!("CLIP image encoder {}: {e}", dir.display())))
}

/// Text conditioning with the image tokens appended after the 77 text tokens of each branch
/// (spec §5.3 step 7).
pub fn with_image_tokens(text: &SdxlConditioning, tokens: &ImageTokens) -> Result<SdxlConditioning, PipelineError> {
    let dt = text.prompt_embeds.dtype();
    Ok(SdxlConditioning {
        prompt_embeds: Tensor::cat(&[&text.prompt_embeds, &tokens.cond.to_dtype(dt)?], 1)?,
        pooled: text.pooled.clone(),
        negative_prompt_embeds: Tensor::cat(&[&text.negative_prompt_embeds, &tokens.uncond.to_dtype(dt)?], 1)?,
        negative_pooled: text.negative_pooled.clone(),
    })
}

/// One StoryMaker generation: prompt, negative, 0–2 prepared characters, seed, size, steps,
/// guidance and the two scales → image, with the per-step callback. With no character the adapter
/// is neutralised (both scales 0), which is exactly plain SDXL.
pub fn generate_story(
    models: &SdxlModels,
    adapter: &StoryMakerAdapter,
    req: &Txt2ImgRequest,
    slots: &[SlotCondition],
    scales: (f32, f32),
    control: Option<&Control>,
    on_step: &mut dyn FnMut(StepInfo) -> StepControl,
) -> Result<Generated, PipelineError> {
    if slots.is_empty() {
        adapter.set_scales(0.0, 0.0);
        return generate_conditioned(models, req, None, control, on_step);
    }
    let tokens = adapter.image_tokens(slots)?;
    adapter.set_scales(scales.0, scales.1);
    generate_conditioned(models, req, Some(&tokens), control, on_step)
}
