//! Fused memory-bound chains (`elementwise.cu`, issue 9): GEGLU with the projection's bias, and "bias plus
//! residual" after a linear layer or a convolution. Each replaces two or three candle kernels, each a full pass
//! over the activation, by one. On the CPU, and whenever [`super::fuse_on`] is false, the reference path runs
//! exactly the candle ops the layers ran before (same order, same roundings), so the CPU maths are unchanged.

use candle_core::{Result, Tensor, D};

/// `x · wᵀ` as `candle_nn::Linear` computes it before adding its bias (the same broadcast matmul), so a fused
/// bias epilogue sees exactly the product the reference path sees.
/// A contiguous `[B, T, K]` input is multiplied as one `[B·T, K]` GEMM (one large cuBLAS call instead of a
/// batched one over a broadcast weight).
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if let ([b, t, k], true) = (x.dims(), x.is_contiguous()) {
        let (b, t, k) = (*b, *t, *k);
        let y = x.reshape((b * t, k))?.matmul(&w.t()?)?;
        return y.reshape((b, t, y.dim(1)?));
    }
    let w = match *x.dims() {
        [b1, b2, _, _] => w.broadcast_left((b1, b2))?.t()?,
        [b, _, _] => w.broadcast_left(b)?.t()?,
        _ => w.t()?,
    };
    x.matmul(&w)
}

/// diffusers' GEGLU on the bias-free projection `h` `[.., 2F]`: `(h + b)[..F] ⊙ gelu_erf((h + b)[F..])`.
pub fn geglu(h: &Tensor, bias: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::fuse_on(h) && h.is_contiguous() && bias.is_contiguous() {
        return h.apply_op2_no_bwd(bias, &cuda::Geglu);
    }
    let h = h.broadcast_add(bias)?;
    let half = h.dim(D::Minus1)? / 2;
    let value = h.narrow(D::Minus1, 0, half)?;
    let gate = h.narrow(D::Minus1, half, half)?;
    value * gate.gelu_erf()?
}

/// `a + bias + residual` with `bias` `[C]` over the last dimension of `a` (a linear layer's output).
pub fn linear_bias_residual(a: &Tensor, bias: &Tensor, residual: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::fuse_on(a) && [a, bias, residual].iter().all(|t| t.is_contiguous()) && a.shape() == residual.shape() {
        return a.apply_op3_no_bwd(bias, residual, &cuda::BiasResidual { inner: 1 });
    }
    a.broadcast_add(bias)? + residual
}

/// `a + bias` over dimension 1 of an NCHW `a`, `bias` being `[C]` (a convolution's bias) or `[B, C]` (the
/// resnets' conv bias plus timestep projection, one value per sample and channel).
pub fn channel_bias(a: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (b, c) = (a.dim(0)?, a.dim(1)?);
    let per_sample = bias.rank() == 2;
    #[cfg(feature = "cuda")]
    if super::fuse_on(a) && a.is_contiguous() && bias.is_contiguous() && a.rank() == 4 {
        let inner = a.dims()[2..].iter().product();
        let len = if per_sample { b * c } else { c };
        if bias.elem_count() == len {
            return a.apply_op2_no_bwd(bias, &cuda::BiasResidual { inner });
        }
    }
    let shape = if per_sample { (b, c, 1, 1) } else { (1, c, 1, 1) };
    a.broadcast_add(&bias.reshape(shape)?)
}

