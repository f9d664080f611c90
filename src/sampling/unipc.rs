//! diffusers' `UniPCMultistepScheduler` (predict_x0, B(h) variants, orders 1–3, corrector, lower-order
//! final steps), teacher-forceable against diffusers 0.42.1 (reference spec §5.4; equations in
//! `tools/parity/README.md`, "Equations").
//!
//! With σ_j the inference sigmas (last one 0): α_j = 1/√(σ_j²+1), s_j = σ_j·α_j,
//! λ_j = ln α_j − ln s_j. On the last step σ = 0 gives λ = +∞, h = +∞, expm1(−h) = −1 and a zero
//! coefficient on the sample, so the step returns the x0 prediction exactly; no special case.
//! Coefficients are f64 scalars; tensors keep their dtype (half precision is updated in f32, see
//! `combine`).

use std::collections::VecDeque;

use candle_core::Tensor;

use super::combine::{linear_combination, to_compute};
use super::config::{FinalSigmasType, PredictionType, SchedulerConfig, SolverType};
use super::error::{Result, SamplingError};
use super::noise::NoiseSource;
use super::schedule::{inference_sigmas, unipc_timesteps, NoiseSchedule};
use super::{check_step_index, Scheduler, SchedulerKind};

/// `UniPCMultistepScheduler` with its multistep state (x0 history, last corrected sample, orders).
#[derive(Debug, Clone)]
pub struct UniPcScheduler {
    config: SchedulerConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    /// α_j, s_j, λ_j for every sigma (n+1 entries).
    alpha: Vec<f64>,
    sigma_t: Vec<f64>,
    lambda: Vec<f64>,
    /// x0 predictions of the last `solver_order` steps, newest last (diffusers' `model_outputs`).
    history: VecDeque<Tensor>,
    /// The (corrected) sample of the previous step (diffusers' `last_sample`).
    last_sample: Option<Tensor>,
    /// The predictor order of the previous step, used by this step's corrector.
    this_order: usize,
    lower_order_nums: usize,
    next_index: Option<usize>,
}

