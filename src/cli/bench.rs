//! `storymaker bench unet`: times SDXL UNet evaluations with random full-size weights.
//!
//! Reports milliseconds per denoising step (one UNet call on the CFG batch), measured after
//! warm-up with the device synchronised, so figures can be compared with diffusers in one run.

use std::time::Instant;

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::args::Args;
use crate::models::unet::{UNet2DConditionModel, UNetConfig, UNetInput};

pub const HELP: &str = "storymaker bench unet [--size 1024] [--batch 2] [--dtype bf16] [--steps 20] [--warmup 2]
                      [--device auto|cpu|cuda] [--config sdxl|FILE.json] [--kernels fused|reference]
                      [--profile 3] [--adapter 60] [--lora-rank 128]
  Builds the SDXL UNet with random weights (full size by default) and times --steps UNet calls
  on a batch of --batch latents of --size/8 pixels (batch 2 = one CFG step). On the CPU use a
  small --size (e.g. 256) and --dtype f32. --kernels reference turns our fused CUDA kernels off
  (attention, GroupNorm, GEGLU, biases, cuDNN) to time the difference in the same run. --profile N then runs N more steps
  with the device synchronised around every layer group and prints where the time goes (per step).
  --adapter N attaches random StoryMaker processors to all 140 attentions (LoRA of --lora-rank on
  q/k/v/out, the decoupled image branch) and appends N image tokens to the context (60 = two
  characters, 40 = one), which is what every StoryMaker generation runs.";

