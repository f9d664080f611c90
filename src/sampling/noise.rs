//! Where stochastic schedulers get their noise (reference spec §5.4; `SDXL-FACTS.md`, "Euler-A noise").
//!
//! Euler-A draws one standard-normal tensor per step, *including the last step* where σ_up = 0, so a
//! shared generator advances the same way as diffusers' `torch.randn(shape, generator)`. The caller
//! supplies the draws: the pipeline from its seeded generator, the parity tests from recorded noise.

use candle_core::{DType, Device, Shape, Tensor};

/// A source of standard-normal noise for scheduler steps.
pub trait NoiseSource {
    /// Draws `N(0, 1)` noise of `shape` for step `step_index`, preferably in `dtype` on `device`
    /// (the scheduler converts any floating dtype and checks the shape).
    fn noise(&mut self, step_index: usize, shape: &Shape, dtype: DType, device: &Device)
        -> candle_core::Result<Tensor>;
}

/// Any `FnMut(step_index, shape, dtype, device)` closure is a noise source.
impl<F> NoiseSource for F
where
    F: FnMut(usize, &Shape, DType, &Device) -> candle_core::Result<Tensor>,
{
    fn noise(
        &mut self,
        step_index: usize,
        shape: &Shape,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self(step_index, shape, dtype, device)
    }
}

/// For deterministic schedulers (UniPC, Euler), which never draw: asking it for noise is an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNoise;

impl NoiseSource for NoNoise {
    fn noise(&mut self, step_index: usize, _: &Shape, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!("step {step_index} needs noise but the noise source is NoNoise")))
    }
}

/// Replays recorded draws: `draws[step_index]` (e.g. the `noise` tensor of `sched_euler_a.safetensors`).
#[derive(Debug, Clone)]
pub struct RecordedNoise {
    draws: Tensor,
}

impl RecordedNoise {
    /// `draws` has shape `[steps, ...sample shape]`.
    pub fn new(draws: Tensor) -> Self {
        RecordedNoise { draws }
    }
}

impl NoiseSource for RecordedNoise {
    fn noise(&mut self, step_index: usize, _: &Shape, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let steps = self.draws.dims().first().copied().unwrap_or(0);
        if step_index >= steps {
            return Err(candle_core::Error::Msg(format!("no recorded noise for step {step_index} ({steps} recorded)")));
        }
        self.draws.get(step_index)?.to_device(device)?.to_dtype(dtype)
    }
}

/// candle's device RNG (`Tensor::randn`). Not reproducible on the CPU (candle cannot seed it there);
/// the pipeline should pass its own seeded generator as a closure instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceRandn;

impl NoiseSource for DeviceRandn {
    fn noise(&mut self, _: usize, shape: &Shape, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::randn(0f32, 1f32, shape, device)?.to_dtype(dtype)
    }
}
