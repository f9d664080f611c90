//! Errors of the sampling room (schedulers and guidance, reference spec §5.4).

use candle_core::DType;

/// Everything that can go wrong while configuring or running a scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// The scheduler config JSON could not be parsed (unknown enum value, wrong type, ...).
    #[error("scheduler config: {0}")]
    ConfigJson(#[from] serde_json::Error),
    /// The scheduler config file could not be read.
    #[error("scheduler config {path}: {source}")]
    ConfigIo { path: std::path::PathBuf, source: std::io::Error },
    /// A config value is well-formed but outside what the config itself allows.
    #[error("invalid scheduler config: {0}")]
    InvalidConfig(String),
    /// A diffusers option this port does not implement (the scheduler would silently differ).
    #[error("{scheduler}: unsupported setting {setting}")]
    Unsupported { scheduler: &'static str, setting: String },
    /// Unknown scheduler name (see `SchedulerKind::from_name`).
    #[error("unknown scheduler `{0}` (expected unipc, euler or euler_a)")]
    UnknownScheduler(String),
    /// The number of inference steps does not give a valid timestep table.
    #[error("invalid number of inference steps {steps}: {reason}")]
    InvalidSteps { steps: usize, reason: String },
    /// `step`/`scale_model_input` was called with an index outside `0..num_inference_steps`.
    #[error("step index {index} out of range: the schedule has {len} steps")]
    StepOutOfRange { index: usize, len: usize },
    /// A multistep scheduler was stepped out of order (call `reset()` to start over).
    #[error("step index {got} out of order: expected {expected} (call reset() to start a new run)")]
    StepOutOfOrder { got: usize, expected: usize },
    /// Schedulers work on floating-point latents only.
    #[error("scheduler tensors must be floating point, got {0:?}")]
    NotFloat(DType),
    /// A noise source returned a tensor of the wrong shape.
    #[error("noise for step {step} has shape {got:?}, expected {expected:?}")]
    NoiseShape { step: usize, got: Vec<usize>, expected: Vec<usize> },
    /// Classifier-free guidance needs an even batch `[uncond, cond]`.
    #[error("classifier-free guidance needs a batch of 2B rows [uncond, cond], got {0}")]
    OddGuidanceBatch(usize),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, SamplingError>;
