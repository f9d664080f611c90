// Fused multi-head attention forward, FlashAttention-2 style (issue 9; reference spec §3: softmax(Q K^T / sqrt(d)) V).
//
//   O[b, h, i, :] = sum_j softmax_j(Q[b, h, i, :] . K[b, h, j, :] * scale) V[b, h, j, :]
//
// Q, K, V and O are addressed with explicit (batch, head, token) strides and a unit stride over the head dimension,
// so the UNet's `[B, T, H*D]` projections are read and written in place (no split/merge-heads copies).
// Elements are f16 or bf16 (raw 16-bit storage: no CUDA headers needed), accumulation is f32.
//
// One block = 8 warps = 128 query rows of one (b, h); each warp owns 16 rows. K/V tiles of 64 keys are staged in
// shared memory and shared by the 8 warps; the 16x64 score tile never leaves registers: `mma.sync.m16n8k16` puts S in the accumulator
// layout, which is exactly the A-operand layout of the following P·V product (FlashAttention-2's register reuse).
// Softmax is online: per row a running max m and a running sum l (kept per thread and reduced over the quad of
// threads sharing the row at the end), O rescaled by exp2(m_old - m_new) when the max grows. Scores are scaled by
// scale * log2(e) so exp2f can be used. Keys past Tk are masked to -inf (only the last key tile pays for the test)
// and their V rows are zero-filled.
//
// B fragments come from shared memory through `ldmatrix.x4`: four 8x8 tiles per instruction, K directly (row =
// key, so the untransposed tile already is the col-major B operand) and V with `.trans`. The first version of this
// kernel (session 3) loaded them with 32- and 16-bit shared loads, 192 instructions per 64 mma against 32 here,
// and ran 64 rows per block; measured on an H100 (session 4, bench kernels, (2,10,4096,4096,64) bf16): 0.592 ms
// -> 0.501 ms, and the UNet step 52.8 -> 51.4 ms.
//
// Fragment layouts (PTX ISA, mma.m16n8k16, .f16/.bf16 inputs, .f32 accumulators), g = lane / 4, t = lane % 4:
//   A (16x16, row-major): reg0 = (row g,   cols 2t..2t+1), reg1 = (row g+8, cols 2t..2t+1),
//                         reg2 = (row g,   cols 2t+8..+9), reg3 = (row g+8, cols 2t+8..+9)
//   B (16x8, col-major):  reg0 = (rows 2t..2t+1, col g),  reg1 = (rows 2t+8..2t+9, col g)
//   C (16x8, f32):        c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g+8, cols 2t, 2t+1)
// ldmatrix (m8n8, .b16): threads 8m..8m+7 give the row addresses of tile m; each thread receives, for tile m,
// register m = (row lane/4, cols 2(lane%4), +1), or with .trans (rows 2(lane%4), +1, col lane/4).
// Requires sm_80 or newer (bf16 mma).

typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

#define BLOCK_K 64
#define SMEM_PAD 8

template <bool BF16> struct Elem;

