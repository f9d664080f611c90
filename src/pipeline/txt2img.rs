//! The SDXL text-to-image denoising loop, mirroring `StableDiffusionXLPipeline.__call__` (spec
//! §5.3 steps 6–9; tools/parity/README.md "End-to-end: the exact sequence").

use candle_core::{DType, Device, Tensor};
use thiserror::Error;

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
        let out = unet.forward(&UNetInput {
            sample: &x_in,
            timesteps: &ts,
            encoder_hidden_states: &context,
            text_embeds: Some(&text_embeds),
            time_ids: Some(&time_ids),
            down_residuals: None,
            mid_residual: None,
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