impl UniPcScheduler {
    /// Builds the scheduler from a (possibly other-class) diffusers config, like
    /// `UniPCMultistepScheduler.from_config(cfg)` followed by `set_timesteps(num_inference_steps)`.
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate_for(SchedulerKind::UniPc)?;
        let schedule = NoiseSchedule::new(config)?;
        let mut s = UniPcScheduler {
            config: config.clone(),
            schedule,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            alpha: Vec::new(),
            sigma_t: Vec::new(),
            lambda: Vec::new(),
            history: VecDeque::new(),
            last_sample: None,
            this_order: 0,
            lower_order_nums: 0,
            next_index: None,
        };
        s.set_timesteps(num_inference_steps)?;
        Ok(s)
    }

    /// The training tables (`alphas_cumprod`, training sigmas).
    pub fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The predictor order used by the last `step` (1, 2, …, 2, 1 for SDXL's 25 steps); 0 before.
    pub fn last_order(&self) -> usize {
        self.this_order
    }

    /// The sample after the corrector in the last `step` (equal to its input on the first step).
    pub fn corrected_sample(&self) -> Option<&Tensor> {
        self.last_sample.as_ref()
    }

    /// x0 = the model output converted to a clean-sample prediction at step `i`.
    fn convert_model_output(&self, eps: &Tensor, x: &Tensor, i: usize) -> Result<Tensor> {
        let (a, s) = (self.alpha[i], self.sigma_t[i]);
        Ok(match self.config.prediction_type {
            PredictionType::Epsilon => (x - eps.affine(s, 0.0)?)?.affine(1.0 / a, 0.0)?,
            PredictionType::VPrediction => linear_combination(&[(a, x), (-s, eps)])?,
            PredictionType::Sample => eps.clone(),
            PredictionType::FlowPrediction => {
                return Err(SamplingError::Unsupported {
                    scheduler: SchedulerKind::UniPc.diffusers_class(),
                    setting: "prediction_type = flow_prediction".into(),
                })
            }
        })
    }

    /// `hh`, `h·φ₁ = expm1(hh)`, `B(h)` and the `b` vector of length `order` for step size `h`.
    fn b_coefficients(&self, h: f64, order: usize) -> (f64, f64, Vec<f64>) {
        let hh = -h; // predict_x0
        let h_phi_1 = hh.exp_m1();
        let b_h = match self.config.solver_type {
            SolverType::Bh1 => hh,
            SolverType::Bh2 => hh.exp_m1(),
        };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut b = Vec::with_capacity(order);
        for q in 1..=order {
            b.push(h_phi_k * factorial / b_h);
            factorial *= (q + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        (h_phi_1, b_h, b)
    }

    /// UniC: corrects `x` (the sample given to step `i`) using the new x0 and the history.
    fn corrector(&self, x0: &Tensor, i: usize) -> Result<Tensor> {
        let p = self.this_order;
        let (last, m0) = match (&self.last_sample, self.history.back()) {
            (Some(l), Some(m)) => (l, m),
            _ => return Err(SamplingError::StepOutOfOrder { got: i, expected: 0 }),
        };
        let (lam_t, lam_s0) = (self.lambda[i], self.lambda[i - 1]);
        let h = lam_t - lam_s0;
        let mut rks = Vec::with_capacity(p);
        let mut diffs = Vec::with_capacity(p);
        for k in 1..p {
            let si = i.checked_sub(k + 1).ok_or(SamplingError::StepOutOfOrder { got: i, expected: k + 1 })?;
            let mk = history_back(&self.history, k, i)?;
            rks.push((self.lambda[si] - lam_s0) / h);
            diffs.push((mk - m0)?);
        }
        rks.push(1.0);
        let (h_phi_1, b_h, b) = self.b_coefficients(h, p);
        let rhos = if p == 1 { vec![0.5] } else { solve(vandermonde(&rks, p), b)? };
        let a_t = self.alpha[i];
        let d_t = (x0 - m0)?;
        let mut terms: Vec<(f64, &Tensor)> = vec![(self.sigma_t[i] / self.sigma_t[i - 1], last), (-a_t * h_phi_1, m0)];
        for (k, d) in diffs.iter().enumerate() {
            terms.push((-a_t * b_h * rhos[k] / rks[k], d));
        }
        terms.push((-a_t * b_h * rhos[p - 1], &d_t));
        linear_combination(&terms)
    }

    /// UniP: predicts the sample at step `i + 1` from `x` (corrected) with `history` (newest = x0ᵢ).
    fn predictor(&self, x: &Tensor, history: &VecDeque<Tensor>, i: usize, order: usize) -> Result<Tensor> {
        let m0 = history.back().ok_or(SamplingError::StepOutOfOrder { got: i, expected: 0 })?;
        let (lam_t, lam_s0) = (self.lambda[i + 1], self.lambda[i]);
        let h = lam_t - lam_s0;
        let mut rks = Vec::with_capacity(order);
        let mut diffs = Vec::with_capacity(order);
        for k in 1..order {
            let si = i.checked_sub(k).ok_or(SamplingError::StepOutOfOrder { got: i, expected: k })?;
            let mk = history_back(history, k, i)?;
            rks.push((self.lambda[si] - lam_s0) / h);
            diffs.push((mk - m0)?);
        }
        rks.push(1.0);
        let (h_phi_1, b_h, b) = self.b_coefficients(h, order);
        let rhos = match order {
            1 => Vec::new(),
            // diffusers hard-codes ρ = 0.5 for the order-2 predictor instead of solving.
            2 => vec![0.5],
            _ => {
                let r = vandermonde(&rks, order);
                let r: Vec<Vec<f64>> = r[..order - 1].iter().map(|row| row[..order - 1].to_vec()).collect();
                solve(r, b[..order - 1].to_vec())?
            }
        };
        let a_t = self.alpha[i + 1];
        let mut terms: Vec<(f64, &Tensor)> = vec![(self.sigma_t[i + 1] / self.sigma_t[i], x), (-a_t * h_phi_1, m0)];
        for (k, d) in diffs.iter().enumerate() {
            terms.push((-a_t * b_h * rhos[k] / rks[k], d));
        }
        linear_combination(&terms)
    }
}

/// The x0 `k` steps before the newest one in `history`.
fn history_back(history: &VecDeque<Tensor>, k: usize, i: usize) -> Result<&Tensor> {
    history
        .len()
        .checked_sub(k + 1)
        .and_then(|j| history.get(j))
        .ok_or(SamplingError::StepOutOfOrder { got: i, expected: k })
}

/// `R[q][j] = rks[j]^q` for q in 0..order (diffusers' `torch.pow(rks, q)` rows).
fn vandermonde(rks: &[f64], order: usize) -> Vec<Vec<f64>> {
    (0..order).map(|q| rks.iter().map(|r| r.powi(q as i32)).collect()).collect()
}

/// Solves the small dense system `a·x = b` (Gaussian elimination with partial pivoting).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
            .filter(|&p| a[p][col] != 0.0 && a[p][col].is_finite())
            .ok_or_else(|| SamplingError::InvalidConfig("UniPC: singular coefficient system".into()))?;
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col].clone();
        for row in col + 1..n {
            let f = a[row][col] / pivot_row[col];
            for (v, p) in a[row].iter_mut().zip(&pivot_row).skip(col) {
                *v -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|c| a[row][c] * x[c]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Ok(x)
}

impl Scheduler for UniPcScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::UniPc
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let timesteps = unipc_timesteps(&self.config, num_inference_steps)?;
        let final_sigma = match self.config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => f64::from(self.schedule.train_sigmas[0]),
        };
        self.sigmas = inference_sigmas(&self.schedule, &timesteps, final_sigma);
        self.timesteps = timesteps;
        self.alpha = self.sigmas.iter().map(|s| 1.0 / (s * s + 1.0).sqrt()).collect();
        self.sigma_t = self.sigmas.iter().zip(&self.alpha).map(|(s, a)| s * a).collect();
        // ln(0) = -inf for the final sigma: λ = +inf flows through h, expm1 and the coefficients.
        self.lambda = self.alpha.iter().zip(&self.sigma_t).map(|(a, s)| a.ln() - s.ln()).collect();
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
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        check_step_index(step_index, self.timesteps.len())?;
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let i = step_index;
        let n = self.timesteps.len();
        check_step_index(i, n)?;
        if let Some(expected) = self.next_index {
            if i != expected {
                return Err(SamplingError::StepOutOfOrder { got: i, expected });
            }
        }
        let out_dtype = sample.dtype();
        let x = to_compute(sample, out_dtype)?;
        let eps = to_compute(model_output, out_dtype)?;
        // 1. x0 from the *uncorrected* sample (the model input).
        let x0 = self.convert_model_output(&eps, &x, i)?;
        // 2. Corrector with the previous step's order.
        let use_corrector = i > 0 && !self.config.disable_corrector.contains(&(i - 1)) && self.last_sample.is_some();
        let x = if use_corrector { self.corrector(&x0, i)? } else { x };
        // 3. History and order (state is committed only once everything succeeded).
        let order_cap = self.config.solver_order;
        let mut history = self.history.clone();
        if history.len() == order_cap {
            history.pop_front();
        }
        history.push_back(x0);
        let mut order = if self.config.lower_order_final { order_cap.min(n - i) } else { order_cap };
        order = order.min(self.lower_order_nums + 1);
        // 4. Predictor.
        let next = self.predictor(&x, &history, i, order)?;
        self.history = history;
        self.this_order = order;
        self.last_sample = Some(x);
        self.lower_order_nums = (self.lower_order_nums + 1).min(order_cap);
        self.next_index = Some(i + 1);
        Ok(next.to_dtype(out_dtype)?)
    }

    fn pred_original_sample(&self) -> Option<&Tensor> {
        self.history.back()
    }

    fn reset(&mut self) {
        self.history.clear();
        self.last_sample = None;
        self.this_order = 0;
        self.lower_order_nums = 0;
        self.next_index = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::noise::NoNoise;
    use candle_core::{DType, Device};

    #[test]
    fn solve_small_systems() -> Result<()> {
        let x = solve(vec![vec![1.0, 1.0], vec![-2.0, 1.0]], vec![3.0, 0.0])?;
        assert!((x[0] - 1.0).abs() < 1e-15 && (x[1] - 2.0).abs() < 1e-15);
        assert!(solve(vec![vec![1.0, 1.0], vec![1.0, 1.0]], vec![1.0, 2.0]).is_err());
        Ok(())
    }

    #[test]
    fn last_step_returns_x0_exactly_and_orders_follow_diffusers() -> Result<()> {
        let mut s = UniPcScheduler::new(&SchedulerConfig::sdxl(), 5)?;
        assert_eq!(s.sigmas().len(), 6);
        assert_eq!(s.sigmas()[5], 0.0);
        assert_eq!(s.lambda[5], f64::INFINITY);
        let dev = Device::Cpu;
        let mut x = Tensor::randn(0f32, 1f32, (1, 4, 3, 2), &dev)?;
        let mut orders = Vec::new();
        for i in 0..5 {
            let eps = (x.tanh()? * 0.9)?;
            x = s.step(&eps, i, &x, &mut NoNoise)?;
            orders.push(s.last_order());
        }
        assert_eq!(orders, vec![1, 2, 2, 2, 1]);
        let x0 = s.pred_original_sample().expect("x0").clone();
        let diff = (x - x0)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }

    #[test]
    fn out_of_order_steps_are_rejected_and_reset_restarts() -> Result<()> {
        let mut s = UniPcScheduler::new(&SchedulerConfig::sdxl(), 3)?;
        let x = Tensor::ones((1, 2), DType::F32, &Device::Cpu)?;
        s.step(&x, 0, &x, &mut NoNoise)?;
        assert!(matches!(s.step(&x, 2, &x, &mut NoNoise), Err(SamplingError::StepOutOfOrder { got: 2, expected: 1 })));
        assert!(matches!(s.step(&x, 3, &x, &mut NoNoise), Err(SamplingError::StepOutOfRange { .. })));
        s.reset();
        // Starting mid-schedule (img2img's begin index) works after a reset, with order 1.
        s.step(&x, 1, &x, &mut NoNoise)?;
        assert_eq!(s.last_order(), 1);
        Ok(())
    }

    #[test]
    fn half_precision_latents_keep_their_dtype() -> Result<()> {
        let mut s = UniPcScheduler::new(&SchedulerConfig::sdxl(), 3)?;
        let x = Tensor::ones((1, 2), DType::BF16, &Device::Cpu)?;
        let eps = Tensor::ones((1, 2), DType::F32, &Device::Cpu)?;
        for i in 0..3 {
            let y = s.step(&eps, i, &x, &mut NoNoise)?;
            assert_eq!(y.dtype(), DType::BF16);
        }
        Ok(())
    }
}
