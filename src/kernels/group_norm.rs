//! GroupNorm with the SiLU that follows it in every SDXL resnet, fused into one CUDA kernel (`group_norm.cu`,
//! issue 9); on the CPU (and for layouts the kernel does not take) it is candle's `GroupNorm` then `silu`,
//! exactly as before, so every CPU parity test still pins the maths.
//!
//! [`FusedGroupNorm::new`] reads the same `weight`/`bias` keys as `candle_nn::group_norm`, so the layer is a
//! drop-in for diffusers' `nn.GroupNorm` in the UNet, ControlNet and VAE.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{GroupNorm, VarBuilder};

pub struct FusedGroupNorm {
    inner: GroupNorm,
    /// `(weight, bias)` in f32 on the GPU for the kernel; `None` on the CPU.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    affine_f32: Option<(Tensor, Tensor)>,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    groups: usize,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    eps: f64,
}

impl FusedGroupNorm {
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
        Self::from_tensors(weight, bias, groups, eps)
    }

    /// From `[C]` weight and bias tensors.
    pub fn from_tensors(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> Result<Self> {
        let channels = weight.dims1()?;
        let affine_f32 = if cfg!(feature = "cuda") && weight.device().is_cuda() {
            Some((weight.to_dtype(DType::F32)?, bias.to_dtype(DType::F32)?))
        } else {
            None
        };
        Ok(FusedGroupNorm { inner: GroupNorm::new(weight, bias, channels, groups, eps)?, affine_f32, groups, eps })
    }

    /// `silu(group_norm(x))`.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, true)
    }

    /// candle's GroupNorm (then SiLU) whatever the device: the CPU path, and the reference the kernel is
    /// checked against on the GPU.
    pub fn forward_reference(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let y = self.inner.forward(x)?;
        if silu {
            candle_nn::ops::silu(&y)
        } else {
            Ok(y)
        }
    }

    fn forward_with(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let _p = super::profile::scope("group_norm", x.device());
        #[cfg(feature = "cuda")]
        if let Some((w, b)) = self.affine_f32.as_ref().filter(|_| super::fused_enabled()) {
            if x.rank() >= 3 && matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) {
                let op = cuda::GroupNormOp { groups: self.groups, eps: self.eps as f32, silu };
                return x.contiguous()?.apply_op3_no_bwd(w, b, &op);
            }
        }
        self.forward_reference(x, silu)
    }
}

impl Module for FusedGroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, false)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, DType, Layout, Result, Shape};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/group_norm.ptx"));
    const MODULE: &str = "storymaker_group_norm";
    const THREADS: u32 = 512;

    pub(super) struct GroupNormOp {
        pub groups: usize,
        pub eps: f32,
        pub silu: bool,
    }

    impl GroupNormOp {
        fn launch<T: CudaDType + DeviceRepr>(
            &self,
            dev: &CudaDevice,
            kernel: &str,
            (x, xl): (&CudaStorage, &Layout),
            (w, wl): (&CudaStorage, &Layout),
            (b, bl): (&CudaStorage, &Layout),
        ) -> Result<CudaStorage> {
            let dims = xl.shape().dims();
            let (n, c) = (dims[0], dims[1]);
            let spatial: usize = dims[2..].iter().product();
            let func = dev.get_or_load_custom_func(kernel, MODULE, PTX)?;
            let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
            let ws = w.as_cuda_slice::<f32>()?.slice(wl.start_offset()..);
            let bs = b.as_cuda_slice::<f32>()?.slice(bl.start_offset()..);
            // SAFETY: the kernel writes every element (each group of each sample once).
            let out = unsafe { dev.alloc::<T>(n * c * spatial)? };
            let (channels, groups, spatial, eps, silu) =
                (c as i32, self.groups as i32, spatial as i64, self.eps, self.silu as i32);
            let mut builder = func.builder();
            builder.arg(&xs).arg(&ws).arg(&bs).arg(&out);
            builder.arg(&channels).arg(&groups).arg(&spatial).arg(&eps).arg(&silu);
            let cfg = LaunchConfig {
                grid_dim: ((n * self.groups) as u32, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: argument list and types match GN_ENTRY in group_norm.cu.
            unsafe { builder.launch(cfg) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
        }
    }

    impl candle_core::CustomOp3 for GroupNormOp {
        fn name(&self) -> &'static str {
            "storymaker-group-norm"
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
            candle_core::bail!("the fused GroupNorm runs on CUDA only; the CPU uses candle's GroupNorm")
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            xl: &Layout,
            w: &CudaStorage,
            wl: &Layout,
            b: &CudaStorage,
            bl: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let dims = xl.shape().dims();
            if !xl.is_contiguous() || dims.len() < 3 || !dims[1].is_multiple_of(self.groups) {
                candle_core::bail!("fused GroupNorm: contiguous [N, C, ...] input with C divisible by the groups");
            }
            if w.dtype() != DType::F32 || b.dtype() != DType::F32 || wl.shape().elem_count() != dims[1] {
                candle_core::bail!("fused GroupNorm: f32 weight and bias of C elements");
            }
            let dev = x.device();
            let out = match x.dtype() {
                DType::F32 => self.launch::<f32>(dev, "group_norm_f32", (x, xl), (w, wl), (b, bl))?,
                DType::F16 => self.launch::<half::f16>(dev, "group_norm_f16", (x, xl), (w, wl), (b, bl))?,
                DType::BF16 => self.launch::<half::bf16>(dev, "group_norm_bf16", (x, xl), (w, wl), (b, bl))?,
                other => candle_core::bail!("fused GroupNorm: no kernel for {other:?}"),
            };
            Ok((out, xl.shape().clone()))
        }
    }
}
