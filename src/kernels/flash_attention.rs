//! Fused attention (`flash_attention.cu`, FlashAttention-2 style) as a candle custom op, behind the `cuda` feature.
//!
//! [`crate::models::attention::sdpa`] sends CUDA f16/bf16 attention with head dim 64 (SDXL UNet, CLIP-L/G, PPR)
//! or 80 (CLIP ViT-H/14) here; everything else, and every CPU tensor, takes the candle-ops reference path. The
//! kernel reads Q/K/V through their strides (unit stride over the head dimension) and writes O as `[B, Tq, H, D]`
//! contiguous, returned as the `[B, H, Tq, D]` view, so merging heads afterwards is free.
//!
//! Correctness is checked on the device against the reference path (`storymaker bench kernels`, run by
//! tools/gpu/run_checks.sh) for every shape the models use.

use candle_core::{DType, Result, Tensor};

/// Head dimensions with a compiled kernel.
pub const HEAD_DIMS: [usize; 2] = [64, 80];

/// Whether the fused kernel can compute `softmax(q kᵀ / √d) v` for these `[B, H, T, D]` tensors: a CUDA
/// device, f16 or bf16, a head dim in [`HEAD_DIMS`], unit stride over `D` and 16-byte aligned rows (the kernel
/// loads K/V tiles in 16-byte chunks).
pub fn supported(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    if !cfg!(feature = "cuda") || !super::fused_enabled() || !q.device().is_cuda() {
        return false;
    }
    let same = |t: &Tensor| t.dtype() == q.dtype() && t.device().same_device(q.device()) && t.rank() == 4;
    if !(same(k) && same(v) && q.rank() == 4 && matches!(q.dtype(), DType::F16 | DType::BF16)) {
        return false;
    }
    let (Ok((b, h, _, d)), Ok((kb, kh, tk, kd)), Ok(vd)) = (q.dims4(), k.dims4(), v.dims4()) else { return false };
    let aligned = |t: &Tensor| {
        let l = t.layout();
        let s = l.stride();
        s[3] == 1 && s[..3].iter().all(|x| x.is_multiple_of(8)) && l.start_offset().is_multiple_of(8)
    };
    HEAD_DIMS.contains(&d)
        && (kb, kh, kd) == (b, h, d)
        && vd == (b, h, tk, d)
        && tk > 0
        && [q, k, v].into_iter().all(aligned)
}

/// The fused attention; call only when [`supported`] says so.
#[cfg(feature = "cuda")]
pub fn flash_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    q.apply_op3_no_bwd(k, v, &cuda::FlashAttention)?.transpose(1, 2)
}

/// Without the `cuda` feature there is no kernel; [`supported`] is always false so this is never reached.
#[cfg(not(feature = "cuda"))]
pub fn flash_attention(_q: &Tensor, _k: &Tensor, _v: &Tensor) -> Result<Tensor> {
    candle_core::bail!("fused attention needs a build with the `cuda` feature")
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, DType, Layout, Result, Shape};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_attention.ptx"));
    const MODULE: &str = "storymaker_flash_attention";
    /// Query rows per block and threads per block, as in the kernel (BLOCK_Q, WARPS * 32).
    const BLOCK_Q: usize = 128;
    const THREADS: u32 = 256;

    pub(super) struct FlashAttention;

    /// `(batch, head, token)` strides of a `[B, H, T, D]` layout.
    fn strides(l: &Layout) -> [i64; 3] {
        let s = l.stride();
        [s[0] as i64, s[1] as i64, s[2] as i64]
    }

    #[allow(clippy::too_many_arguments)]
    fn launch<T: CudaDType + DeviceRepr>(
        dev: &CudaDevice,
        kernel: &str,
        (q, ql): (&CudaStorage, &Layout),
        (k, kl): (&CudaStorage, &Layout),
        (v, vl): (&CudaStorage, &Layout),
        (b, h, tq, tk, d): (usize, usize, usize, usize, usize),
    ) -> Result<CudaStorage> {
        let func = dev.get_or_load_custom_func(kernel, MODULE, PTX)?;
        let qs = q.as_cuda_slice::<T>()?.slice(ql.start_offset()..);
        let ks = k.as_cuda_slice::<T>()?.slice(kl.start_offset()..);
        let vs = v.as_cuda_slice::<T>()?.slice(vl.start_offset()..);
        // SAFETY: every element is written by the kernel (each query row of each head once).
        let out = unsafe { dev.alloc::<T>(b * tq * h * d)? };
        let (heads, tq_i, tk_i) = (h as i32, tq as i32, tk as i32);
        let scale_log2 = (1.0 / (d as f64).sqrt() * std::f64::consts::LOG2_E) as f32;
        let [qsb, qsh, qst] = strides(ql);
        let [ksb, ksh, kst] = strides(kl);
        let [vsb, vsh, vst] = strides(vl);
        // O is [B, Tq, H, D] contiguous.
        let (osb, osh, ost) = ((tq * h * d) as i64, d as i64, (h * d) as i64);
        let mut builder = func.builder();
        builder.arg(&qs).arg(&ks).arg(&vs).arg(&out);
        builder.arg(&heads).arg(&tq_i).arg(&tk_i).arg(&scale_log2);
        for s in [&qsb, &qsh, &qst, &ksb, &ksh, &kst, &vsb, &vsh, &vst, &osb, &osh, &ost] {
            builder.arg(s);
        }
        let cfg = LaunchConfig {
            grid_dim: (tq.div_ceil(BLOCK_Q) as u32, (b * h) as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument list and types match the kernel's signature (flash_attention.cu, FLASH_ENTRY).
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }

    impl candle_core::CustomOp3 for FlashAttention {
        fn name(&self) -> &'static str {
            "storymaker-flash-attention"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("fused attention runs on CUDA only; the CPU uses the reference path")
        }

        fn cuda_fwd(
            &self,
            q: &CudaStorage,
            ql: &Layout,
            k: &CudaStorage,
            kl: &Layout,
            v: &CudaStorage,
            vl: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let (b, h, tq, d) = ql.shape().dims4()?;
            let tk = kl.shape().dims4()?.2;
            let dtype = q.dtype();
            if k.dtype() != dtype || v.dtype() != dtype {
                candle_core::bail!("fused attention: q, k and v must share a dtype");
            }
            let suffix = match dtype {
                DType::F16 => "f16",
                DType::BF16 => "bf16",
                other => candle_core::bail!("fused attention: no kernel for {other:?}"),
            };
            if !super::HEAD_DIMS.contains(&d) {
                candle_core::bail!("fused attention: no kernel for head dim {d}");
            }
            let kernel = format!("flash_attention_d{d}_{suffix}");
            let dev = q.device();
            let dims = (b, h, tq, tk, d);
            let out = match dtype {
                DType::F16 => launch::<half::f16>(dev, &kernel, (q, ql), (k, kl), (v, vl), dims)?,
                _ => launch::<half::bf16>(dev, &kernel, (q, ql), (k, kl), (v, vl), dims)?,
            };
            Ok((out, Shape::from((b, tq, h, d))))
        }
    }
}
