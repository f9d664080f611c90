//! Loading SDXL from a models folder and generating one image from a prompt: tokenizer → both
//! text encoders → denoising loop → VAE → RGB image (spec §5.3 without the character adapter).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::noise::SeededNormal;
use super::storymaker::{with_image_tokens, ImageTokens};
use super::txt2img::{denoise_with_control, Control, PipelineError, SdxlConditioning, StepControl, StepInfo};
use crate::models::clip_text::{sdxl_text_embeddings, ClipTextConfig, ClipTextModel};
use crate::models::tokenizer::{ClipTokenizer, Padding};
use crate::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::models::vae::{raw_to_rgb_images, AutoencoderKlDecoder, VaeConfig};
use crate::sampling::{build_scheduler, Guidance, SchedulerConfig, SchedulerKind};
use crate::weights::diffusers::{component_config, component_weight_files};
use crate::weights::single_file::SingleFileSdxl;
use crate::weights::store::TensorStore;
use crate::weights::style_lora::{LoraComponent, LoraMergedStore, StyleLora};

/// Everything a txt2img generation needs, loaded once and kept on the device across jobs.
pub struct SdxlModels {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub text_encoder_2: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKlDecoder,
    pub scheduler_config: SchedulerConfig,
    pub device: Device,
    pub dtype: DType,
    /// Where the weights came from (recorded on every variant).
    pub source: PathBuf,
    /// The style LoRAs merged into the UNet and text encoders, with their weights.
    pub style_loras: Vec<(PathBuf, f64)>,
}

/// Style LoRAs to merge at load time (weight 1.0 = as trained).
pub type StyleLoras<'a> = &'a [(StyleLora, f64)];

/// Opens `store` for `component`, merging the style LoRAs into it when there are any.
fn with_loras(
    store: TensorStore,
    component: LoraComponent,
    loras: StyleLoras,
    dtype: DType,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<candle_nn::VarBuilder<'static>, PipelineError> {
    if loras.is_empty() {
        return Ok(store.into_var_builder(dtype, device));
    }
    let refs: Vec<(&StyleLora, f64)> = loras.iter().map(|(l, w)| (l, *w)).collect();
    let merged = LoraMergedStore::new(store, component, &refs).map_err(err)?;
    for w in merged.warnings() {
        progress(w);
    }
    Ok(merged.into_var_builder(dtype, device))
}

fn lora_record(loras: StyleLoras) -> Vec<(PathBuf, f64)> {
    loras.iter().map(|(l, w)| (l.path().to_path_buf(), *w)).collect()
}

fn err(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Input(e.to_string())
}

impl SdxlModels {
    /// Loads a diffusers SDXL folder (`unet/`, `vae/`, `text_encoder/`, `text_encoder_2/`,
    /// `tokenizer/`, `scheduler/`). `progress` receives a line per component (the UI shows it).
    pub fn load_diffusers(
        dir: &Path,
        device: &Device,
        dtype: DType,
        loras: StyleLoras,
        progress: &mut dyn FnMut(&str),
    ) -> Result<SdxlModels, PipelineError> {
        let store = |sub: &str, base: &str| -> Result<TensorStore, PipelineError> {
            let files = component_weight_files(&dir.join(sub), base).map_err(err)?;
            TensorStore::open(&files).map_err(err)
        };
        progress("tokenizer");
        let tok_dir = dir.join("tokenizer");
        let tokenizer = if tok_dir.is_dir() { ClipTokenizer::from_file(&tok_dir) } else { ClipTokenizer::bundled() }
            .map_err(err)?;
        progress("text encoders");
        let c1 = ClipTextConfig::from_json(&component_config(&dir.join("text_encoder")).map_err(err)?).map_err(err)?;
        let c2 =
            ClipTextConfig::from_json(&component_config(&dir.join("text_encoder_2")).map_err(err)?).map_err(err)?;
        let vb1 =
            with_loras(store("text_encoder", "model")?, LoraComponent::TextEncoder, loras, dtype, device, progress)?;
        let text_encoder = ClipTextModel::new(vb1, &c1, false)?;
        let vb2 =
            with_loras(store("text_encoder_2", "model")?, LoraComponent::TextEncoder2, loras, dtype, device, progress)?;
        let text_encoder_2 = ClipTextModel::new(vb2, &c2, true)?;
        progress("UNet");
        let ucfg = UNetConfig::from_json(component_config(&dir.join("unet")).map_err(err)?.as_bytes()).map_err(err)?;
        let vbu =
            with_loras(store("unet", "diffusion_pytorch_model")?, LoraComponent::Unet, loras, dtype, device, progress)?;
        let unet = UNet2DConditionModel::new(vbu, &ucfg)?;
        progress("VAE");
        let vcfg = VaeConfig::from_json(&component_config(&dir.join("vae")).map_err(err)?).map_err(err)?;
        let vae =
            AutoencoderKlDecoder::new(store("vae", "diffusion_pytorch_model")?.into_var_builder(dtype, device), &vcfg)?;
        let sched_path = dir.join("scheduler").join("scheduler_config.json");
        let scheduler_config = SchedulerConfig::from_json_file(&sched_path).map_err(err)?;
        Ok(SdxlModels {
            tokenizer,
            text_encoder,
            text_encoder_2,
            unet,
            vae,
            scheduler_config,
            device: device.clone(),
            dtype,
            source: dir.to_path_buf(),
            style_loras: lora_record(loras),
        })
    }

