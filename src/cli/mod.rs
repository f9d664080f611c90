//! Command-line subcommands next to the GUI: `bench` and `tensor-check` (ARCHITECTURE.md "cli").

pub mod adapter_check;
pub mod args;
pub mod bench;
pub mod bench_face;
pub mod bench_kernels;
pub mod bench_segment;
pub mod controlnet_check;
pub mod render;
pub mod tensor_check;

use candle_core::{DType, Device};

/// `auto` picks CUDA when built with the `cuda` feature and a GPU exists, else the CPU.
pub fn parse_device(name: &str) -> anyhow::Result<Device> {
    Ok(match name {
        "cpu" => Device::Cpu,
        "cuda" | "gpu" => Device::new_cuda(0)
            .map_err(|e| anyhow::anyhow!("CUDA is not available ({e}); build with --features cuda on a GPU machine"))?,
        "auto" => Device::cuda_if_available(0)?,
        other => anyhow::bail!("unknown device {other} (cpu, cuda or auto)"),
    })
}

pub fn parse_dtype(name: &str) -> anyhow::Result<DType> {
    Ok(match name {
        "f32" | "fp32" | "float32" => DType::F32,
        "f16" | "fp16" | "float16" => DType::F16,
        "bf16" | "bfloat16" => DType::BF16,
        other => anyhow::bail!("unknown dtype {other} (f32, f16 or bf16)"),
    })
}
