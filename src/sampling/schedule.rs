//! The noise schedule: training betas, `alphas_cumprod`, sigma tables and the inference timesteps,
//! computed with diffusers' exact float32/float64 rounding (reference spec §5.4; `tools/parity/README.md`,
//! "Scheduler precision"; `SDXL-FACTS.md`, Schedulers).
//!
//! Precision matters here: diffusers builds `betas` with a float32 `torch.linspace`, `alphas_cumprod`
//! with a float32 cumprod (accumulated in float64 by torch on the CPU, rounded per element) and
//! sigmas as float32 `sqrt((1-ᾱ)/ᾱ)`. Recomputing in float64 moves the sigmas by ~2e-6. Inference
//! sigmas are `np.interp` (float64) of that float32 table, stored as float32; here they are f64
//! holding those float32 values exactly.

use super::config::{BetaSchedule, SchedulerConfig, TimestepSpacing};
use super::error::{Result, SamplingError};

/// The training-time tables every scheduler derives from.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    /// `cumprod(1 - betas)`, float32 as in diffusers.
    pub alphas_cumprod: Vec<f32>,
    /// `sqrt((1 - ᾱ_t)/ᾱ_t)` for every training timestep t (ascending t), float32.
    pub train_sigmas: Vec<f32>,
}

impl NoiseSchedule {
    /// Builds the tables from a config (`trained_betas` win over `beta_schedule`, as in diffusers).
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        let n = cfg.num_train_timesteps;
        if n < 2 {
            return Err(SamplingError::InvalidConfig(format!("num_train_timesteps must be at least 2, got {n}")));
        }
        let betas: Vec<f32> = match &cfg.trained_betas {
            Some(b) if b.len() != n => {
                return Err(SamplingError::InvalidConfig(format!(
                    "trained_betas has {} entries, num_train_timesteps is {n}",
                    b.len()
                )))
            }
            Some(b) => b.iter().map(|&v| v as f32).collect(),
            None => match cfg.beta_schedule {
                BetaSchedule::Linear => torch_linspace_f32(cfg.beta_start, cfg.beta_end, n),
                BetaSchedule::ScaledLinear => torch_linspace_f32(cfg.beta_start.sqrt(), cfg.beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect(),
                BetaSchedule::SquaredCosCapV2 => cosine_betas(n),
            },
        };
        // torch.cumprod on the CPU accumulates float32 in double and rounds each output.
        let mut acc = 1.0f64;
        let alphas_cumprod: Vec<f32> = betas
            .iter()
            .map(|&b| {
                acc *= f64::from(1.0f32 - b);
                acc as f32
            })
            .collect();
        let train_sigmas = alphas_cumprod.iter().map(|&a| ((1.0f32 - a) / a).sqrt()).collect();
        Ok(NoiseSchedule { alphas_cumprod, train_sigmas })
    }

    /// `np.interp(t, arange(N), train_sigmas)` rounded to float32 (returned as f64).
    pub fn sigma_at(&self, t: f64) -> f64 {
        f64::from(np_interp_unit_grid(t, &self.train_sigmas) as f32)
    }
}

/// `torch.linspace(start, end, steps, dtype=float32)` on the CPU. ATen computes
/// `start + step*i` for the first half and `end - step*(steps-1-i)` for the second, in float32 with a
/// float32 step; the build used by the fixtures contracts both into a fused multiply-add.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| if i < halfway { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - 1 - i) as f32, end) })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` with the cosine transform (float64, max beta 0.999), as float32.
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `np.interp(x, arange(len(fp)), fp)` in float64 (numpy's formula: `slope*(x - x_j) + y_j`).
fn np_interp_unit_grid(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len().saturating_sub(1);
    if x.is_nan() || fp.is_empty() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return f64::from(fp[0]);
    }
    if x >= last as f64 {
        return f64::from(fp[last]);
    }
    let j = x.floor() as usize;
    let (y0, y1) = (f64::from(fp[j]), f64::from(fp[j + 1]));
    if j as f64 == x {
        return y0;
    }
    let slope = y1 - y0;
    let y = slope * (x - j as f64) + y0;
    if y.is_nan() {
        slope * (x - (j + 1) as f64) + y1
    } else {
        y
    }
}

