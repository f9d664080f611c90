//! Schedulers and classifier-free guidance (diffusers-exact; reference spec §5.4).
//!
//! A denoising loop (spec §5.3 step 8) with any [`Scheduler`]:
//!
//! ```text
//! let mut sched = build_scheduler(kind, &config, steps)?;          // set_timesteps(steps) done
//! let guidance = Guidance::new(g);
//! let mut x = initial_noise.affine(sched.init_noise_sigma(), 0.)?;
//! for (i, &t) in sched.timesteps().to_vec().iter().enumerate() {
//!     let x_in = sched.scale_model_input(&guidance.batch(&x, &x)?, i)?;
//!     let eps = guidance.combine(&unet.forward(&x_in, t, ...)?)?;
//!     x = sched.step(&eps, i, &x, &mut noise)?;
//! }
//! ```
//!
//! The timestep passed to the UNet is `timesteps()[i]` (an integer value for UniPC, a float32 value
//! for Euler/Euler-A; both exact in f64). Coefficients are f64 scalars; latents keep their dtype.

mod combine;
pub mod config;
pub mod error;
pub mod euler;
pub mod euler_ancestral;
pub mod guidance;
pub mod noise;
pub mod schedule;
pub mod unipc;

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;

pub use config::SchedulerConfig;
pub use error::{Result, SamplingError};
pub use euler::EulerScheduler;
pub use euler_ancestral::EulerAncestralScheduler;
pub use guidance::Guidance;
pub use noise::{DeviceRandn, NoNoise, NoiseSource, RecordedNoise};
pub use unipc::UniPcScheduler;

/// The schedulers this port implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `UniPCMultistepScheduler`, StoryMaker's scheduler (spec §5.4).
    UniPc,
    /// `EulerDiscreteScheduler` (SDXL base's default).
    Euler,
    /// `EulerAncestralDiscreteScheduler` (stochastic; needs a [`NoiseSource`]).
    EulerAncestral,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 3] = [SchedulerKind::UniPc, SchedulerKind::Euler, SchedulerKind::EulerAncestral];

    /// The short, stable name stored in project files (`unipc`, `euler`, `euler_a`).
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::UniPc => "unipc",
            SchedulerKind::Euler => "euler",
            SchedulerKind::EulerAncestral => "euler_a",
        }
    }

    /// diffusers' class name (`_class_name` in a scheduler config).
    pub fn diffusers_class(self) -> &'static str {
        match self {
            SchedulerKind::UniPc => "UniPCMultistepScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
        }
    }

    /// Accepts the short name or diffusers' class name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name) || k.diffusers_class().eq_ignore_ascii_case(name))
    }

    /// Whether `step` draws from its [`NoiseSource`].
    pub fn is_stochastic(self) -> bool {
        self == SchedulerKind::EulerAncestral
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = SamplingError;
    fn from_str(s: &str) -> Result<Self> {
        SchedulerKind::from_name(s).ok_or_else(|| SamplingError::UnknownScheduler(s.to_string()))
    }
}

/// A diffusion scheduler, stepped once per inference step with consecutive `step_index` values.
///
/// Mirrors diffusers' `set_timesteps` / `scale_model_input` / `step`, indexed by step instead of by
/// timestep value. Multistep state (UniPC's history) lives inside; `reset()` (or `set_timesteps`)
/// starts a new run, which may begin at any index (img2img's begin index).
pub trait Scheduler: Send + fmt::Debug {
    fn kind(&self) -> SchedulerKind;

    /// Recomputes timesteps and sigmas for `num_inference_steps` and resets the state.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;

    /// The UNet timestep of every step (length `num_inference_steps`).
    fn timesteps(&self) -> &[f64];

    /// The sigma of every step plus the final sigma (length `num_inference_steps + 1`), float32 values.
    fn sigmas(&self) -> &[f64];

    fn num_inference_steps(&self) -> usize {
        self.timesteps().len()
    }

    /// Multiply the unit-variance initial noise by this (1.0 for UniPC, √(σ_max²+1) for Euler leading).
    fn init_noise_sigma(&self) -> f64;

    /// The UNet input for step `step_index` (identity for UniPC, `x/√(σ²+1)` for Euler).
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor>;

    /// One denoising step: the sample for step `step_index + 1`, in `sample`'s dtype.
    /// `noise` is used only by stochastic schedulers ([`SchedulerKind::is_stochastic`]).
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor>;

    /// The x0 prediction of the last `step` (for previews), in the compute dtype (f32 for half latents).
    fn pred_original_sample(&self) -> Option<&Tensor>;

    /// Forgets the multistep state so a new run can start.
    fn reset(&mut self);
}

/// Builds a scheduler of `kind` from a diffusers config and sets `num_inference_steps`.
pub fn build_scheduler(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler>> {
    Ok(match kind {
        SchedulerKind::UniPc => Box::new(UniPcScheduler::new(config, num_inference_steps)?),
        SchedulerKind::Euler => Box::new(EulerScheduler::new(config, num_inference_steps)?),
        SchedulerKind::EulerAncestral => Box::new(EulerAncestralScheduler::new(config, num_inference_steps)?),
    })
}

/// `StepOutOfRange` unless `index < len`.
pub(crate) fn check_step_index(index: usize, len: usize) -> Result<()> {
    if index < len {
        Ok(())
    } else {
        Err(SamplingError::StepOutOfRange { index, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for kind in SchedulerKind::ALL {
            assert_eq!(kind.name().parse::<SchedulerKind>().ok(), Some(kind));
            assert_eq!(SchedulerKind::from_name(kind.diffusers_class()), Some(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(SchedulerKind::from_name(" UniPC "), Some(SchedulerKind::UniPc));
        assert!(matches!("ddim".parse::<SchedulerKind>(), Err(SamplingError::UnknownScheduler(_))));
    }

    #[test]
    fn factory_builds_each_kind() -> Result<()> {
        for kind in SchedulerKind::ALL {
            let s = build_scheduler(kind, &SchedulerConfig::sdxl(), 25)?;
            assert_eq!(s.kind(), kind);
            assert_eq!(s.num_inference_steps(), 25);
            assert_eq!(s.sigmas().len(), 26);
        }
        Ok(())
    }
}
