// Memory-bound chains of the SDXL transformer blocks and resnets fused into one pass each (issue 9). candle runs
// each of these as two or three kernels, every one a full read and write of a [B, T, C] or [B, C, H, W] tensor:
//
// - geglu: diffusers' GEGLU after `ff.net.0.proj` WITHOUT its bias (the matmul alone):
//       out[r, c] = (h[r, c] + b[c]) * gelu_erf(h[r, F + c] + b[F + c])      h: [rows, 2F], out: [rows, F]
//   (value first, gate second, reference spec §3; gelu with erf as torch's F.gelu default).
// - bias_residual: a linear or conv output without its bias, plus the bias and the residual:
//       out[i] = a[i] + bias[(i / inner) % len] + res[i]
//   inner = 1, len = C for [rows, C] (to_out, ff.net.2); inner = H*W, len = C for NCHW (resnet conv2 + skip).
// - bias_add: the same without a residual; len = B*C adds one value per sample and channel (conv1's bias plus
//   the resnet's timestep projection).
//
// Arithmetic in f32, one rounding to the storage type at the end (candle rounds after every op).

#include "elem.cuh"

#define THREADS 256

// Eight consecutive elements through one or two 16-byte accesses (the kernels below are bandwidth-bound; scalar
// 2-byte accesses reached only ~1.3 TB/s of the H100's ~3).
template <int KIND> struct Vec8;
template <> struct Vec8<0> {
    static __device__ __forceinline__ void load(const float* p, float* v) {
        const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    }
    static __device__ __forceinline__ void store(float* p, const float* v) {
        *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
        *reinterpret_cast<float4*>(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
    }
};
template <int KIND> struct Vec8Half {
    static __device__ __forceinline__ void load(const u16* p, float* v) {
        const uint4 q = *reinterpret_cast<const uint4*>(p);
        const u16* h = reinterpret_cast<const u16*>(&q);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = Elem<KIND>::from_bits(h[j]);
    }
    static __device__ __forceinline__ void store(u16* p, const float* v) {
        uint4 q;
        u16* h = reinterpret_cast<u16*>(&q);
#pragma unroll
        for (int j = 0; j < 8; ++j) h[j] = Elem<KIND>::to_bits(v[j]);
        *reinterpret_cast<uint4*>(p) = q;
    }
};
template <> struct Vec8<1> : Vec8Half<1> {};
template <> struct Vec8<2> : Vec8Half<2> {};

static __device__ __forceinline__ bool aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

static __device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }

template <int KIND>
__device__ __forceinline__ void geglu(const typename Elem<KIND>::T* __restrict__ h,
                                      const typename Elem<KIND>::T* __restrict__ b, typename Elem<KIND>::T* __restrict__ out,
                                      i64 rows, i64 f) {
    const i64 n = rows * f;
    const i64 stride = (i64)gridDim.x * THREADS;
    if (f % 8 == 0 && aligned16(h) && aligned16(b) && aligned16(out)) {
        for (i64 i = ((i64)blockIdx.x * THREADS + threadIdx.x) * 8; i < n; i += stride * 8) {
            const i64 r = i / f, c = i - r * f;
            float value[8], gate[8], bv[8], bg[8];
            Vec8<KIND>::load(h + r * 2 * f + c, value);
            Vec8<KIND>::load(h + r * 2 * f + f + c, gate);
            Vec8<KIND>::load(b + c, bv);
            Vec8<KIND>::load(b + f + c, bg);
#pragma unroll
            for (int j = 0; j < 8; ++j) value[j] = (value[j] + bv[j]) * gelu_erf(gate[j] + bg[j]);
            Vec8<KIND>::store(out + i, value);
        }
        return;
    }
    for (i64 i = (i64)blockIdx.x * THREADS + threadIdx.x; i < n; i += stride) {
        const i64 r = i / f, c = i - r * f;
        const float value = Elem<KIND>::load(h + r * 2 * f + c) + Elem<KIND>::load(b + c);
        const float gate = Elem<KIND>::load(h + r * 2 * f + f + c) + Elem<KIND>::load(b + f + c);
        Elem<KIND>::store(out + i, value * gelu_erf(gate));
    }
}

// res may be null (bias_add_*).
template <int KIND>
__device__ __forceinline__ void bias_residual(const typename Elem<KIND>::T* __restrict__ a,
                                              const typename Elem<KIND>::T* __restrict__ bias,
                                              const typename Elem<KIND>::T* __restrict__ res,
                                              typename Elem<KIND>::T* __restrict__ out, i64 n, i64 inner, i64 len) {
    const i64 stride = (i64)gridDim.x * THREADS;
    // Eight elements at a time when they share one bias value (inner % 8 == 0) or read eight consecutive ones
    // (inner == 1, len % 8 == 0), and every pointer is 16-byte aligned.
    const bool vec = n % 8 == 0 && (inner % 8 == 0 || (inner == 1 && len % 8 == 0)) && aligned16(a) &&
                     aligned16(bias) && aligned16(out) && (res == nullptr || aligned16(res));
    if (vec) {
        for (i64 i = ((i64)blockIdx.x * THREADS + threadIdx.x) * 8; i < n; i += stride * 8) {
            float v[8], bv[8], rv[8];
            Vec8<KIND>::load(a + i, v);
            if (inner == 1) {
                Vec8<KIND>::load(bias + i % len, bv);
            } else {
                const float b0 = Elem<KIND>::load(bias + (i / inner) % len);
#pragma unroll
                for (int j = 0; j < 8; ++j) bv[j] = b0;
            }
            if (res != nullptr) {
                Vec8<KIND>::load(res + i, rv);
            } else {
#pragma unroll
                for (int j = 0; j < 8; ++j) rv[j] = 0.f;
            }
#pragma unroll
            for (int j = 0; j < 8; ++j) v[j] = v[j] + bv[j] + rv[j];
            Vec8<KIND>::store(out + i, v);
        }
        return;
    }
    for (i64 i = (i64)blockIdx.x * THREADS + threadIdx.x; i < n; i += stride) {
        float v = Elem<KIND>::load(a + i) + Elem<KIND>::load(bias + (i / inner) % len);
        if (res != nullptr) v += Elem<KIND>::load(res + i);
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
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                            \
        bias_add_##SUFFIX(const T* a, const T* bias, T* out, i64 n, i64 inner, i64 len) {                            \
        bias_residual<KIND>(a, bias, nullptr, out, n, inner, len);                                                   \
    }

ENTRIES(f32, 0, float)
ENTRIES(f16, 1, u16)
ENTRIES(bf16, 2, u16)