/// `np.linspace(start, stop, num)` (float64): `i*step + start`, last element exactly `stop`.
fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// `np.arange(start, 0, -step)` for float arguments (numpy's length and fill rule).
fn np_arange_down(start: f64, step: f64) -> Vec<f64> {
    let len = ((0.0 - start) / -step).ceil().max(0.0) as usize;
    if len == 0 {
        return Vec::new();
    }
    let delta = (start + -step) - start;
    (0..len).map(|i| if i == 0 { start } else { start + i as f64 * delta }).collect()
}

fn check_steps(n: usize, cfg: &SchedulerConfig) -> Result<()> {
    if n == 0 {
        return Err(SamplingError::InvalidSteps { steps: n, reason: "at least one step is needed".into() });
    }
    if n > cfg.num_train_timesteps {
        return Err(SamplingError::InvalidSteps {
            steps: n,
            reason: format!("more steps than num_train_timesteps ({})", cfg.num_train_timesteps),
        });
    }
    Ok(())
}

/// `UniPCMultistepScheduler.set_timesteps` timesteps (int64 in diffusers). Note the `n + 1`:
/// leading uses `N // (n+1)` (25 steps: 951…39; 3 steps: 751, 501, 251), linspace takes `n+1`
/// points and drops the last.
pub fn unipc_timesteps(cfg: &SchedulerConfig, n: usize) -> Result<Vec<f64>> {
    check_steps(n, cfg)?;
    let train = cfg.num_train_timesteps;
    let ts: Vec<f64> = match cfg.timestep_spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<f64> =
                np_linspace(0.0, (train - 1) as f64, n + 1).into_iter().map(f64::round_ties_even).collect();
            v.reverse();
            v.truncate(n);
            v
        }
        TimestepSpacing::Leading => {
            let ratio = train / (n + 1);
            if ratio == 0 {
                return Err(SamplingError::InvalidSteps {
                    steps: n,
                    reason: format!("leading spacing needs fewer than {train} steps"),
                });
            }
            (0..n).rev().map(|i| ((i + 1) * ratio + cfg.steps_offset) as f64).collect()
        }
        TimestepSpacing::Trailing => np_arange_down(train as f64, train as f64 / n as f64)
            .into_iter()
            .map(|t| t.round_ties_even() - 1.0)
            .collect(),
    };
    Ok(ts)
}

/// `EulerDiscreteScheduler` / `EulerAncestralDiscreteScheduler` timesteps (float32 in diffusers):
/// leading uses `N // n` (25 steps: 961…1).
pub fn euler_timesteps(cfg: &SchedulerConfig, n: usize) -> Result<Vec<f64>> {
    check_steps(n, cfg)?;
    let train = cfg.num_train_timesteps;
    let ts: Vec<f64> = match cfg.timestep_spacing {
        TimestepSpacing::Linspace => {
            np_linspace(0.0, (train - 1) as f64, n).into_iter().rev().map(|t| f64::from(t as f32)).collect()
        }
        TimestepSpacing::Leading => {
            let ratio = train / n;
            (0..n).rev().map(|i| f64::from((i * ratio) as f32 + cfg.steps_offset as f32)).collect()
        }
        TimestepSpacing::Trailing => np_arange_down(train as f64, train as f64 / n as f64)
            .into_iter()
            .map(|t| f64::from(t.round_ties_even() as f32 - 1.0))
            .collect(),
    };
    Ok(ts)
}