/// `a + bias + residual` with `bias` `[C]` over dimension 1 of an NCHW `a` (a convolution's output).
pub fn conv_bias_residual(a: &Tensor, bias: &Tensor, residual: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::fuse_on(a) && [a, bias, residual].iter().all(|t| t.is_contiguous()) && a.shape() == residual.shape() {
        let inner = a.dims()[2..].iter().product();
        return a.apply_op3_no_bwd(bias, residual, &cuda::BiasResidual { inner });
    }
    residual + a.broadcast_add(&bias.reshape((1, bias.dim(0)?, 1, 1))?)?
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, DType, Layout, Result, Shape};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/elementwise.ptx"));
    const MODULE: &str = "storymaker_elementwise";
    const THREADS: u32 = 256;

    fn grid(n: usize) -> LaunchConfig {
        // Grid-stride loops: enough blocks to fill every SM several times over, no more.
        let blocks = n.div_ceil(THREADS as usize).clamp(1, 132 * 16) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }

    fn suffix(dtype: DType, what: &str) -> Result<&'static str> {
        Ok(match dtype {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            other => candle_core::bail!("{what}: no kernel for {other:?}"),
        })
    }

    fn slice<'a, T: CudaDType + DeviceRepr>(
        s: &'a CudaStorage,
        l: &Layout,
    ) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
        Ok(s.as_cuda_slice::<T>()?.slice(l.start_offset()..))
    }

    pub(super) struct Geglu;

    fn geglu<T: CudaDType + DeviceRepr>(
        dev: &CudaDevice,
        (h, hl): (&CudaStorage, &Layout),
        (b, bl): (&CudaStorage, &Layout),
        rows: usize,
        f: usize,
    ) -> Result<CudaStorage> {
        let func = dev.get_or_load_custom_func(&format!("geglu_{}", suffix(h.dtype(), "GEGLU")?), MODULE, PTX)?;
        let (hs, bs) = (slice::<T>(h, hl)?, slice::<T>(b, bl)?);
        // SAFETY: the kernel writes every one of the rows * f elements.
        let out = unsafe { dev.alloc::<T>(rows * f)? };
        let (rows_i, f_i) = (rows as i64, f as i64);
        let mut builder = func.builder();
        builder.arg(&hs).arg(&bs).arg(&out).arg(&rows_i).arg(&f_i);
        // SAFETY: argument list and types match geglu_* in elementwise.cu.
        unsafe { builder.launch(grid(rows * f)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }

    impl candle_core::CustomOp2 for Geglu {
        fn name(&self) -> &'static str {
            "storymaker-geglu"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the fused GEGLU runs on CUDA only; the CPU uses candle ops")
        }

        fn cuda_fwd(&self, h: &CudaStorage, hl: &Layout, b: &CudaStorage, bl: &Layout) -> Result<(CudaStorage, Shape)> {
            let dims = hl.shape().dims();
            let two_f = dims.last().copied().unwrap_or(0);
            if !hl.is_contiguous()
                || !bl.is_contiguous()
                || !two_f.is_multiple_of(2)
                || bl.shape().elem_count() != two_f
            {
                candle_core::bail!("fused GEGLU: contiguous [.., 2F] input and a [2F] bias");
            }
            if b.dtype() != h.dtype() {
                candle_core::bail!("fused GEGLU: input and bias must share a dtype");
            }
            let (f, rows) = (two_f / 2, hl.shape().elem_count() / two_f.max(1));
            let dev = h.device();
            let out = match h.dtype() {
                DType::F32 => geglu::<f32>(dev, (h, hl), (b, bl), rows, f)?,
                DType::F16 => geglu::<half::f16>(dev, (h, hl), (b, bl), rows, f)?,
                _ => geglu::<half::bf16>(dev, (h, hl), (b, bl), rows, f)?,
            };
            let mut out_dims = dims.to_vec();
            if let Some(last) = out_dims.last_mut() {
                *last = f;
            }
            Ok((out, Shape::from(out_dims)))
        }
    }

    pub(super) struct BiasResidual {
        pub inner: usize,
    }

    impl BiasResidual {
        fn launch<T: CudaDType + DeviceRepr>(
            &self,
            dev: &CudaDevice,
            (a, al): (&CudaStorage, &Layout),
            (b, bl): (&CudaStorage, &Layout),
            res: Option<(&CudaStorage, &Layout)>,
        ) -> Result<CudaStorage> {
            let name = if res.is_some() { "bias_residual" } else { "bias_add" };
            let kernel = format!("{name}_{}", suffix(a.dtype(), "bias + residual")?);
            let func = dev.get_or_load_custom_func(&kernel, MODULE, PTX)?;
            let (as_, bs) = (slice::<T>(a, al)?, slice::<T>(b, bl)?);
            let rs = res.map(|(r, rl)| slice::<T>(r, rl)).transpose()?;
            let n = al.shape().elem_count();
            // SAFETY: the kernel writes every one of the n elements.
            let out = unsafe { dev.alloc::<T>(n)? };
            let (n_i, inner, len) = (n as i64, self.inner as i64, bl.shape().elem_count() as i64);
            let mut builder = func.builder();
            builder.arg(&as_).arg(&bs);
            if let Some(rs) = &rs {
                builder.arg(rs);
            }
            builder.arg(&out).arg(&n_i).arg(&inner).arg(&len);
            // SAFETY: argument list and types match bias_residual_* in elementwise.cu.
            unsafe { builder.launch(grid(n)) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
        }
    }

    impl candle_core::CustomOp2 for BiasResidual {
        fn name(&self) -> &'static str {
            "storymaker-bias"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the fused bias add runs on CUDA only; the CPU uses candle ops")
        }

        fn cuda_fwd(&self, a: &CudaStorage, al: &Layout, b: &CudaStorage, bl: &Layout) -> Result<(CudaStorage, Shape)> {
            self.checked(a, al, b, bl, None)
        }
    }

    impl candle_core::CustomOp3 for BiasResidual {
        fn name(&self) -> &'static str {
            "storymaker-bias-residual"
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
            candle_core::bail!("the fused bias + residual runs on CUDA only; the CPU uses candle ops")
        }

        fn cuda_fwd(
            &self,
            a: &CudaStorage,
            al: &Layout,
            b: &CudaStorage,
            bl: &Layout,
            r: &CudaStorage,
            rl: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            self.checked(a, al, b, bl, Some((r, rl)))
        }
    }

    impl BiasResidual {
        fn checked(
            &self,
            a: &CudaStorage,
            al: &Layout,
            b: &CudaStorage,
            bl: &Layout,
            res: Option<(&CudaStorage, &Layout)>,
        ) -> Result<(CudaStorage, Shape)> {
            let res_ok =
                res.is_none_or(|(r, rl)| rl.is_contiguous() && al.shape() == rl.shape() && r.dtype() == a.dtype());
            let len = bl.shape().elem_count();
            if !al.is_contiguous() || !bl.is_contiguous() || !res_ok {
                candle_core::bail!("fused bias + residual: contiguous tensors of one shape and dtype");
            }
            if self.inner == 0 || len == 0 || !al.shape().elem_count().is_multiple_of(self.inner * len) {
                candle_core::bail!("fused bias + residual: the bias does not tile the tensor");
            }
            if b.dtype() != a.dtype() {
                candle_core::bail!("fused bias + residual: the bias must have the tensor's dtype");
            }
            let dev = a.device();
            let out = match a.dtype() {
                DType::F32 => self.launch::<f32>(dev, (a, al), (b, bl), res)?,
                DType::F16 => self.launch::<half::f16>(dev, (a, al), (b, bl), res)?,
                _ => self.launch::<half::bf16>(dev, (a, al), (b, bl), res)?,
            };
            Ok((out, al.shape().clone()))
        }
    }
}