pub fn run(args: &Args) -> anyhow::Result<()> {
    match args.positional.first().map(String::as_str) {
        Some("face") => return super::bench_face::run(args),
        Some("segment") => return super::bench_segment::run(args),
        Some("kernels") => return super::bench_kernels::run(args),
        _ => {}
    }
    if args.has("help") || args.positional.first().map(String::as_str) != Some("unet") {
        let others = [super::bench_kernels::HELP, super::bench_face::HELP, super::bench_segment::HELP];
        println!("{HELP}\n\n{}", others.join("\n\n"));
        return Ok(());
    }
    let device = super::parse_device(args.get_or("device", "auto"))?;
    match args.get_or("kernels", "fused") {
        "fused" => crate::kernels::set_fused(true),
        "reference" => crate::kernels::set_fused(false),
        other => anyhow::bail!("--kernels must be fused or reference, not {other}"),
    }
    let dtype = super::parse_dtype(args.get_or("dtype", if device.is_cpu() { "f32" } else { "bf16" }))?;
    let size: usize = args.parse_or("size", if device.is_cpu() { 256 } else { 1024 })?;
    let batch: usize = args.parse_or("batch", 2)?;
    let steps: usize = args.parse_or("steps", 20)?;
    let warmup: usize = args.parse_or("warmup", 2)?;
    let config = match args.get_or("config", "sdxl") {
        "sdxl" => UNetConfig::sdxl_base(),
        path => UNetConfig::from_json(&std::fs::read(path)?).map_err(anyhow::Error::msg)?,
    };
    anyhow::ensure!(size.is_multiple_of(8) && size >= 64, "--size must be a multiple of 8, at least 64");
    let t0 = Instant::now();
    let init = RandomWeights { params: Default::default(), lora_rank: 0 };
    let vb = VarBuilder::from_backend(Box::new(init.clone()), dtype, device.clone());
    let mut unet = UNet2DConditionModel::new(vb, &config)?;
    let params = init.params.load(Ordering::Relaxed);
    println!(
        "unet: {:.1}M parameters, random weights, {dtype:?} on {device:?}, built in {:.1}s",
        params as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    let image_tokens: usize = args.parse_or("adapter", 0)?;
    if image_tokens > 0 {
        let rank: usize = args.parse_or("lora-rank", 128)?;
        let backend = RandomWeights { params: init.params.clone(), lora_rank: rank };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let scales = std::sync::Arc::new(crate::models::adapter::AdapterScales::default());
        let n = crate::models::adapter::attach_ip_adapter(&mut unet, vb.pp("ip_adapter"), scales)?;
        println!("adapter: {n} StoryMaker processors (LoRA rank {rank}), {image_tokens} image tokens");
    }
    let lat = size / 8;
    let sample = Tensor::randn(0f32, 1.0, (batch, config.in_channels, lat, lat), &device)?.to_dtype(dtype)?;
    let timesteps = Tensor::full(500f32, batch, &device)?;
    let context =
        Tensor::randn(0f32, 1.0, (batch, 77 + image_tokens, config.cross_attention_dim), &device)?.to_dtype(dtype)?;
    let pooled_dim = config.text_time().map(|(t, p)| p - 6 * t).unwrap_or(0);
    let text_embeds = Tensor::randn(0f32, 1.0, (batch, pooled_dim), &device)?.to_dtype(dtype)?;
    let ids = crate::pipeline::sdxl_time_ids(size, size, batch, dtype, &device)?;
    let input = UNetInput {
        sample: &sample,
        timesteps: &timesteps,
        encoder_hidden_states: &context,
        text_embeds: config.text_time().map(|_| &text_embeds),
        time_ids: config.text_time().map(|_| &ids),
        down_residuals: None,
        mid_residual: None,
    };
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t = Instant::now();
        let out = unet.forward(&input)?;
        device.synchronize()?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if i == 0 {
            let finite = out.to_dtype(DType::F32)?.abs()?.max_all()?.to_scalar::<f32>()?;
            anyhow::ensure!(finite.is_finite(), "the UNet produced non-finite values");
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    let mut kernels =
        if crate::kernels::fused_enabled() && device.is_cuda() { "fused" } else { "reference" }.to_string();
    if image_tokens > 0 {
        kernels += &format!(" +adapter ({image_tokens} image tokens)");
    }
    println!(
        "bench unet size={size} batch={batch} dtype={dtype:?} steps={steps} kernels={kernels}: mean {mean:.2} ms/step, median {median:.2}, min {:.2}, max {:.2}",
        times.first().copied().unwrap_or(0.0),
        times.last().copied().unwrap_or(0.0)
    );
    let profile_steps: usize = args.parse_or("profile", 0)?;
    if profile_steps > 0 {
        print_profile(&unet, &input, &device, profile_steps, median)?;
    }
    Ok(())
}

/// Runs `steps` profiled UNet calls and prints the time per category and step ([`crate::kernels::profile`]).
fn print_profile(
    unet: &UNet2DConditionModel,
    input: &UNetInput,
    device: &Device,
    steps: usize,
    unprofiled_ms: f64,
) -> anyhow::Result<()> {
    use crate::kernels::profile;
    profile::reset();
    profile::enable(true);
    let t = Instant::now();
    let result = (0..steps).try_for_each(|_| unet.forward(input).map(drop));
    device.synchronize()?;
    profile::enable(false);
    result?;
    let wall = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    let table = profile::table();
    let total: f64 = table.iter().map(|e| e.ms).sum::<f64>() / steps as f64;
    println!("profile: {steps} steps, {wall:.2} ms/step profiled ({unprofiled_ms:.2} unprofiled); per step:");
    for e in &table {
        let ms = e.ms / steps as f64;
        println!("  {:24} {:6} calls {ms:8.2} ms {:5.1}%", e.name, e.calls / steps as u64, 100.0 * ms / wall.max(1e-9));
    }
    println!(
        "  {:24} {:>6}       {:8.2} ms {:5.1}%",
        "(outside scopes)",
        "",
        wall - total,
        100.0 * (wall - total) / wall.max(1e-9)
    );
    for line in crate::kernels::conv::tuning_report() {
        println!("cuDNN {line}");
    }
    Ok(())
}

/// Random weights with sane scales (N(0, 1/fan_in) matrices, unit norms, zero biases), drawn in
/// f32 on the device and cast, so every dtype works and activations stay finite.
#[derive(Clone)]
struct RandomWeights {
    params: std::sync::Arc<AtomicUsize>,
    /// The rank the adapter's LoRA `down` weights report (the loader reads it from the weights).
    lora_rank: usize,
}

impl SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.params.fetch_add(s.elem_count(), Ordering::Relaxed);
        let dims = s.dims();
        let t = if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            Tensor::randn(0f32, (1.0 / fan_in.max(1) as f64).sqrt() as f32, s, dev)?
        } else if name.ends_with("weight") {
            Tensor::ones(s, DType::F32, dev)?
        } else {
            Tensor::zeros(s, DType::F32, dev)?
        };
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        // The LoRA loader only reads the rank (dim 0) this way, then asks for the full shape.
        if self.lora_rank > 0 && name.ends_with("down.weight") {
            return Tensor::zeros((self.lora_rank, 1), dtype, dev);
        }
        Err(candle_core::Error::Msg(format!("random weights need a shape for {name}")))
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}
