//! 2-D convolution whose CUDA forward calls cuDNN properly (issue 9), behind the `cudnn` feature; everywhere
//! else it is candle's `Conv2d`, so the CPU maths (and every CPU parity test) are unchanged.
//!
//! Measured on an H200 (../shared/cuda/README.md): candle's im2col path is 11x slower than PyTorch on the UNet's
//! 3x3 convs, and candle's own `cudnn` path is slower still and nearly constant across sizes (2.8–3.1 ms from
//! 128² to 32² maps) — the signature of per-call overhead: it asks cuDNN's heuristics for an algorithm, and
//! allocates and zeroes a workspace, on every call. Here the algorithm is chosen once per shape (tensor-core math
//! allowed, as PyTorch does), the descriptors are kept, and one workspace per thread is reused and only grown.
//!
//! [`conv2d`] reads the same `weight`/`bias` keys as `candle_nn::conv2d`.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

pub struct Conv2d {
    inner: candle_nn::Conv2d,
}

/// As `candle_nn::conv2d` (same checkpoint keys and shapes).
pub fn conv2d(cin: usize, cout: usize, kernel: usize, cfg: Conv2dConfig, vb: VarBuilder) -> Result<Conv2d> {
    Ok(Conv2d { inner: candle_nn::conv2d(cin, cout, kernel, cfg, vb)? })
}

/// How the cuDNN algorithm of each convolution shape was chosen (empty without the `cudnn` feature or before the
/// first GPU convolution).
pub fn tuning_report() -> Vec<String> {
    #[cfg(feature = "cudnn")]
    return cudnn::report();
    #[cfg(not(feature = "cudnn"))]
    Vec::new()
}

impl Conv2d {
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// The convolution without its bias, for callers that fuse the bias into what follows
    /// ([`super::elementwise::conv_bias_residual`], the resnets' timestep add).
    pub fn forward_no_bias(&self, x: &Tensor) -> Result<Tensor> {
        let _p = super::profile::scope("conv", x.device());
        #[cfg(feature = "cudnn")]
        if super::fused_enabled() && x.device().is_cuda() && x.rank() == 4 && self.inner.config().groups == 1 {
            let cfg = *self.inner.config();
            return x.apply_op2_no_bwd(self.inner.weight(), &cudnn::CudnnConv { cfg });
        }
        let c = self.inner.config();
        x.conv2d(self.inner.weight(), c.padding, c.stride, c.dilation, c.groups)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cudnn")]
        if super::fused_enabled() && x.device().is_cuda() && x.rank() == 4 && self.inner.config().groups == 1 {
            let y = self.forward_no_bias(x)?;
            let _p = super::profile::scope("conv.bias", x.device());
            return match self.inner.bias() {
                Some(b) => super::elementwise::channel_bias(&y, b),
                None => Ok(y),
            };
        }
        let _p = super::profile::scope("conv", x.device());
        self.inner.forward(x)
    }
}

#[cfg(feature = "cudnn")]
mod cudnn {
    use std::cell::RefCell;
    use std::collections::hash_map::Entry;
    use std::collections::HashMap;
    use std::sync::Arc;

