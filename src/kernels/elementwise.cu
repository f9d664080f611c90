// Memory-bound chains of the SDXL transformer blocks and resnets fused into one pass each (issue 9). candle runs
// each of these as two or three kernels, every one a full read and write of a [B, T, C] or [B, C, H, W] tensor:
//
// - geglu: diffusers' GEGLU after `ff.net.0.proj` WITHOUT its bias (the matmul alone):
//       out[r, c] = (h[r, c] + b[c]) * gelu_erf(h[r, F + c] + b[F + c])      h: [rows, 2F], out: [rows, F]
//   (value first, gate second, reference spec §3; gelu with erf as torch's F.gelu default).
// - bias_residual: a linear or conv output without its bias, plus the bias and the residual:
//       out[i] = a[i] + bias[(i / inner) % len] + res[i]
//   inner = 1, len = C for [rows, C] (to_out, ff.net.2); inner = H*W, len = C for NCHW (resnet conv2 + skip).
//
// Arithmetic in f32, one rounding to the storage type at the end (candle rounds after every op).

#include "elem.cuh"

#define THREADS 256

template <int KIND>
__device__ __forceinline__ void geglu(const typename Elem<KIND>::T* __restrict__ h,
                                      const typename Elem<KIND>::T* __restrict__ b, typename Elem<KIND>::T* __restrict__ out,
                                      i64 rows, i64 f) {
    const i64 n = rows * f;
    for (i64 i = (i64)blockIdx.x * THREADS + threadIdx.x; i < n; i += (i64)gridDim.x * THREADS) {
        const i64 r = i / f, c = i - r * f;
        const float value = Elem<KIND>::load(h + r * 2 * f + c) + Elem<KIND>::load(b + c);
        const float gate = Elem<KIND>::load(h + r * 2 * f + f + c) + Elem<KIND>::load(b + f + c);
        const float g = 0.5f * gate * (1.f + erff(gate * 0.70710678118654752f));
        Elem<KIND>::store(out + i, value * g);
    }
}

template <int KIND>
__device__ __forceinline__ void bias_residual(const typename Elem<KIND>::T* __restrict__ a,
                                              const typename Elem<KIND>::T* __restrict__ bias,
                                              const typename Elem<KIND>::T* __restrict__ res,
                                              typename Elem<KIND>::T* __restrict__ out, i64 n, i64 inner, i64 len) {
    for (i64 i = (i64)blockIdx.x * THREADS + threadIdx.x; i < n; i += (i64)gridDim.x * THREADS) {
        const float v = Elem<KIND>::load(a + i) + Elem<KIND>::load(bias + (i / inner) % len) + Elem<KIND>::load(res + i);
        Elem<KIND>::store(out + i, v);
    }
}

#define ENTRIES(SUFFIX, KIND, T)                                                                                     \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                            \
        geglu_##SUFFIX(const T* h, const T* b, T* out, i64 rows, i64 f) {                                            \
        geglu<KIND>(h, b, out, rows, f);                                                                             \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                            \
        bias_residual_##SUFFIX(const T* a, const T* bias, const T* res, T* out, i64 n, i64 inner, i64 len) {         \
        bias_residual<KIND>(a, bias, res, out, n, inner, len);                                                       \
    }

ENTRIES(f32, 0, float)
ENTRIES(f16, 1, u16)
ENTRIES(bf16, 2, u16)
