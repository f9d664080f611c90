//! Parity of `sampling` with diffusers 0.42.1's `UniPCMultistepScheduler`, `EulerDiscreteScheduler`
//! and `EulerAncestralDiscreteScheduler` on the teacher-forced fixtures (`tests/fixtures/parity/`,
//! `sched_*.safetensors`; formulas and edge cases in `tools/parity/README.md`), plus the CFG
//! combination and UniPC loop of the end-to-end fixture (`e2e_txt2img.safetensors`).
//!
//! The schedulers are fed the recorded model outputs (and, for Euler-A, the recorded noise) and run
//! closed-loop on their own samples; every intermediate must match within 1e-4 relative
//! (`max|a−b| / max|b|`). Run with `--nocapture` to see the measured errors.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use storymaker::sampling::config::SchedulerConfig;
use storymaker::sampling::{
    EulerAncestralScheduler, EulerScheduler, Guidance, NoNoise, RecordedNoise, Scheduler, UniPcScheduler,
};

use common::{max_rel_err, parity_fixture};

const TOL: f32 = 1e-4;
/// Two float32 ulps, relative.
const SIGMA_TOL: f64 = 2.4e-7;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Fixture = HashMap<String, Tensor>;

fn load(name: &str) -> Result<Fixture, Box<dyn std::error::Error>> {
    Ok(candle_core::safetensors::load(parity_fixture(name), &Device::Cpu)?)
}

fn get<'a>(fx: &'a Fixture, key: &str) -> Result<&'a Tensor, Box<dyn std::error::Error>> {
    fx.get(key).ok_or_else(|| format!("fixture tensor `{key}` missing").into())
}

fn values(t: &Tensor) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// SDXL base's scheduler config: the input of every `from_config` in the fixtures.
fn sdxl_config() -> Result<SchedulerConfig, Box<dyn std::error::Error>> {
    Ok(SchedulerConfig::from_json_file(&parity_fixture("sched_sdxl_base.config.json"))?)
}

/// Tracks the largest relative error of one quantity across steps.
#[derive(Default)]
struct Worst(f32, usize);

impl Worst {
    fn check(&mut self, what: &str, step: usize, ours: &Tensor, reference: &Tensor) {
        let err = max_rel_err(ours, reference);
        assert!(err < TOL, "{what} at step {step}: relative error {err:e} >= {TOL:e}");
        if err > self.0 {
            *self = Worst(err, step);
        }
    }
    fn report(&self, what: &str) {
        println!("{what}: max relative error {:.3e} (step {})", self.0, self.1);
    }
}

fn assert_tables(s: &dyn Scheduler, fx: &Fixture, prefix: &str) -> TestResult {
    let (ts, sig) = (values(get(fx, &format!("{prefix}timesteps"))?)?, values(get(fx, &format!("{prefix}sigmas"))?)?);
    assert_eq!(s.timesteps(), ts.as_slice(), "{prefix}timesteps");
    // torch's float32 sqrt (MKL) is not correctly rounded: about a fifth of the training sigmas
    // differ from IEEE sqrt by one ulp, so the tables agree to float32 rounding, not bit for bit.
    assert_eq!(s.sigmas().len(), sig.len(), "{prefix}sigmas length");
    for (j, (a, b)) in s.sigmas().iter().zip(&sig).enumerate() {
        assert!((a - b).abs() <= SIGMA_TOL * b.abs(), "{prefix}sigmas[{j}]: {a} vs {b}");
    }
    Ok(())
}

#[test]
fn unipc_config_files_resolve_to_the_same_scheduler() -> TestResult {
    let from_base = UniPcScheduler::new(&sdxl_config()?, 25)?;
    let own = SchedulerConfig::from_json_file(&parity_fixture("sched_unipc.config.json"))?;
    let from_own = UniPcScheduler::new(&own, 25)?;
    assert_eq!(from_base.timesteps(), from_own.timesteps());
    assert_eq!(from_base.sigmas(), from_own.sigmas());
    Ok(())
}

#[test]
fn unipc_tables_match_diffusers() -> TestResult {
    let fx = load("sched_unipc.safetensors")?;
    let cfg = sdxl_config()?;
    let s = UniPcScheduler::new(&cfg, 25)?;
    let ac: Vec<f32> = get(&fx, "alphas_cumprod")?.to_vec1::<f32>()?;
    assert_eq!(s.noise_schedule().alphas_cumprod, ac, "alphas_cumprod (float32, bit for bit)");
    assert_eq!(s.init_noise_sigma(), values(get(&fx, "init_noise_sigma")?)?[0]);
    assert_eq!(get(&fx, "n25.timesteps")?.dtype(), DType::I64);
    assert_tables(&s, &fx, "n25.")?;
    for n in [1, 3, 4, 5, 7, 10, 30, 50] {
        assert_tables(&UniPcScheduler::new(&cfg, n)?, &fx, &format!("table.n{n}."))?;
    }
    Ok(())
}

