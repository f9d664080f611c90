//! Compiles our CUDA kernels (src/kernels/*.cu) to PTX when the `cuda` feature is on (issue 9).
//!
//! The `cuda` build already needs nvcc (candle-kernels runs it; shared/cuda/README.md), so ours are compiled the
//! same way: PTX for `CUDA_COMPUTE_CAP` (default 80: the kernels use sm_80 bf16 tensor-core instructions; newer
//! GPUs JIT the PTX), embedded with `include_str!` and loaded once per device. The CPU build does nothing here.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: &[&str] = &["flash_attention", "group_norm", "elementwise"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap: u32 = std::env::var("CUDA_COMPUTE_CAP").ok().and_then(|c| c.trim().parse().ok()).unwrap_or(80);
    assert!(cap >= 80, "the fused kernels need compute capability 8.0 or newer (CUDA_COMPUTE_CAP={cap})");
    println!("cargo:rerun-if-changed=src/kernels/elem.cuh");
    for name in KERNELS {
        let src = format!("src/kernels/{name}.cu");
        println!("cargo:rerun-if-changed={src}");
        let ptx = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["-ptx", "-O3", "-std=c++17", "--use_fast_math"])
            .arg(format!("-arch=compute_{cap}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {nvcc} for {src}: {e} (see shared/cuda/README.md)"));
        assert!(status.success(), "{nvcc} failed on {src}");
    }
}