    use candle_core::backend::BackendDevice;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::cudnn::{
        sys, ConvDescriptor, ConvForward, Cudnn, CudnnDataType, FilterDescriptor, TensorDescriptor,
    };
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr};
    use candle_core::cuda_backend::CudaDType;
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, DType, Layout, Result, Shape, WithDType};
    use candle_nn::Conv2dConfig;

    pub(super) struct CudnnConv {
        pub cfg: Conv2dConfig,
    }

    /// Everything that decides the algorithm: dtype, input dims and strides, filter dims, conv parameters.
    type PlanKey = (DType, [usize; 4], [usize; 4], [usize; 4], [usize; 3]);

    /// Descriptors and the chosen algorithm for one shape, built once.
    struct Plan {
        conv: ConvDescriptor<f32>,
        x: Box<dyn std::any::Any>,
        w: Box<dyn std::any::Any>,
        y: Box<dyn std::any::Any>,
        algo: sys::cudnnConvolutionFwdAlgo_t,
        workspace: usize,
        out: [usize; 4],
    }

    #[derive(Default)]
    struct ThreadState {
        handles: HashMap<candle_core::cuda_backend::DeviceId, Arc<Cudnn>>,
        plans: HashMap<PlanKey, Plan>,
        workspace: Option<CudaSlice<u8>>,
    }

    thread_local! {
        static STATE: RefCell<ThreadState> = RefCell::new(ThreadState::default());
    }

    fn err(e: impl std::fmt::Display) -> candle_core::Error {
        candle_core::Error::Msg(format!("cuDNN convolution: {e}"))
    }

    fn i32s<const N: usize>(v: [usize; N]) -> [i32; N] {
        v.map(|x| x as i32)
    }

    /// Every forward algorithm of the legacy API (cudnnConvolutionFwdAlgo_t).
    const ALGOS: [sys::cudnnConvolutionFwdAlgo_t; 8] = {
        use sys::cudnnConvolutionFwdAlgo_t::*;
        [
            CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
            CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
            CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
            CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
            CUDNN_CONVOLUTION_FWD_ALGO_FFT,
            CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
            CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
            CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
        ]
    };

    /// Largest workspace an algorithm may ask for to be considered (bytes).
    const MAX_WORKSPACE: usize = 512 << 20;

    /// One line per tuned shape: the algorithm kept and the time of each candidate (`bench unet --profile`).
    static REPORT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    pub(super) fn report() -> Vec<String> {
        REPORT.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Times every algorithm cuDNN accepts for this shape on the real input and filter (one warm-up, then the
    /// mean of three) and keeps the fastest — what PyTorch's `cudnn.benchmark` does — rather than trusting
    /// `cudnnGetConvolutionForwardAlgorithm_v7`. On the H100 (session 4) the heuristic was right for most UNet
    /// shapes; conv_in and a 1x1 ran 1.2–1.8x faster with the measured choice. Returns the algorithm, its
    /// workspace size and a report line (every candidate's time).
    fn fastest<T: CudnnDataType + CudaDType + DeviceRepr + WithDType>(
        dev: &CudaDevice,
        fwd: &ConvForward<T, f32, T>,
        xs: &CudaView<T>,
        ws: &CudaView<T>,
        n_out: usize,
    ) -> Result<(sys::cudnnConvolutionFwdAlgo_t, usize, String)> {
        let heuristic = fwd.pick_algorithm().map_err(err)?;
        // SAFETY: scratch output, fully overwritten by every algorithm run (beta = 0), never read.
        let mut out = unsafe { dev.alloc::<T>(n_out)? };
        let mut best: Option<(f64, sys::cudnnConvolutionFwdAlgo_t, usize)> = None;
        let mut timings = Vec::new();
        for algo in ALGOS {
            let Ok(size) = fwd.get_workspace_size(algo) else { continue };
            if size > MAX_WORKSPACE {
                continue;
            }
            // An algorithm whose workspace does not fit in the GPU's free memory is skipped, not an error.
            let mut workspace = match size {
                0 => None,
                _ => match dev.alloc_zeros::<u8>(size) {
                    Ok(w) => Some(w),
                    Err(_) => continue,
                },
            };
            let mut once = || {
                // SAFETY: the descriptors describe these buffers (see `plan`); the workspace has the size cuDNN
                // asked for this algorithm.
                unsafe { fwd.launch(algo, workspace.as_mut(), (T::one(), T::zero()), xs, ws, &mut out) }
            };
            if once().is_err() || dev.synchronize().is_err() {
                continue;
            }
            let t = std::time::Instant::now();
            let ok = (0..3).all(|_| once().is_ok());
            dev.synchronize()?;
            if !ok {
                continue;
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / 3.0;
            timings.push(format!("{algo:?}={ms:.3}").replace("CUDNN_CONVOLUTION_FWD_ALGO_", ""));
            if best.is_none_or(|(b, _, _)| ms < b) {
                best = Some((ms, algo, size));
            }
        }
        let (_, algo, size) = match best {
            Some(b) => b,
            None => (0.0, heuristic, fwd.get_workspace_size(heuristic).map_err(err)?),
        };
        let report = format!("kept {algo:?} (heuristic {heuristic:?}): {}", timings.join(" "))
            .replace("CUDNN_CONVOLUTION_FWD_ALGO_", "");
        Ok((algo, size, report))
    }

    fn plan<T: CudnnDataType + CudaDType + DeviceRepr + WithDType + 'static>(
        dev: &CudaDevice,
        cudnn: &Arc<Cudnn>,
        (xbuf, xl): (&CudaView<T>, &Layout),
        (wbuf, wl): (&CudaView<T>, &Layout),
        cfg: &Conv2dConfig,
    ) -> Result<Plan> {
        let xd: [usize; 4] = xl.shape().dims4()?.into();
        let wd: [usize; 4] = wl.shape().dims4()?.into();
        let xs: [usize; 4] = xl.stride().try_into().map_err(err)?;
        let (p, s, d) = (cfg.padding as i32, cfg.stride as i32, cfg.dilation as i32);
        let mut conv = cudnn
            .create_conv2d::<f32>([p, p], [s, s], [d, d], sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION)
            .map_err(err)?;
        // Tensor cores for f16/bf16 (and TF32 is NOT allowed for f32: f32 stays exact as the CPU path).
        let math = if T::DATA_TYPE == sys::cudnnDataType_t::CUDNN_DATA_FLOAT {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
        };
        conv.set_math_type(math).map_err(err)?;
        let x: TensorDescriptor<T> = cudnn.create_4d_tensor_ex::<T>(i32s(xd), i32s(xs)).map_err(err)?;
        let w: FilterDescriptor<T> =
            cudnn.create_4d_filter::<T>(sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW, i32s(wd)).map_err(err)?;
        let eff = (wd[2] - 1) * cfg.dilation + 1;
        let oh = (xd[2] + 2 * cfg.padding - eff) / cfg.stride + 1;
        let effw = (wd[3] - 1) * cfg.dilation + 1;
        let ow = (xd[3] + 2 * cfg.padding - effw) / cfg.stride + 1;
        let out = [xd[0], wd[0], oh, ow];
        let y: TensorDescriptor<T> =
            cudnn.create_4d_tensor::<T>(sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW, i32s(out)).map_err(err)?;
        let fwd = ConvForward { conv: &conv, x: &x, w: &w, y: &y };
        let (algo, workspace, report) = fastest(dev, &fwd, xbuf, wbuf, out.iter().product())?;
        if let Ok(mut r) = REPORT.lock() {
            r.push(format!("{:?} x {:?} {:?}: {report}", T::DTYPE, xd, wd));
        }
        Ok(Plan { conv, x: Box::new(x), w: Box::new(w), y: Box::new(y), algo, workspace, out })
    }

    fn run<T: CudaDType + CudnnDataType + DeviceRepr + WithDType>(
        dev: &CudaDevice,
        cfg: &Conv2dConfig,
        (x, xl): (&CudaStorage, &Layout),
        (w, wl): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        if !wl.is_contiguous() {
            candle_core::bail!("cuDNN convolution: the filter must be contiguous");
        }
        let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
        let ws = w.as_cuda_slice::<T>()?.slice(wl.start_offset()..);
        STATE.with(|state| {
            let mut st = state.borrow_mut();
            let st = &mut *st;
            let cudnn = match st.handles.get(&dev.id()) {
                Some(h) => h.clone(),
                None => {
                    let h = Cudnn::new(dev.cuda_stream()).map_err(err)?;
                    st.handles.insert(dev.id(), h.clone());
                    h
                }
            };
            let key: PlanKey = (
                T::DTYPE,
                xl.shape().dims4()?.into(),
                xl.stride().try_into().map_err(err)?,
                wl.shape().dims4()?.into(),
                [cfg.padding, cfg.stride, cfg.dilation],
            );
            let p = match st.plans.entry(key) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(plan::<T>(dev, &cudnn, (&xs, xl), (&ws, wl), cfg)?),
            };
            if st.workspace.as_ref().is_none_or(|b| b.len() < p.workspace) {
                // Grown, never shrunk: the UNet's largest conv sets it once.
                st.workspace = Some(dev.alloc_zeros::<u8>(p.workspace.max(1))?);
            }
            let (xdesc, wdesc, ydesc) = (
                p.x.downcast_ref::<TensorDescriptor<T>>().ok_or_else(|| err("descriptor type"))?,
                p.w.downcast_ref::<FilterDescriptor<T>>().ok_or_else(|| err("descriptor type"))?,
                p.y.downcast_ref::<TensorDescriptor<T>>().ok_or_else(|| err("descriptor type"))?,
            );
            let fwd = ConvForward { conv: &p.conv, x: xdesc, w: wdesc, y: ydesc };
            let n: usize = p.out.iter().product();
            // SAFETY: cuDNN writes every output element (beta = 0).
            let mut out = unsafe { dev.alloc::<T>(n)? };
            let ws_buf = st.workspace.as_mut().ok_or_else(|| err("no workspace"))?;
            // SAFETY: the descriptors describe exactly these buffers (dims, strides, dtype) — see `plan`.
            unsafe {
                fwd.launch::<CudaSlice<u8>, _, _, _>(
                    p.algo,
                    if p.workspace > 0 { Some(ws_buf) } else { None },
                    (T::one(), T::zero()),
                    &xs,
                    &ws,
                    &mut out,
                )
            }
            .map_err(err)?;
            let shape = Shape::from(p.out.to_vec());
            Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
        })
    }

    impl candle_core::CustomOp2 for CudnnConv {
        fn name(&self) -> &'static str {
            "storymaker-cudnn-conv2d"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the cuDNN convolution runs on CUDA only; the CPU uses candle's")
        }

        fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout, w: &CudaStorage, wl: &Layout) -> Result<(CudaStorage, Shape)> {
            let dev = x.device().clone();
            match x.dtype() {
                DType::F32 => run::<f32>(&dev, &self.cfg, (x, xl), (w, wl)),
                DType::F16 => run::<half::f16>(&dev, &self.cfg, (x, xl), (w, wl)),
                DType::BF16 => run::<half::bf16>(&dev, &self.cfg, (x, xl), (w, wl)),
                other => candle_core::bail!("cuDNN convolution: no path for {other:?}"),
            }
        }
    }
}
