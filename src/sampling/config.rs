//! The scheduler configuration, read from a diffusers `scheduler/scheduler_config.json`
//! (reference spec §5.4; `SDXL-FACTS.md`, Schedulers).
//!
//! One struct serves every scheduler, as diffusers' `X.from_config(cfg)` does: fields another class
//! wrote are ignored, missing fields take diffusers' defaults (which are the same for UniPC, Euler and
//! Euler-A). StoryMaker builds its UniPC scheduler from the *base model's* Euler config.
//! Options that would change the numbers but are not implemented are rejected by
//! [`SchedulerConfig::validate_for`] instead of being silently ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{Result, SamplingError};
use super::SchedulerKind;

/// How the training betas are laid out (`beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, N)` in float32.
    Linear,
    /// `linspace(√beta_start, √beta_end, N)²` in float32 (SD/SDXL).
    ScaledLinear,
    /// Glide's cosine schedule (`betas_for_alpha_bar`, computed in float64, stored as float32).
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredCosCapV2,
}

/// Which inference timesteps are picked (`timestep_spacing`, Table 2 of arXiv:2305.08891).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// What the model predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    #[serde(alias = "original_sample")]
    Sample,
    FlowPrediction,
}

/// UniPC's B(h) variant (`solver_type`); diffusers maps the DPM-Solver names to bh2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SolverType {
    #[serde(rename = "bh1")]
    Bh1,
    #[serde(rename = "bh2", alias = "midpoint", alias = "heun", alias = "logrho")]
    Bh2,
}

/// The sigma appended after the last inference step (`final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmasType {
    Zero,
    SigmaMin,
}

/// How Euler interpolates sigmas between training timesteps (`interpolation_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterpolationType {
    Linear,
    LogLinear,
}

/// Euler's `timestep_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepType {
    Discrete,
    Continuous,
}

fn d_train_steps() -> usize {
    1000
}
fn d_beta_start() -> f64 {
    0.0001
}
fn d_beta_end() -> f64 {
    0.02
}
fn d_beta_schedule() -> BetaSchedule {
    BetaSchedule::Linear
}
fn d_spacing() -> TimestepSpacing {
    TimestepSpacing::Linspace
}
fn d_prediction() -> PredictionType {
    PredictionType::Epsilon
}
fn d_solver_order() -> usize {
    2
}
fn d_solver_type() -> SolverType {
    SolverType::Bh2
}
fn d_final_sigmas() -> FinalSigmasType {
    FinalSigmasType::Zero
}
fn d_interpolation() -> InterpolationType {
    InterpolationType::Linear
}
fn d_timestep_type() -> TimestepType {
    TimestepType::Discrete
}
fn d_true() -> bool {
    true
}

/// A diffusers scheduler config. Field names and defaults are diffusers' (0.42.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// The class that wrote the file (informational; any class's config builds any scheduler).
    #[serde(rename = "_class_name", default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    #[serde(default = "d_train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "d_beta_start")]
    pub beta_start: f64,
    #[serde(default = "d_beta_end")]
    pub beta_end: f64,
    #[serde(default = "d_beta_schedule")]
    pub beta_schedule: BetaSchedule,
    /// Explicit betas; override `beta_schedule` when present.
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "d_spacing")]
    pub timestep_spacing: TimestepSpacing,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "d_prediction")]
    pub prediction_type: PredictionType,
    #[serde(default = "d_final_sigmas")]
    pub final_sigmas_type: FinalSigmasType,
    // UniPC.
    #[serde(default = "d_solver_order")]
    pub solver_order: usize,
    #[serde(default = "d_solver_type")]
    pub solver_type: SolverType,
    #[serde(default = "d_true")]
    pub predict_x0: bool,
    #[serde(default = "d_true")]
    pub lower_order_final: bool,
    /// Step indices whose *following* step skips the corrector.
    #[serde(default)]
    pub disable_corrector: Vec<usize>,
    // Euler.
    #[serde(default = "d_interpolation")]
    pub interpolation_type: InterpolationType,
    #[serde(default = "d_timestep_type")]
    pub timestep_type: TimestepType,
    // Options that are parsed only to be rejected when set (they change the numbers).
    #[serde(default)]
    pub use_karras_sigmas: Option<bool>,
    #[serde(default)]
    pub use_exponential_sigmas: Option<bool>,
    #[serde(default)]
    pub use_beta_sigmas: Option<bool>,
    #[serde(default)]
    pub use_flow_sigmas: Option<bool>,
    #[serde(default)]
    pub use_dynamic_shifting: Option<bool>,
    #[serde(default)]
    pub rescale_betas_zero_snr: Option<bool>,
    #[serde(default)]
    pub thresholding: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver_p: Option<serde_json::Value>,
}

