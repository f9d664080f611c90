//! `storymaker bench kernels`: our fused CUDA kernels (issue 9) against the candle-ops reference paths they
//! replace, for every shape the models use, on random inputs: accuracy (both paths against an f32 computation
//! from the same rounded inputs) and time. The device check (tools/gpu/run_checks.sh) runs it; it fails (non-zero
//! exit) when a fused result is further from the f32 result than the tolerance.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::args::Args;
use crate::kernels::conv::{conv2d, Conv2d};
use crate::kernels::group_norm::FusedGroupNorm;
use crate::kernels::{elementwise, flash_attention, set_fused};
use crate::models::attention::sdpa_reference;

pub const HELP: &str = "storymaker bench kernels [--dtype bf16|f16] [--runs 20] [--device cuda]
  Fused attention vs the reference path on the shapes of SDXL at 1024² and 768² (self and cross attention,
  CFG batch 2), CLIP-L/G text, CLIP ViT-H/14 and odd lengths; fused GroupNorm(+SiLU) vs candle's on the
  UNet and VAE shapes. Prints max |error| of each path against f32 and the time of each; exits non-zero
  when a fused kernel is out of tolerance. Needs a CUDA build and GPU.";

/// `(label, shape, groups, eps, silu)` of the GroupNorms in the UNet and the VAE decoder at 1024².
const NORM_SHAPES: &[(&str, [usize; 4], usize, f64, bool)] = &[
    ("unet resnet 320 @128²", [2, 320, 128, 128], 32, 1e-5, true),
    ("unet resnet 640 @64²", [2, 640, 64, 64], 32, 1e-5, true),
    ("unet resnet 1280 @32²", [2, 1280, 32, 32], 32, 1e-5, true),
    ("unet transformer norm 640 @64²", [2, 640, 64, 64], 32, 1e-6, false),
    ("vae resnet 512 @128²", [1, 512, 128, 128], 32, 1e-6, true),
    ("vae resnet 128 @1024²", [1, 128, 1024, 1024], 32, 1e-6, true),
];

/// `(label, batch, heads, query tokens, key tokens, head dim)`.
const SHAPES: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("unet 1024² level-1 self", 2, 10, 4096, 4096, 64),
    ("unet 1024² level-1 cross", 2, 10, 4096, 77, 64),
    ("unet 1024² level-1 adapter tokens", 2, 10, 4096, 32, 64),
    ("unet 1024² level-2 self", 2, 20, 1024, 1024, 64),
    ("unet 1024² level-2 cross", 2, 20, 1024, 77, 64),
    ("unet 768² level-1 self", 2, 10, 2304, 2304, 64),
    ("unet 768² level-2 self", 2, 20, 576, 576, 64),
    ("clip-l text", 2, 12, 77, 77, 64),
    ("clip-g text", 2, 20, 77, 77, 64),
    ("clip vit-h/14 vision", 4, 16, 257, 257, 80),
    ("odd lengths", 3, 5, 1000, 333, 64),
    ("odd lengths d80", 1, 3, 130, 65, 80),
];

