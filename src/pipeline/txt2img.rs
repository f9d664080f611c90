//! The SDXL text-to-image denoising loop, mirroring `StableDiffusionXLPipeline.__call__` (spec
//! §5.3 steps 6–9; tools/parity/README.md "End-to-end: the exact sequence").

use candle_core::{DType, Device, Tensor};
use thiserror::Error;

use crate::models::controlnet::{ControlGuidance, ControlNetInput, ControlNetModel};
use crate::models::unet::{UNet2DConditionModel, UNetInput};
use crate::sampling::{Guidance, NoiseSource, SamplingError, Scheduler};

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Model(#[from] candle_core::Error),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error("{0}")]
    Input(String),
}

/// Text conditioning of one image: prompt tokens and pooled embedding, and the negative prompt's
/// (used only with classifier-free guidance).
#[derive(Debug, Clone)]
pub struct SdxlConditioning {
    /// `[1, S, C]`: 77 text tokens (+ adapter image tokens for StoryMaker).
    pub prompt_embeds: Tensor,
    /// `[1, P]` pooled CLIP-G embedding.
    pub pooled: Tensor,
    pub negative_prompt_embeds: Tensor,
    pub negative_pooled: Tensor,
}

/// What the per-step callback sees.
pub struct StepInfo<'a> {
    /// 1-based number of the step just finished.
    pub step: usize,
    pub total: usize,
    pub latents: &'a Tensor,
    /// The scheduler's x0 prediction of this step (cheap live previews).
    pub pred_original: Option<&'a Tensor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepControl {
    Continue,
    Cancel,
}

/// `add_time_ids` for `rows` rows: original size, crop top-left (0, 0), target size — all equal
/// to the generated size, as the pipeline does by default (spec §6 micro-conditioning).
pub fn sdxl_time_ids(
    height: usize,
    width: usize,
    rows: usize,
    dtype: DType,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let (h, w) = (height as f32, width as f32);
    let row = [h, w, 0.0, 0.0, h, w];
    let data: Vec<f32> = (0..rows).flat_map(|_| row).collect();
    Tensor::from_vec(data, (rows, 6), dev)?.to_dtype(dtype)
}

/// Pose guidance for one generation: the ControlNet, its conditioning image `[1, 3, H, W]` in
/// [0, 1] (the rendered OpenPose skeletons) and its scale / step window.
pub struct Control<'a> {
    pub model: &'a ControlNetModel,
    pub image: Tensor,
    pub guidance: ControlGuidance,
}

/// Number of text tokens at the start of every context (the ControlNet sees only these; the
/// StoryMaker image tokens after them are for the UNet's adapter, spec §3.4).
const TEXT_TOKENS: usize = 77;

/// Runs the denoising loop from unit-variance `init_noise` `[1, 4, H/8, W/8]` and returns the
/// final latents (scheduler space; divide by the VAE scaling factor to decode).
/// `on_step` runs after every step and can cancel (the loop stops before the next UNet call).
#[allow(clippy::too_many_arguments)]
pub fn denoise(
    unet: &UNet2DConditionModel,
    scheduler: &mut dyn Scheduler,
    init_noise: &Tensor,
    cond: &SdxlConditioning,
    guidance: Guidance,
    image_size: (usize, usize),
    noise: &mut dyn NoiseSource,
    on_step: &mut dyn FnMut(StepInfo) -> StepControl,
) -> Result<Tensor, PipelineError> {
    denoise_with_control(unet, scheduler, init_noise, cond, guidance, image_size, noise, None, on_step)
}

/// [`denoise`] with optional pose guidance: at each step where the window is active the
/// ControlNet runs on the same batch (text tokens only) and its residuals go into the UNet;
/// elsewhere it is skipped entirely.
#[allow(clippy::too_many_arguments)]
pub fn denoise_with_control(
    unet: &UNet2DConditionModel,
    scheduler: &mut dyn Scheduler,
    init_noise: &Tensor,
    cond: &SdxlConditioning,
    guidance: Guidance,
    image_size: (usize, usize),
    noise: &mut dyn NoiseSource,
    control: Option<&Control>,
    on_step: &mut dyn FnMut(StepInfo) -> StepControl,
) -> Result<Tensor, PipelineError> {
    let dtype = init_noise.dtype();
    let dev = init_noise.device();
    let rows = guidance.batch_multiplier();
    let context = guidance.batch(&cond.negative_prompt_embeds, &cond.prompt_embeds)?.to_dtype(dtype)?;
    let text_embeds = guidance.batch(&cond.negative_pooled, &cond.pooled)?.to_dtype(dtype)?;
    let time_ids = sdxl_time_ids(image_size.0, image_size.1, rows, dtype, dev)?;
    scheduler.reset();
    let mut latents = init_noise.affine(scheduler.init_noise_sigma(), 0.0)?;
    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    for (i, &t) in timesteps.iter().enumerate() {
        let x_in = scheduler.scale_model_input(&guidance.batch(&latents, &latents)?, i)?;
        let ts = Tensor::full(t as f32, rows, dev)?;
        let residuals = match control {
            Some(c) if c.guidance.is_active(i, total) => {
                let text_len = context.dim(1)?.min(TEXT_TOKENS);
                let text_only = context.narrow(1, 0, text_len)?;
                let image = c.image.to_dtype(dtype)?;
                Some(c.model.forward(&ControlNetInput {
                    sample: &x_in,
                    timesteps: &ts,
                    encoder_hidden_states: &text_only,
                    text_embeds: Some(&text_embeds),
                    time_ids: Some(&time_ids),
                    cond_image: &image,
                    conditioning_scale: c.guidance.scale_at(i, total),
                })?)
            }
            _ => None,
        };
        let out = unet.forward(&UNetInput {
            sample: &x_in,
            timesteps: &ts,
            encoder_hidden_states: &context,
            text_embeds: Some(&text_embeds),
            time_ids: Some(&time_ids),
            down_residuals: residuals.as_ref().map(|r| r.0.as_slice()),
            mid_residual: residuals.as_ref().map(|r| &r.1),
        })?;
        let guided = guidance.combine(&out)?;
        latents = scheduler.step(&guided, i, &latents, noise)?;
        let info = StepInfo { step: i + 1, total, latents: &latents, pred_original: scheduler.pred_original_sample() };
        if on_step(info) == StepControl::Cancel && i + 1 < total {
            return Err(PipelineError::Cancelled);
        }
    }
    Ok(latents)
}