impl Default for SchedulerConfig {
    /// diffusers' constructor defaults (note: *not* SDXL's values; see [`SchedulerConfig::sdxl`]).
    fn default() -> Self {
        // An empty JSON object takes every serde default; it cannot fail.
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("all fields have defaults"))
    }
}

impl SchedulerConfig {
    /// SDXL base 1.0's `scheduler_config.json` (EulerDiscrete, scaled_linear 0.00085–0.012, epsilon,
    /// leading spacing, steps_offset 1). For single-file checkpoints that ship no scheduler config.
    pub fn sdxl() -> Self {
        SchedulerConfig {
            class_name: Some("EulerDiscreteScheduler".into()),
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 1,
            ..SchedulerConfig::default()
        }
    }

    pub fn from_json_str(json: &str) -> Result<Self> {
        Ok(serde_json::from_str(json)?)
    }

    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SamplingError::ConfigIo { path: path.to_path_buf(), source })?;
        Self::from_json_str(&text)
    }

    /// Checks that `kind` built from this config behaves exactly like diffusers' class would.
    pub fn validate_for(&self, kind: SchedulerKind) -> Result<()> {
        let name = kind.diffusers_class();
        let unsupported = |setting: String| Err(SamplingError::Unsupported { scheduler: name, setting });
        if self.num_train_timesteps < 2 {
            return Err(SamplingError::InvalidConfig(format!(
                "num_train_timesteps must be at least 2, got {}",
                self.num_train_timesteps
            )));
        }
        if let Some(betas) = &self.trained_betas {
            if betas.len() != self.num_train_timesteps {
                return Err(SamplingError::InvalidConfig(format!(
                    "trained_betas has {} entries, num_train_timesteps is {}",
                    betas.len(),
                    self.num_train_timesteps
                )));
            }
        }
        let flags = [
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
            ("use_flow_sigmas", self.use_flow_sigmas),
            ("use_dynamic_shifting", self.use_dynamic_shifting),
            ("rescale_betas_zero_snr", self.rescale_betas_zero_snr),
            ("thresholding", self.thresholding),
        ];
        for (flag, value) in flags {
            if value == Some(true) {
                return unsupported(format!("{flag} = true"));
            }
        }
        if self.prediction_type == PredictionType::FlowPrediction {
            return unsupported("prediction_type = flow_prediction".into());
        }
        match kind {
            SchedulerKind::UniPc => {
                if !(1..=3).contains(&self.solver_order) {
                    return unsupported(format!("solver_order = {} (1..=3 supported)", self.solver_order));
                }
                if !self.predict_x0 {
                    return unsupported("predict_x0 = false".into());
                }
                if self.solver_p.as_ref().is_some_and(|v| !v.is_null()) {
                    return unsupported("solver_p".into());
                }
            }
            SchedulerKind::Euler => {
                if self.interpolation_type == InterpolationType::LogLinear {
                    return unsupported("interpolation_type = log_linear".into());
                }
                if self.timestep_type == TimestepType::Continuous && self.prediction_type == PredictionType::VPrediction
                {
                    return unsupported("timestep_type = continuous with v_prediction".into());
                }
            }
            SchedulerKind::EulerAncestral => {
                if self.prediction_type == PredictionType::Sample {
                    // diffusers raises NotImplementedError too.
                    return unsupported("prediction_type = sample".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDXL_BASE: &str = r#"{
      "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0",
      "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": false,
      "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
      "sample_max_value": 1.0, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
      "timestep_spacing": "leading", "trained_betas": null, "use_karras_sigmas": false }"#;

    #[test]
    fn parses_sdxl_base_config_with_unipc_defaults() {
        let cfg = SchedulerConfig::from_json_str(SDXL_BASE).expect("parse");
        assert_eq!(cfg.class_name.as_deref(), Some("EulerDiscreteScheduler"));
        assert_eq!(cfg.num_train_timesteps, 1000);
        assert_eq!(cfg.beta_schedule, BetaSchedule::ScaledLinear);
        assert_eq!(cfg.timestep_spacing, TimestepSpacing::Leading);
        assert_eq!(cfg.steps_offset, 1);
        assert_eq!(cfg.prediction_type, PredictionType::Epsilon);
        // UniPC fields absent from the Euler config take UniPC's defaults (spec §5.4).
        assert_eq!(cfg.solver_order, 2);
        assert_eq!(cfg.solver_type, SolverType::Bh2);
        assert!(cfg.predict_x0 && cfg.lower_order_final && cfg.disable_corrector.is_empty());
        assert_eq!(cfg.final_sigmas_type, FinalSigmasType::Zero);
        for kind in SchedulerKind::ALL {
            cfg.validate_for(kind).expect("SDXL base config is supported");
        }
        let mut sdxl = SchedulerConfig::sdxl();
        sdxl.use_karras_sigmas = Some(false);
        sdxl.trained_betas = None;
        assert_eq!(sdxl, cfg);
    }

    #[test]
    fn defaults_are_diffusers_constructor_defaults() {
        let cfg = SchedulerConfig::default();
        assert_eq!(cfg.beta_schedule, BetaSchedule::Linear);
        assert_eq!((cfg.beta_start, cfg.beta_end), (0.0001, 0.02));
        assert_eq!(cfg.timestep_spacing, TimestepSpacing::Linspace);
        assert_eq!(cfg.steps_offset, 0);
    }

    #[test]
    fn parses_aliases_and_rejects_unknown_values() {
        let cfg = SchedulerConfig::from_json_str(r#"{"solver_type": "midpoint", "prediction_type": "v_prediction"}"#)
            .expect("parse");
        assert_eq!(cfg.solver_type, SolverType::Bh2);
        assert_eq!(cfg.prediction_type, PredictionType::VPrediction);
        assert!(SchedulerConfig::from_json_str(r#"{"timestep_spacing": "sideways"}"#).is_err());
        assert!(SchedulerConfig::from_json_str(r#"{"beta_schedule": 3}"#).is_err());
        assert!(SchedulerConfig::from_json_str("not json").is_err());
    }

    #[test]
    fn rejects_settings_that_would_change_the_numbers() {
        let karras = SchedulerConfig { use_karras_sigmas: Some(true), ..SchedulerConfig::sdxl() };
        assert!(matches!(karras.validate_for(SchedulerKind::UniPc), Err(SamplingError::Unsupported { .. })));
        let order4 = SchedulerConfig { solver_order: 4, ..SchedulerConfig::sdxl() };
        assert!(order4.validate_for(SchedulerKind::UniPc).is_err());
        assert!(order4.validate_for(SchedulerKind::Euler).is_ok());
        let sample = SchedulerConfig { prediction_type: PredictionType::Sample, ..SchedulerConfig::sdxl() };
        assert!(sample.validate_for(SchedulerKind::EulerAncestral).is_err());
        let betas = SchedulerConfig { trained_betas: Some(vec![0.1; 3]), ..SchedulerConfig::sdxl() };
        assert!(matches!(betas.validate_for(SchedulerKind::Euler), Err(SamplingError::InvalidConfig(_))));
        assert!(SchedulerConfig::from_json_file(Path::new("/nonexistent/scheduler_config.json")).is_err());
    }
}