fn max_abs(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn time(device: &Device, runs: usize, f: impl Fn() -> candle_core::Result<Tensor>) -> anyhow::Result<f64> {
    f()?;
    device.synchronize()?;
    let t = Instant::now();
    for _ in 0..runs {
        f()?;
    }
    device.synchronize()?;
    Ok(t.elapsed().as_secs_f64() * 1e3 / runs as f64)
}

/// Bound on the fused result's distance to f32: twice the reference path's own rounding error plus a few
/// units of the type's epsilon on outputs of size ~1.
fn within(dtype: DType, err_ref: f32, err_fused: f32) -> bool {
    let eps = if dtype == DType::BF16 { 7.8e-3 } else { 9.8e-4 };
    err_fused.is_finite() && err_fused <= 2.0 * err_ref + 4.0 * eps
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.has("help") {
        println!("{HELP}");
        return Ok(());
    }
    let device = super::parse_device(args.get_or("device", "cuda"))?;
    anyhow::ensure!(device.is_cuda(), "the fused attention kernel runs on CUDA only (build with --features cuda)");
    let dtype = super::parse_dtype(args.get_or("dtype", "bf16"))?;
    anyhow::ensure!(matches!(dtype, DType::F16 | DType::BF16), "--dtype must be f16 or bf16");
    let runs: usize = args.parse_or("runs", 20)?;
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    let mut failures = Vec::new();
    let (mut total_ref, mut total_fused) = (0.0, 0.0);
    for &(label, b, h, tq, tk, d) in SHAPES {
        // Q/K/V as the UNet makes them: projections [B, T, H*D] viewed as [B, H, T, D] (strided, no copy).
        let heads_view = |t: usize| -> anyhow::Result<Tensor> {
            let x = Tensor::randn(0f32, 1.0, (b, t, h * d), &device)?.to_dtype(dtype)?;
            Ok(x.reshape((b, t, h, d))?.transpose(1, 2)?)
        };
        let (q, k, v) = (heads_view(tq)?, heads_view(tk)?, heads_view(tk)?);
        anyhow::ensure!(flash_attention::supported(&q, &k, &v), "{label}: the fused kernel does not take this shape");
        let exact = sdpa_reference(
            &q.to_dtype(DType::F32)?.contiguous()?,
            &k.to_dtype(DType::F32)?.contiguous()?,
            &v.to_dtype(DType::F32)?.contiguous()?,
        )?;
        let (qc, kc, vc) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        let reference = sdpa_reference(&qc, &kc, &vc)?;
        let err_ref = max_abs(&reference, &exact)?;
        // The reference path gets contiguous heads (what split_heads gives it); the fused one reads the view.
        let t_ref = time(&device, runs, || sdpa_reference(&qc, &kc, &vc))?;
        total_ref += t_ref;
        let fused = flash_attention::flash_attention(&q, &k, &v)?;
        anyhow::ensure!(
            fused.dims() == reference.dims(),
            "{label}: shape {:?} vs {:?}",
            fused.dims(),
            reference.dims()
        );
        // The fused kernel rounds P to the input type like the reference's softmax output.
        let err_fused = max_abs(&fused, &exact)?;
        let ok = within(dtype, err_ref, err_fused);
        if !ok {
            failures.push(label);
        }
        let t_fused = time(&device, runs, || flash_attention::flash_attention(&q, &k, &v))?;
        total_fused += t_fused;
        println!(
            "{label:36} ({b},{h},{tq},{tk},{d}) max|err| vs f32: reference {err_ref:.2e} fused {err_fused:.2e} {} | \
             reference {t_ref:.3} ms fused {t_fused:.3} ms ({:.1}x)",
            if ok { "ok" } else { "FAIL" },
            t_ref / t_fused.max(1e-9)
        );
    }
    println!(
        "bench kernels attention {dtype:?}: all shapes reference {total_ref:.2} ms, fused {total_fused:.2} ms ({:.1}x)",
        total_ref / total_fused.max(1e-9),
    );
    let (mut total_ref, mut total_fused) = (0.0, 0.0);
    for &(label, shape, groups, eps, silu) in NORM_SHAPES {
        let c = shape[1];
        let weight = (Tensor::randn(0f32, 0.2, c, &device)? + 1.0)?.to_dtype(dtype)?;
        let bias = Tensor::randn(0f32, 0.2, c, &device)?.to_dtype(dtype)?;
        let norm = FusedGroupNorm::from_tensors(weight.clone(), bias.clone(), groups, eps)?;
        let exact_norm =
            FusedGroupNorm::from_tensors(weight.to_dtype(DType::F32)?, bias.to_dtype(DType::F32)?, groups, eps)?;
        // Activations with a non-zero mean per channel, as after a conv.
        let x = (Tensor::randn(0f32, 1.0, shape.as_slice(), &device)?
            + Tensor::randn(0f32, 2.0, (1, c, 1, 1), &device)?.broadcast_as(shape.as_slice())?)?
        .to_dtype(dtype)?;
        let exact = exact_norm.forward_reference(&x.to_dtype(DType::F32)?, silu)?;
        let fused_out = if silu { norm.forward_silu(&x)? } else { candle_core::Module::forward(&norm, &x)? };
        let reference = norm.forward_reference(&x, silu)?;
        let (err_ref, err_fused) = (max_abs(&reference, &exact)?, max_abs(&fused_out, &exact)?);
        let ok = within(dtype, err_ref, err_fused);
        if !ok {
            failures.push(label);
        }
        let t_ref = time(&device, runs, || norm.forward_reference(&x, silu))?;
        let t_fused =
            time(&device, runs, || if silu { norm.forward_silu(&x) } else { candle_core::Module::forward(&norm, &x) })?;
        total_ref += t_ref;
        total_fused += t_fused;
        println!(
            "{label:36} {shape:?} silu={silu} max|err| vs f32: reference {err_ref:.2e} fused {err_fused:.2e} {} | \
             reference {t_ref:.3} ms fused {t_fused:.3} ms ({:.1}x)",
            if ok { "ok" } else { "FAIL" },
            t_ref / t_fused.max(1e-9)
        );
    }
    println!(
        "bench kernels group norm {dtype:?}: all shapes reference {total_ref:.2} ms, fused {total_fused:.2} ms ({:.1}x)",
        total_ref / total_fused.max(1e-9),
    );
    let fused_ops = fused_ops(&device, dtype, runs, &mut failures)?;
    let checked = SHAPES.len() + NORM_SHAPES.len() + fused_ops;
    println!("bench kernels: {} of {checked} shapes within tolerance", checked - failures.len());
    anyhow::ensure!(failures.is_empty(), "fused kernels out of tolerance on: {}", failures.join(", "));
    Ok(())
}

/// A computation run twice, with the fused kernels off (candle ops: the reference) and on.
type Case<'a> = Box<dyn Fn() -> candle_core::Result<Tensor> + 'a>;

/// Compares the fused and reference paths of one computation against `exact` (its f32 result) and times both.
fn compare(
    label: &str,
    device: &Device,
    dtype: DType,
    runs: usize,
    exact: &Tensor,
    f: Case,
) -> anyhow::Result<(bool, f64, f64)> {
    set_fused(false);
    let reference = f();
    let t_ref = reference.is_ok().then(|| time(device, runs, &f));
    set_fused(true);
    let (reference, t_ref) = (reference?, t_ref.transpose()?.unwrap_or(0.0));
    let fused = f()?;
    let t_fused = time(device, runs, &f)?;
    anyhow::ensure!(fused.dims() == reference.dims(), "{label}: shape {:?} vs {:?}", fused.dims(), reference.dims());
    let (err_ref, err_fused) = (max_abs(&reference, exact)?, max_abs(&fused, exact)?);
    let ok = within(dtype, err_ref, err_fused);
    println!(
        "{label:36} {:?} max|err| vs f32: reference {err_ref:.2e} fused {err_fused:.2e} {} | reference {t_ref:.3} ms \
         fused {t_fused:.3} ms ({:.1}x)",
        exact.dims(),
        if ok { "ok" } else { "FAIL" },
        t_ref / t_fused.max(1e-9)
    );
    Ok((ok, t_ref, t_fused))
}

/// GEGLU, bias + residual and the cuDNN convolution against candle's ops, on the UNet's shapes at 1024²; returns
/// how many shapes were checked and pushes the failing ones.
fn fused_ops(device: &Device, dtype: DType, runs: usize, failures: &mut Vec<&'static str>) -> anyhow::Result<usize> {
    let randn = |shape: &[usize], std: f64| -> anyhow::Result<Tensor> {
        Ok(Tensor::randn(0f32, std as f32, shape, device)?.to_dtype(dtype)?)
    };
    let f32_of = |t: &Tensor| t.to_dtype(DType::F32);
    let mut n = 0;
    let (mut total_ref, mut total_fused) = (0.0, 0.0);
    let mut record = |label: &'static str, r: (bool, f64, f64)| {
        if !r.0 {
            failures.push(label);
        }
        total_ref += r.1;
        total_fused += r.2;
        n += 1;
    };
    let geglu: [(&'static str, [usize; 3]); 2] =
        [("geglu level-1", [2, 4096, 5120]), ("geglu level-2", [2, 1024, 10240])];
    for (label, shape) in geglu {
        let (h, b) = (randn(&shape, 1.0)?, randn(&[shape[2]], 0.5)?);
        set_fused(false);
        let exact = elementwise::geglu(&f32_of(&h)?, &f32_of(&b)?)?;
        record(label, compare(label, device, dtype, runs, &exact, Box::new(|| elementwise::geglu(&h, &b)))?);
    }
    let linear: [(&'static str, [usize; 3]); 2] =
        [("linear bias+residual level-1", [2, 4096, 640]), ("linear bias+residual level-2", [2, 1024, 1280])];
    for (label, shape) in linear {
        let (a, b, r) = (randn(&shape, 1.0)?, randn(&[shape[2]], 0.5)?, randn(&shape, 1.0)?);
        set_fused(false);
        let exact = elementwise::linear_bias_residual(&f32_of(&a)?, &f32_of(&b)?, &f32_of(&r)?)?;
        let case: Case = Box::new(|| elementwise::linear_bias_residual(&a, &b, &r));
        record(label, compare(label, device, dtype, runs, &exact, case)?);
    }
    // (label, input shape, output channels, kernel, stride): the UNet's convolutions at 1024², CFG batch 2.
    let convs: [(&'static str, [usize; 4], usize, usize, usize); 6] = [
        ("conv 3x3 320 @128²", [2, 320, 128, 128], 320, 3, 1),
        ("conv 3x3 640 @64²", [2, 640, 64, 64], 640, 3, 1),
        ("conv 3x3 1280 @32²", [2, 1280, 32, 32], 1280, 3, 1),
        ("conv 3x3 2560->1280 @32²", [2, 2560, 32, 32], 1280, 3, 1),
        ("conv 3x3 s2 320 @128²", [2, 320, 128, 128], 320, 3, 2),
        ("conv 1x1 960->640 @64²", [2, 960, 64, 64], 640, 1, 1),
    ];
    for (label, shape, cout, k, stride) in convs {
        let x = randn(&shape, 1.0)?;
        let cin = shape[1];
        let w = randn(&[cout, cin, k, k], (1.0 / (cin * k * k) as f64).sqrt())?;
        let b = randn(&[cout], 0.5)?;
        let cfg = candle_nn::Conv2dConfig { padding: k / 2, stride, ..Default::default() };
        let make = |w: &Tensor, b: &Tensor| -> candle_core::Result<Conv2d> {
            let mut map = std::collections::HashMap::new();
            map.insert("weight".to_string(), w.clone());
            map.insert("bias".to_string(), b.clone());
            let vb = candle_nn::VarBuilder::from_tensors(map, w.dtype(), device);
            conv2d(cin, cout, k, cfg, vb)
        };
        let (conv, conv32) = (make(&w, &b)?, make(&f32_of(&w)?, &f32_of(&b)?)?);
        set_fused(false);
        let exact = candle_core::Module::forward(&conv32, &f32_of(&x)?)?;
        let case: Case = Box::new(|| candle_core::Module::forward(&conv, &x));
        record(label, compare(label, device, dtype, runs, &exact, case)?);
        if stride == 1 && cin == cout {
            // conv2 of a resnet: bias and the skip connection added in one pass after the bias-free conv.
            let label: &'static str = "conv bias+skip (resnet conv2)";
            let y = conv.forward_no_bias(&x)?;
            set_fused(false);
            let exact = elementwise::conv_bias_residual(&f32_of(&y)?, &f32_of(&b)?, &f32_of(&x)?)?;
            let case: Case = Box::new(|| elementwise::conv_bias_residual(&y, &b, &x));
            record(label, compare(label, device, dtype, runs, &exact, case)?);
        }
    }
    set_fused(true);
    println!(
        "bench kernels fused ops {dtype:?}: all shapes reference {total_ref:.2} ms, fused {total_fused:.2} ms ({:.1}x)",
        total_ref / total_fused.max(1e-9),
    );
    Ok(n)
}
