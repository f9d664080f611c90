// Element load/store in f32 for the three storage types our memory-bound kernels take (0 = f32, 1 = f16,
// 2 = bf16), as raw 16-bit words so no CUDA headers are needed. Included by group_norm.cu and elementwise.cu.
#pragma once

typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

template <int KIND> struct Elem;  // 0 = f32, 1 = f16, 2 = bf16

template <> struct Elem<0> {
    typedef float T;
    static __device__ __forceinline__ float load(const float* p) { return *p; }
    static __device__ __forceinline__ void store(float* p, float v) { *p = v; }
};
template <> struct Elem<1> {
    typedef u16 T;
    static __device__ __forceinline__ float load(const u16* p) {
        float f;
        asm("{ .reg .f16 h; ld.global.nc.b16 h, [%1]; cvt.f32.f16 %0, h; }" : "=f"(f) : "l"(p));
        return f;
    }
    static __device__ __forceinline__ void store(u16* p, float v) { *p = to_bits(v); }
    static __device__ __forceinline__ float from_bits(u16 b) {
        float f;
        asm("{ .reg .f16 h; mov.b16 h, %1; cvt.f32.f16 %0, h; }" : "=f"(f) : "h"(b));
        return f;
    }
    static __device__ __forceinline__ u16 to_bits(float v) {
        u16 r;
        asm("{ .reg .f16 h; cvt.rn.f16.f32 h, %1; mov.b16 %0, h; }" : "=h"(r) : "f"(v));
        return r;
    }
};
template <> struct Elem<2> {
    typedef u16 T;
    static __device__ __forceinline__ float load(const u16* p) { return from_bits(*p); }
    static __device__ __forceinline__ void store(u16* p, float v) { *p = to_bits(v); }
    static __device__ __forceinline__ float from_bits(u16 b) { return __uint_as_float(((u32)b) << 16); }
    static __device__ __forceinline__ u16 to_bits(float v) {
        u16 r;
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(v));
        return r;
    }
};