    /// Loads a single-file SDXL checkpoint (original Stability key names, e.g.
    /// `sd_xl_base_1.0.safetensors`) with SDXL's configs, the bundled tokenizer and SDXL's
    /// scheduler config.
    pub fn load_single_file(
        path: &Path,
        device: &Device,
        dtype: DType,
        loras: StyleLoras,
        progress: &mut dyn FnMut(&str),
    ) -> Result<SdxlModels, PipelineError> {
        let configs = SingleFileConfigs {
            unet: UNetConfig::sdxl_base(),
            clip_l: ClipTextConfig::sdxl_clip_l(),
            clip_g: ClipTextConfig::sdxl_clip_g(),
            vae: VaeConfig::sdxl(),
            scheduler: SchedulerConfig::sdxl(),
        };
        Self::load_single_file_with(path, &configs, device, dtype, loras, progress)
    }

    /// [`Self::load_single_file`] with explicit base configs (sizes are still read from the
    /// tensors where they can be; head counts cannot).
    pub fn load_single_file_with(
        path: &Path,
        configs: &SingleFileConfigs,
        device: &Device,
        dtype: DType,
        loras: StyleLoras,
        progress: &mut dyn FnMut(&str),
    ) -> Result<SdxlModels, PipelineError> {
        let file = SingleFileSdxl::open(path).map_err(err)?;
        let missing = file.missing();
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|c| c.label()).collect();
            return Err(PipelineError::Input(format!(
                "{} is not a complete SDXL checkpoint: it has no {}",
                path.display(),
                names.join(", ")
            )));
        }
        progress("tokenizer");
        let tokenizer = ClipTokenizer::bundled().map_err(err)?;
        progress("text encoders");
        let c1 = file.text_encoder_config(&configs.clip_l).map_err(err)?;
        let c2 = file.text_encoder_2_config(&configs.clip_g).map_err(err)?;
        let vb1 = with_loras(
            file.text_encoder_store().map_err(err)?,
            LoraComponent::TextEncoder,
            loras,
            dtype,
            device,
            progress,
        )?;
        let text_encoder = ClipTextModel::new(vb1, &c1, false)?;
        let vb2 = with_loras(
            file.text_encoder_2_store().map_err(err)?,
            LoraComponent::TextEncoder2,
            loras,
            dtype,
            device,
            progress,
        )?;
        let text_encoder_2 = ClipTextModel::new(vb2, &c2, true)?;
        progress("UNet");
        let vbu = with_loras(
            file.unet_store(&configs.unet).map_err(err)?,
            LoraComponent::Unet,
            loras,
            dtype,
            device,
            progress,
        )?;
        let unet = UNet2DConditionModel::new(vbu, &configs.unet)?;
        progress("VAE");
        let vcfg = file.vae_config(&configs.vae).map_err(err)?;
        let vae = AutoencoderKlDecoder::new(file.vae(&vcfg, dtype, device).map_err(err)?, &vcfg)?;
        Ok(SdxlModels {
            tokenizer,
            text_encoder,
            text_encoder_2,
            unet,
            vae,
            scheduler_config: configs.scheduler.clone(),
            device: device.clone(),
            dtype,
            source: path.to_path_buf(),
            style_loras: lora_record(loras),
        })
    }

    /// `prompt_embeds [1,77,C]` and the pooled embedding `[1,P]` of one prompt (spec §6).
    pub fn encode_prompt(&self, prompt: &str) -> Result<(Tensor, Tensor), PipelineError> {
        let a = self.tokenizer.encode(prompt, Padding::Eos).map_err(err)?;
        let b = self.tokenizer.encode(prompt, Padding::Zero).map_err(err)?;
        let ids = |v: Vec<u32>| Tensor::from_vec(v, (1, 77), &self.device);
        let l = self.text_encoder.forward(&ids(a.ids)?)?;
        let g = self.text_encoder_2.forward(&ids(b.ids)?)?;
        Ok(sdxl_text_embeddings(&l, &g)?)
    }
}

