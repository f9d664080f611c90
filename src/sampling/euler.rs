//! diffusers' `EulerDiscreteScheduler` with `s_churn = 0` (no noise; diffusers 0.42 draws none)
//! (reference spec §5.4; `tools/parity/README.md`, "Equations"), plus the pieces Euler-A shares.
//!
//! ```text
//! x_in = x / √(σᵢ² + 1)
//! pred = x − σᵢ·ε                 (epsilon)
//! x'   = x + ((x − pred)/σᵢ)·(σᵢ₊₁ − σᵢ)
//! ```
//! The derivative is `(x − pred)/σ` as in diffusers, not `ε` (they differ by float32 rounding).
//! Timesteps are float32 values; leading spacing uses `N // n` (25 steps: 961…1) and
//! `init_noise_sigma = √(σ_max² + 1)` (11.7188 for 25 steps), computed in float32.

use candle_core::Tensor;

use super::combine::{linear_combination, to_compute};
use super::config::{FinalSigmasType, PredictionType, SchedulerConfig, TimestepSpacing};
use super::error::{Result, SamplingError};
use super::noise::NoiseSource;
use super::schedule::{euler_timesteps, inference_sigmas, NoiseSchedule};
use super::{check_step_index, Scheduler, SchedulerKind};

/// The float32 `init_noise_sigma` of the Euler family: `max σ` for linspace/trailing spacing,
/// `√(max σ² + 1)` otherwise.
pub(crate) fn euler_init_noise_sigma(spacing: TimestepSpacing, sigmas: &[f64]) -> f64 {
    let max = sigmas.iter().fold(0.0f32, |m, &s| m.max(s as f32));
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => f64::from(max),
        TimestepSpacing::Leading => f64::from((max * max + 1.0).sqrt()),
    }
}

/// `x / √(σ² + 1)`, the Euler family's model-input scaling; keeps the sample's dtype.
pub(crate) fn euler_scale_input(sample: &Tensor, sigma: f64) -> Result<Tensor> {
    let x = to_compute(sample, sample.dtype())?;
    Ok(x.affine(1.0 / (sigma * sigma + 1.0).sqrt(), 0.0)?.to_dtype(sample.dtype())?)
}

/// The x0 prediction (`pred_original_sample`) of the Euler family at noise level `sigma`.
pub(crate) fn euler_pred_original(
    prediction: PredictionType,
    kind: SchedulerKind,
    x: &Tensor,
    model_output: &Tensor,
    sigma: f64,
) -> Result<Tensor> {
    match prediction {
        PredictionType::Epsilon => Ok((x - model_output.affine(sigma, 0.0)?)?),
        PredictionType::VPrediction => {
            let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
            let c_skip = 1.0 / (sigma * sigma + 1.0);
            linear_combination(&[(c_out, model_output), (c_skip, x)])
        }
        PredictionType::Sample if kind == SchedulerKind::Euler => Ok(model_output.clone()),
        other => Err(SamplingError::Unsupported {
            scheduler: kind.diffusers_class(),
            setting: format!("prediction_type = {other:?}"),
        }),
    }
}

/// `EulerDiscreteScheduler` (deterministic; `s_churn` = 0).
#[derive(Debug, Clone)]
pub struct EulerScheduler {
    config: SchedulerConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    pred_original: Option<Tensor>,
}

impl EulerScheduler {
    /// `EulerDiscreteScheduler.from_config(cfg)` then `set_timesteps(num_inference_steps)`.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate_for(SchedulerKind::Euler)?;
        let mut s = EulerScheduler {
            config: config.clone(),
            schedule: NoiseSchedule::new(config)?,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            init_noise_sigma: 1.0,
            pred_original: None,
        };
        s.set_timesteps(num_inference_steps)?;
        Ok(s)
    }

    /// The training tables (`alphas_cumprod`, training sigmas).
    pub fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }
}

impl Scheduler for EulerScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Euler
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let timesteps = euler_timesteps(&self.config, num_inference_steps)?;
        let final_sigma = match self.config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => f64::from(self.schedule.train_sigmas[0]),
        };
        self.sigmas = inference_sigmas(&self.schedule, &timesteps, final_sigma);
        self.timesteps = timesteps;
        self.init_noise_sigma = euler_init_noise_sigma(self.config.timestep_spacing, &self.sigmas);
        self.reset();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        check_step_index(step_index, self.timesteps.len())?;
        euler_scale_input(sample, self.sigmas[step_index])
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        check_step_index(step_index, self.timesteps.len())?;
        let out_dtype = sample.dtype();
        let x = to_compute(sample, out_dtype)?;
        let eps = to_compute(model_output, out_dtype)?;
        let (sigma, sigma_next) = (self.sigmas[step_index], self.sigmas[step_index + 1]);
        let pred = euler_pred_original(self.config.prediction_type, SchedulerKind::Euler, &x, &eps, sigma)?;
        let derivative = (&x - &pred)?.affine(1.0 / sigma, 0.0)?;
        let next = (&x + derivative.affine(sigma_next - sigma, 0.0)?)?;
        self.pred_original = Some(pred);
        Ok(next.to_dtype(out_dtype)?)
    }

    fn pred_original_sample(&self) -> Option<&Tensor> {
        self.pred_original.as_ref()
    }

    fn reset(&mut self) {
        self.pred_original = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::noise::NoNoise;
    use candle_core::{DType, Device};

    #[test]
    fn sdxl_tables_and_init_noise_sigma() -> Result<()> {
        let s = EulerScheduler::new(&SchedulerConfig::sdxl(), 25)?;
        assert_eq!(s.timesteps()[0], 961.0);
        assert_eq!(s.timesteps()[24], 1.0);
        assert_eq!(s.sigmas().len(), 26);
        assert!((s.init_noise_sigma() - 11.7188).abs() < 1e-4);
        Ok(())
    }

    #[test]
    fn steps_without_drawing_noise() -> Result<()> {
        let mut s = EulerScheduler::new(&SchedulerConfig::sdxl(), 3)?;
        let x = Tensor::ones((1, 2), DType::F16, &Device::Cpu)?;
        let y = s.step(&x, 0, &x, &mut NoNoise)?;
        assert_eq!(y.dtype(), DType::F16);
        assert!(s.step(&x, 3, &x, &mut NoNoise).is_err());
        Ok(())
    }
}