fn run_unipc(fx: &Fixture, n: usize) -> TestResult {
    let mut s = UniPcScheduler::new(&sdxl_config()?, n)?;
    let p = format!("n{n}.");
    assert_tables(&s, fx, &p)?;
    let (samples, outputs) = (get(fx, &format!("{p}samples"))?, get(fx, &format!("{p}model_outputs"))?);
    let (x0s, corrected) = (get(fx, &format!("{p}x0"))?, get(fx, &format!("{p}corrected"))?);
    let orders = values(get(fx, &format!("{p}orders"))?)?;
    assert_eq!(orders.len(), n);
    let (mut w_sample, mut w_x0, mut w_corr) = (Worst::default(), Worst::default(), Worst::default());
    let mut x = samples.get(0)?;
    for (i, &order) in orders.iter().enumerate() {
        let x_in = s.scale_model_input(&x, i)?;
        assert_eq!(max_rel_err(&x_in, &x), 0.0, "UniPC's model input is the sample");
        x = s.step(&outputs.get(i)?, i, &x, &mut NoNoise)?;
        assert_eq!(s.last_order() as f64, order, "predictor order at step {i}");
        w_x0.check("x0", i, s.pred_original_sample().ok_or("x0")?, &x0s.get(i)?);
        w_corr.check("corrected", i, s.corrected_sample().ok_or("corrected")?, &corrected.get(i)?);
        w_sample.check("sample", i + 1, &x, &samples.get(i + 1)?);
    }
    // The last step returns the last x0 exactly (σ = 0, no special case).
    assert_eq!(max_rel_err(&x, s.pred_original_sample().ok_or("x0")?), 0.0);
    w_sample.report(&format!("UniPC n={n} samples"));
    w_x0.report(&format!("UniPC n={n} x0"));
    w_corr.report(&format!("UniPC n={n} corrected"));
    Ok(())
}

#[test]
fn unipc_25_steps_match_diffusers() -> TestResult {
    run_unipc(&load("sched_unipc.safetensors")?, 25)
}

#[test]
fn unipc_2_steps_match_diffusers() -> TestResult {
    run_unipc(&load("sched_unipc.safetensors")?, 2)
}

/// Euler and Euler-A share tables, input scaling and the recorded-run layout.
fn run_euler_family(mut s: Box<dyn Scheduler>, fx: &Fixture, name: &str, recorded_noise: bool) -> TestResult {
    let cfg = sdxl_config()?;
    assert_eq!(get(fx, "timesteps")?.dtype(), DType::F32);
    assert_tables(s.as_ref(), fx, "")?;
    assert_eq!(s.init_noise_sigma(), values(get(fx, "init_noise_sigma")?)?[0], "init_noise_sigma");
    for n in [1, 3, 10, 50] {
        let t = storymaker::sampling::build_scheduler(s.kind(), &cfg, n)?;
        assert_tables(t.as_ref(), fx, &format!("table.n{n}."))?;
    }
    let n = s.num_inference_steps();
    let (samples, outputs) = (get(fx, "samples")?, get(fx, "model_outputs")?);
    let (scaled, preds) = (get(fx, "scaled_inputs")?, get(fx, "pred_original")?);
    let mut noise = if recorded_noise { Some(RecordedNoise::new(get(fx, "noise")?.clone())) } else { None };
    let (mut w_sample, mut w_in, mut w_pred) = (Worst::default(), Worst::default(), Worst::default());
    let mut x = samples.get(0)?;
    for i in 0..n {
        w_in.check("scaled input", i, &s.scale_model_input(&x, i)?, &scaled.get(i)?);
        x = match noise.as_mut() {
            Some(z) => s.step(&outputs.get(i)?, i, &x, z)?,
            None => s.step(&outputs.get(i)?, i, &x, &mut NoNoise)?,
        };
        w_pred.check("pred_original", i, s.pred_original_sample().ok_or("pred")?, &preds.get(i)?);
        w_sample.check("sample", i + 1, &x, &samples.get(i + 1)?);
    }
    w_sample.report(&format!("{name} samples"));
    w_in.report(&format!("{name} scaled inputs"));
    w_pred.report(&format!("{name} pred_original"));
    Ok(())
}

#[test]
fn euler_25_steps_match_diffusers() -> TestResult {
    let fx = load("sched_euler.safetensors")?;
    // Euler (s_churn = 0) never draws: NoNoise would fail the step if it did.
    run_euler_family(Box::new(EulerScheduler::new(&sdxl_config()?, 25)?), &fx, "Euler", false)
}

#[test]
fn euler_ancestral_25_steps_match_diffusers() -> TestResult {
    let fx = load("sched_euler_a.safetensors")?;
    run_euler_family(Box::new(EulerAncestralScheduler::new(&sdxl_config()?, 25)?), &fx, "Euler-A", true)
}

#[test]
fn e2e_guidance_and_unipc_loop_match_the_pipeline() -> TestResult {
    let fx = load("e2e_txt2img.safetensors")?;
    let mut s = UniPcScheduler::new(&sdxl_config()?, 3)?;
    assert_tables(&s, &fx, "")?;
    let guidance = Guidance::new(5.0);
    assert!(guidance.is_active());
    let (unet_out, guided, latents) = (get(&fx, "step.unet_out")?, get(&fx, "step.guided")?, get(&fx, "step.latents")?);
    let (mut w_guided, mut w_latents) = (Worst::default(), Worst::default());
    let mut x = get(&fx, "latents_0")?.affine(s.init_noise_sigma(), 0.0)?;
    assert_eq!(max_rel_err(&x, get(&fx, "init_noise")?), 0.0);
    for i in 0..3 {
        // The UNet batch is [uncond, cond] of the same latents.
        let batch = guidance.batch(&x, &x)?;
        assert_eq!(batch.dims()[0], 2);
        let eps = guidance.combine(&unet_out.get(i)?)?;
        w_guided.check("guided", i, &eps, &guided.get(i)?);
        // Teacher-force the recorded guided output so only the scheduler is tested here.
        x = s.step(&guided.get(i)?, i, &x, &mut NoNoise)?;
        w_latents.check("latents", i, &x, &latents.get(i)?);
    }
    w_latents.check("final_latents", 3, &x, get(&fx, "final_latents")?);
    w_guided.report("CFG g=5 guided output");
    w_latents.report("e2e UniPC 3-step latents");
    Ok(())
}