/// Base configurations for a single-file checkpoint (SDXL's by default).
#[derive(Debug, Clone)]
pub struct SingleFileConfigs {
    pub unet: UNetConfig,
    pub clip_l: ClipTextConfig,
    pub clip_g: ClipTextConfig,
    pub vae: VaeConfig,
    pub scheduler: SchedulerConfig,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Txt2ImgRequest {
    pub prompt: String,
    /// Empty: zero embeddings, as diffusers does when no negative prompt is given
    /// (`force_zeros_for_empty_prompt`).
    pub negative_prompt: String,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: SchedulerKind,
}

pub struct Generated {
    pub image: image::RgbImage,
    pub latents: Tensor,
}

/// Generates one image. `on_step` sees every step (progress, previews) and may cancel.
pub fn generate(
    models: &SdxlModels,
    req: &Txt2ImgRequest,
    on_step: &mut dyn FnMut(StepInfo) -> StepControl,
) -> Result<Generated, PipelineError> {
    generate_conditioned(models, req, None, None, on_step)
}

/// [`generate`] with StoryMaker image tokens appended to the text context of each branch.
pub fn generate_conditioned(
    models: &SdxlModels,
    req: &Txt2ImgRequest,
    image_tokens: Option<&ImageTokens>,
    control: Option<&Control>,
    on_step: &mut dyn FnMut(StepInfo) -> StepControl,
) -> Result<Generated, PipelineError> {
    let factor = models.vae.config().upscale_factor();
    if !req.width.is_multiple_of(factor) || !req.height.is_multiple_of(factor) || req.width == 0 || req.height == 0 {
        return Err(PipelineError::Input(format!("the image size must be a positive multiple of {factor} pixels")));
    }
    if req.steps == 0 {
        return Err(PipelineError::Input("at least one step is needed".into()));
    }
    let guidance = Guidance::new(req.guidance);
    let (embeds, pooled) = models.encode_prompt(&req.prompt)?;
    let (neg_embeds, neg_pooled) = if !guidance.is_active() || req.negative_prompt.trim().is_empty() {
        (embeds.zeros_like()?, pooled.zeros_like()?)
    } else {
        models.encode_prompt(&req.negative_prompt)?
    };
    let mut cond = SdxlConditioning {
        prompt_embeds: embeds,
        pooled,
        negative_prompt_embeds: neg_embeds,
        negative_pooled: neg_pooled,
    };
    if let Some(tokens) = image_tokens {
        cond = with_image_tokens(&cond, tokens)?;
    }
    let mut rng = SeededNormal::new(req.seed);
    let shape = (1, models.unet.config().in_channels, req.height / factor, req.width / factor);
    let init = rng.tensor(&shape.into(), models.dtype, &models.device)?;
    let mut sched = build_scheduler(req.scheduler, &models.scheduler_config, req.steps)?;
    let latents = denoise_with_control(
        &models.unet,
        sched.as_mut(),
        &init,
        &cond,
        guidance,
        (req.height, req.width),
        &mut rng,
        control,
        on_step,
    )?;
    let raw = models.vae.decode(&latents)?;
    let image = raw_to_rgb_images(&raw)?.into_iter().next().ok_or_else(|| err("the VAE returned no image"))?;
    Ok(Generated { image, latents })
}