/// Inference sigmas: `sigma(t_j)` for every timestep, then `final_sigma`, all float32 values.
pub fn inference_sigmas(schedule: &NoiseSchedule, timesteps: &[f64], final_sigma: f64) -> Vec<f64> {
    timesteps.iter().map(|&t| schedule.sigma_at(t)).chain(std::iter::once(f64::from(final_sigma as f32))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdxl() -> SchedulerConfig {
        SchedulerConfig::sdxl()
    }

    #[test]
    fn unipc_leading_tables_match_sdxl_facts() {
        let t25 = unipc_timesteps(&sdxl(), 25).expect("25");
        let want: Vec<f64> = (0..25).map(|j| f64::from(951 - 38 * j)).collect();
        assert_eq!(t25, want);
        assert_eq!((t25[0], t25[24]), (951.0, 39.0));
        assert_eq!(unipc_timesteps(&sdxl(), 3).expect("3"), vec![751.0, 501.0, 251.0]);
    }

    #[test]
    fn euler_leading_tables_use_n_not_n_plus_one() {
        let t25 = euler_timesteps(&sdxl(), 25).expect("25");
        assert_eq!((t25[0], t25[1], t25[24]), (961.0, 921.0, 1.0));
        assert_eq!(euler_timesteps(&sdxl(), 3).expect("3"), vec![667.0, 334.0, 1.0]);
    }

    #[test]
    fn linspace_and_trailing_tables() {
        let lin = SchedulerConfig { timestep_spacing: TimestepSpacing::Linspace, ..sdxl() };
        // Spec §5.4: round(linspace(0, 999, 26)) reversed, last dropped.
        let t = unipc_timesteps(&lin, 25).expect("unipc linspace");
        assert_eq!((t[0], t[1], t[2], t[23], t[24]), (999.0, 959.0, 919.0, 80.0, 40.0));
        // np.round rounds half to even: linspace(0, 999, 3) = [0, 499.5, 999] -> 500.
        assert_eq!(unipc_timesteps(&lin, 2).expect("2"), vec![999.0, 500.0]);
        let e = euler_timesteps(&lin, 3).expect("euler linspace");
        assert_eq!(e, vec![999.0, 499.5, 0.0]);
        let tr = SchedulerConfig { timestep_spacing: TimestepSpacing::Trailing, ..sdxl() };
        assert_eq!(unipc_timesteps(&tr, 3).expect("trailing"), vec![999.0, 666.0, 332.0]);
        assert_eq!(euler_timesteps(&tr, 4).expect("trailing"), vec![999.0, 749.0, 499.0, 249.0]);
    }

    #[test]
    fn rejects_impossible_step_counts() {
        assert!(unipc_timesteps(&sdxl(), 0).is_err());
        assert!(euler_timesteps(&sdxl(), 1001).is_err());
        assert!(unipc_timesteps(&sdxl(), 1000).is_err());
    }

    #[test]
    fn interp_matches_numpy_rules() {
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(np_interp_unit_grid(-1.0, &fp), 1.0);
        assert_eq!(np_interp_unit_grid(1.0, &fp), 3.0);
        assert_eq!(np_interp_unit_grid(1.5, &fp), 5.0);
        assert_eq!(np_interp_unit_grid(9.0, &fp), 7.0);
    }

    #[test]
    fn sdxl_schedule_endpoints() {
        let s = NoiseSchedule::new(&sdxl()).expect("schedule");
        assert_eq!(s.alphas_cumprod.len(), 1000);
        // ᾱ_0 = 1 - 0.00085; σ_max ≈ 14.61 for SD/SDXL.
        assert!((f64::from(s.alphas_cumprod[0]) - 0.99915).abs() < 1e-7);
        assert!((f64::from(s.train_sigmas[999]) - 14.6146).abs() < 1e-3);
        let linear = NoiseSchedule::new(&SchedulerConfig::default()).expect("linear");
        assert!((f64::from(linear.alphas_cumprod[0]) - 0.9999).abs() < 1e-7);
        let cos = NoiseSchedule::new(&SchedulerConfig {
            beta_schedule: BetaSchedule::SquaredCosCapV2,
            ..SchedulerConfig::default()
        })
        .expect("cosine");
        assert!(cos.train_sigmas.iter().all(|s| s.is_finite() && *s > 0.0));
    }
}
