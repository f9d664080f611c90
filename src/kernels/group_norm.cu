// Fused GroupNorm (+ optional SiLU) for NCHW activations (issue 9), as diffusers' `nn.GroupNorm` followed by
// `F.silu` in every SDXL ResnetBlock2D (reference spec §3; SDXL-FACTS: 32 groups, eps 1e-5 in the UNet, 1e-6 in
// the VAE and the transformer input norms).
//
// candle runs a GroupNorm as ~10 kernels (upcast, reshape, two means, sub, sqr, sqrt, div, affine, downcast)
// plus one for SiLU, each a full pass over the tensor; this is one launch with three passes over a group that
// stays in L2: the mean, the variance around it (two-pass: no cancellation), then normalise + affine + SiLU in
// f32 and store in the input type. One block per (sample, group).

#include "elem.cuh"

#define THREADS 512

// Sum over the block (every thread gets the result).
static __device__ __forceinline__ float block_sum(float v, float* scratch) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // scratch may still be read from a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < THREADS / 32; ++w) total += scratch[w];
    return total;
}

template <int KIND>
__device__ __forceinline__ void group_norm(const typename Elem<KIND>::T* __restrict__ x, const float* __restrict__ gamma,
                                           const float* __restrict__ beta, typename Elem<KIND>::T* __restrict__ y,
                                           int channels, int groups, i64 spatial, float eps, int silu) {
    __shared__ float scratch[THREADS / 32];
    const int n = blockIdx.x / groups, g = blockIdx.x % groups;
    const int cpg = channels / groups;
    const i64 len = (i64)cpg * spatial;
    const i64 base = ((i64)n * channels + (i64)g * cpg) * spatial;
    const typename Elem<KIND>::T* xg = x + base;
    typename Elem<KIND>::T* yg = y + base;

    float s = 0.f;
    for (i64 i = threadIdx.x; i < len; i += THREADS) s += Elem<KIND>::load(xg + i);
    const float mean = block_sum(s, scratch) / (float)len;
    float ss = 0.f;
    for (i64 i = threadIdx.x; i < len; i += THREADS) {
        const float d = Elem<KIND>::load(xg + i) - mean;
        ss += d * d;
    }
    const float rstd = rsqrtf(block_sum(ss, scratch) / (float)len + eps);
    for (int c = 0; c < cpg; ++c) {
        const float scale = rstd * gamma[g * cpg + c];
        const float shift = beta[g * cpg + c] - mean * scale;
        const i64 row = (i64)c * spatial;
        for (i64 j = threadIdx.x; j < spatial; j += THREADS) {
            float v = Elem<KIND>::load(xg + row + j) * scale + shift;
            if (silu) v = v / (1.f + __expf(-v));
            Elem<KIND>::store(yg + row + j, v);
        }
    }
}

#define GN_ENTRY(NAME, KIND, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(THREADS) NAME(const T* x, const float* gamma, const float* beta, \
                                                                 T* y, int channels, int groups, i64 spatial,      \
                                                                 float eps, int silu) {                          \
        group_norm<KIND>(x, gamma, beta, y, channels, groups, spatial, eps, silu);                               \
    }

GN_ENTRY(group_norm_f32, 0, float)
GN_ENTRY(group_norm_f16, 1, u16)
GN_ENTRY(group_norm_bf16, 2, u16)