template <> struct Elem<false> {
    // Two floats -> f16x2 with `lo` in the low half (the lower address).
    static __device__ __forceinline__ u32 pack(float lo, float hi) {
        u32 r;
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    static __device__ __forceinline__ void mma(float* c, const u32* a, const u32* b) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

template <> struct Elem<true> {
    static __device__ __forceinline__ u32 pack(float lo, float hi) {
        u32 r;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    static __device__ __forceinline__ void mma(float* c, const u32* a, const u32* b) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

struct Strides {
    i64 b, h, t;
};

#define WARPS 8
#define BLOCK_Q (WARPS * 16)

static __device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

static __device__ __forceinline__ void ldmatrix_x4(u32* r, const u16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

static __device__ __forceinline__ void ldmatrix_x2(u32* r, const u16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_addr(p)));
}

static __device__ __forceinline__ void ldmatrix_x4_trans(u32* r, const u16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

template <int D, bool BF16>
__device__ __forceinline__ void flash_forward(const u16* __restrict__ q, const u16* __restrict__ k,
                                                 const u16* __restrict__ v, u16* __restrict__ o, int heads, int tq,
                                                 int tk, float scale_log2, Strides qs, Strides ks, Strides vs,
                                                 Strides os) {
    static_assert(D % 16 == 0 && (D / 8) % 2 == 0, "head dim must be a multiple of 16");
    constexpr int LD = D + SMEM_PAD;  // 16-byte aligned rows; 8 consecutive rows hit 32 distinct banks
    __shared__ __align__(16) u16 k_tile[BLOCK_K * LD];
    __shared__ __align__(16) u16 v_tile[BLOCK_K * LD];

    const int bh = blockIdx.y;
    const int b = bh / heads, h = bh % heads;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane >> 2, t = lane & 3;
    const int lrow = lane & 7, lmat = lane >> 3;  // the row and tile this lane addresses in ldmatrix
    const u16* qb = q + b * qs.b + h * qs.h;
    const u16* kb = k + b * ks.b + h * ks.h;
    const u16* vb = v + b * vs.b + h * vs.h;
    u16* ob = o + b * os.b + h * os.h;
    const int row0 = blockIdx.x * BLOCK_Q + warp * 16;
    const int rows[2] = {row0 + g, row0 + g + 8};

    u32 qa[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int row = rows[r & 1];
            const int col = kk * 16 + 2 * t + ((r & 2) ? 8 : 0);
            qa[kk][r] = row < tq ? *reinterpret_cast<const u32*>(qb + row * qs.t + col) : 0u;
        }
    }

    float acc[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
        acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    }
    float m[2] = {-INFINITY, -INFINITY};
    float l[2] = {0.f, 0.f};

    const int tiles = (tk + BLOCK_K - 1) / BLOCK_K;
    for (int tile = 0; tile < tiles; ++tile) {
        const int key0 = tile * BLOCK_K;
        __syncthreads();
        constexpr int CHUNKS = BLOCK_K * D / 8;
        for (int c = threadIdx.x; c < CHUNKS; c += WARPS * 32) {
            const int r = c / (D / 8), col = (c % (D / 8)) * 8;
            uint4 kv = make_uint4(0u, 0u, 0u, 0u), vv = make_uint4(0u, 0u, 0u, 0u);
            if (key0 + r < tk) {
                kv = *reinterpret_cast<const uint4*>(kb + (key0 + r) * ks.t + col);
                vv = *reinterpret_cast<const uint4*>(vb + (key0 + r) * vs.t + col);
            }
            *reinterpret_cast<uint4*>(k_tile + r * LD + col) = kv;
            *reinterpret_cast<uint4*>(v_tile + r * LD + col) = vv;
        }
        __syncthreads();

        float s[BLOCK_K / 8][4];
#pragma unroll
        for (int j = 0; j < BLOCK_K / 8; ++j) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
            // Tiles m = 0..3 of keys j*8..j*8+7: dims kk*16 + 8m (two kk per ldmatrix.x4).
            const u16* krow = k_tile + (j * 8 + lrow) * LD;
#pragma unroll
            for (int kk = 0; kk + 1 < D / 16; kk += 2) {
                u32 bf[4];
                ldmatrix_x4(bf, krow + kk * 16 + lmat * 8);
                Elem<BF16>::mma(s[j], qa[kk], bf);
                Elem<BF16>::mma(s[j], qa[kk + 1], bf + 2);
            }
            if ((D / 16) % 2 == 1) {
                constexpr int kk = D / 16 - 1;
                u32 bf[2];
                ldmatrix_x2(bf, krow + kk * 16 + (lmat & 1) * 8);
                Elem<BF16>::mma(s[j], qa[kk], bf);
            }
        }

        float mx[2] = {m[0], m[1]};
        const bool tail = key0 + BLOCK_K > tk;
#pragma unroll
        for (int j = 0; j < BLOCK_K / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = key0 + j * 8 + 2 * t + (e & 1);
                s[j][e] = (!tail || key < tk) ? s[j][e] * scale_log2 : -INFINITY;
            }
            mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
        }
        const float alpha[2] = {exp2f(m[0] - mx[0]), exp2f(m[1] - mx[1])};
        m[0] = mx[0];
        m[1] = mx[1];
        float sum[2] = {0.f, 0.f};
#pragma unroll
        for (int j = 0; j < BLOCK_K / 8; ++j) {
            s[j][0] = exp2f(s[j][0] - mx[0]);
            s[j][1] = exp2f(s[j][1] - mx[0]);
            s[j][2] = exp2f(s[j][2] - mx[1]);
            s[j][3] = exp2f(s[j][3] - mx[1]);
            sum[0] += s[j][0] + s[j][1];
            sum[1] += s[j][2] + s[j][3];
        }
        l[0] = l[0] * alpha[0] + sum[0];
        l[1] = l[1] * alpha[1] + sum[1];
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
            acc[i][0] *= alpha[0];
            acc[i][1] *= alpha[0];
            acc[i][2] *= alpha[1];
            acc[i][3] *= alpha[1];
        }

#pragma unroll
        for (int kc = 0; kc < BLOCK_K / 16; ++kc) {
            const u32 pa[4] = {
                Elem<BF16>::pack(s[2 * kc][0], s[2 * kc][1]),
                Elem<BF16>::pack(s[2 * kc][2], s[2 * kc][3]),
                Elem<BF16>::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                Elem<BF16>::pack(s[2 * kc + 1][2], s[2 * kc + 1][3]),
            };
            // Tile m: keys kc*16 + (m&1)*8 .. +7, dims (i + (m>>1))*8 .. +7, transposed on load.
            const u16* vrow = v_tile + (kc * 16 + (lmat & 1) * 8 + lrow) * LD + (lmat >> 1) * 8;
#pragma unroll
            for (int i = 0; i < D / 8; i += 2) {
                u32 bf[4];
                ldmatrix_x4_trans(bf, vrow + i * 8);
                Elem<BF16>::mma(acc[i], pa, bf);
                Elem<BF16>::mma(acc[i + 1], pa, bf + 2);
            }
        }
    }

#pragma unroll
    for (int i = 0; i < 2; ++i) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    }
    const float inv[2] = {1.f / l[0], 1.f / l[1]};
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
        const int col = i * 8 + 2 * t;
        if (rows[0] < tq) {
            *reinterpret_cast<u32*>(ob + rows[0] * os.t + col) =
                Elem<BF16>::pack(acc[i][0] * inv[0], acc[i][1] * inv[0]);
        }
        if (rows[1] < tq) {
            *reinterpret_cast<u32*>(ob + rows[1] * os.t + col) =
                Elem<BF16>::pack(acc[i][2] * inv[1], acc[i][3] * inv[1]);
        }
    }
}

#define FLASH_ENTRY(NAME, D, BF16)                                                                            \
    extern "C" __global__ void __launch_bounds__(WARPS * 32)                                                  \
        NAME(const u16* q, const u16* k, const u16* v, u16* o, int heads, int tq, int tk, float scale_log2,      \
             i64 qsb, i64 qsh, i64 qst, i64 ksb, i64 ksh, i64 kst, i64 vsb, i64 vsh, i64 vst, i64 osb, i64 osh, \
             i64 ost) {                                                                                          \
        flash_forward<D, BF16>(q, k, v, o, heads, tq, tk, scale_log2, Strides{qsb, qsh, qst},                 \
                                  Strides{ksb, ksh, kst}, Strides{vsb, vsh, vst}, Strides{osb, osh, ost});        \
    }

FLASH_ENTRY(flash_attention_d64_f16, 64, false)
FLASH_ENTRY(flash_attention_d64_bf16, 64, true)
FLASH_ENTRY(flash_attention_d80_f16, 80, false)
FLASH_ENTRY(flash_attention_d80_bf16, 80, true)
