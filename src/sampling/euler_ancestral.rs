//! diffusers' `EulerAncestralDiscreteScheduler` (reference spec §5.4; `tools/parity/README.md`,
//! "Equations"; `SDXL-FACTS.md`, "Euler-A noise").
//!
//! ```text
//! σ_up   = √(σᵢ₊₁²·(σᵢ² − σᵢ₊₁²)/σᵢ²)
//! σ_down = √(σᵢ₊₁² − σ_up²)
//! x'     = x + ((x − pred)/σᵢ)·(σ_down − σᵢ) + noiseᵢ·σ_up
//! ```
//! One noise draw per step, including the last one where σ_up = 0, so a shared generator stays in
//! step with diffusers. Timesteps and `init_noise_sigma` are Euler's; the final sigma is always 0.

use candle_core::Tensor;

use super::combine::to_compute;
use super::config::SchedulerConfig;
use super::error::{Result, SamplingError};
use super::euler::{euler_init_noise_sigma, euler_pred_original, euler_scale_input};
use super::noise::NoiseSource;
use super::schedule::{euler_timesteps, inference_sigmas, NoiseSchedule};
use super::{check_step_index, Scheduler, SchedulerKind};

/// `EulerAncestralDiscreteScheduler`; its noise comes from the caller's [`NoiseSource`].
#[derive(Debug, Clone)]
pub struct EulerAncestralScheduler {
    config: SchedulerConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    pred_original: Option<Tensor>,
}

impl EulerAncestralScheduler {
    /// `EulerAncestralDiscreteScheduler.from_config(cfg)` then `set_timesteps(num_inference_steps)`.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate_for(SchedulerKind::EulerAncestral)?;
        let mut s = EulerAncestralScheduler {
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

    /// (σ_up, σ_down) for step `i`.
    fn ancestral_sigmas(&self, i: usize) -> (f64, f64) {
        let (from, to) = (self.sigmas[i], self.sigmas[i + 1]);
        let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let down = (to * to - up * up).sqrt();
        (up, down)
    }
}

impl Scheduler for EulerAncestralScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::EulerAncestral
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let timesteps = euler_timesteps(&self.config, num_inference_steps)?;
        self.sigmas = inference_sigmas(&self.schedule, &timesteps, 0.0);
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
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        check_step_index(step_index, self.timesteps.len())?;
        let out_dtype = sample.dtype();
        let x = to_compute(sample, out_dtype)?;
        let eps = to_compute(model_output, out_dtype)?;
        let sigma = self.sigmas[step_index];
        let pred = euler_pred_original(self.config.prediction_type, SchedulerKind::EulerAncestral, &x, &eps, sigma)?;
        let (sigma_up, sigma_down) = self.ancestral_sigmas(step_index);
        let derivative = (&x - &pred)?.affine(1.0 / sigma, 0.0)?;
        let next = (&x + derivative.affine(sigma_down - sigma, 0.0)?)?;
        // Drawn on every step, even when σ_up = 0 (keeps a shared generator in step with diffusers).
        let z = noise.noise(step_index, x.shape(), x.dtype(), x.device())?;
        if z.dims() != x.dims() {
            return Err(SamplingError::NoiseShape {
                step: step_index,
                got: z.dims().to_vec(),
                expected: x.dims().to_vec(),
            });
        }
        let z = to_compute(&z, out_dtype)?;
        let next = (next + z.affine(sigma_up, 0.0)?)?;
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
    use candle_core::{DType, Device, Shape};

    #[test]
    fn draws_once_per_step_including_the_last() -> Result<()> {
        let mut s = EulerAncestralScheduler::new(&SchedulerConfig::sdxl(), 4)?;
        let mut draws = Vec::new();
        let mut source = |i: usize, shape: &Shape, dtype: DType, dev: &Device| {
            draws.push(i);
            Tensor::zeros(shape, dtype, dev)
        };
        let mut x = Tensor::ones((1, 2), DType::F32, &Device::Cpu)?;
        for i in 0..4 {
            x = s.step(&x.clone(), i, &x, &mut source)?;
        }
        assert_eq!(draws, vec![0, 1, 2, 3]);
        assert_eq!(s.ancestral_sigmas(3), (0.0, 0.0));
        Ok(())
    }

    #[test]
    fn wrong_noise_shape_is_an_error() -> Result<()> {
        let mut s = EulerAncestralScheduler::new(&SchedulerConfig::sdxl(), 2)?;
        let x = Tensor::ones((1, 2), DType::F32, &Device::Cpu)?;
        let mut bad = |_: usize, _: &Shape, dtype: DType, dev: &Device| Tensor::zeros(3, dtype, dev);
        assert!(matches!(s.step(&x, 0, &x, &mut bad), Err(SamplingError::NoiseShape { .. })));
        Ok(())
    }
}
