// Decode GEMM: y {m, n} = a {m, k} · w {n, k}ᵀ for 1 ≤ m ≤ 64 rows (a decode step's batch), f16
// or bf16 operands, f32 accumulation, y in the act dtype or f32. At these m the product is bound
// by reading w once from HBM (mamba2-2.7b: in_proj 54 MB, out_proj 26 MB, LM head 257 MB); the
// aim is to stream w at ≥ 3.8 TB/s, where cuBLASLt reaches 1.8-2.9 TB/s on in_proj/out_proj
// (too few CTAs for 132 SMs, or split-k with a second reduce kernel). DRAFT: compiled, not yet
// run on a GPU (docs/architecture.md, "Decode GEMM").
//
// Math: tensor cores through mma.sync m16n8k16 (sm_80 and sm_90), computing yᵀ = w · aᵀ: a
// 16-row strip of w is the A operand (row-major, w's own layout) and 8 rows of a are the B
// operand (col-major, a's own layout), so m is padded to a multiple of 8 only (kMT ∈ {1, 2, 4, 8}
// n8 tiles; padding rows of a are zero in shared memory and their outputs are dropped).
//
// Tiles: a CTA tile is BN = 64 or 128 rows of w (columns of y) × all m rows; one pipeline step
// ("iteration") is a BK = 64 slice of k of one tile: w {BN, 64} and a {m, 64}, moved by
// cp.async.cg (16 bytes, w with the L2 evict-first policy) into a kStages-deep ring in shared
// memory (3 to 8 stages, about 100 KB; rows of 128 bytes with the 16-byte chunks XOR-swizzled by
// row, so cp.async stores and ldmatrix loads are free of bank conflicts). 8 warps: warp (wn, kw)
// owns rows [32·wn, +32) of the tile (2 m16 strips × kMT n8 tiles of accumulators, ≤ 64 f32
// registers) and the k16 steps kw, kw + kWK, .. of each stage (kWN = BN / 32 warps along n,
// kWK = 8 / kWN along k). At a tile's end the kWK partial sums meet in shared memory (added in
// kw order) as an f32 tile {m, BN}.
//
// Parallelization (stream-k): the iterations of all tiles, tile-major, form one sequence of
// G = n_tiles · k / 64 steps, cut into gridDim.x = min(#SMs, G) equal contiguous ranges, one
// per CTA (one CTA per SM, all resident in one wave, so every CTA streams the same number of
// bytes and they finish together whatever n is). A CTA's loads run ahead across tile boundaries;
// a range covers whole tiles (stored straight to y) and at most two pieces of tiles shared with
// its neighbours. A piece's f32 partial tile goes to the workspace (slot 2·cta + 0 for the range's
// first tile, + 1 for its last), then the CTA counts itself on the tile's counter (one u32 per
// tile, indexed by the tile's first CTA, which is unique among split tiles); the CTA that
// completes the count sums the pieces' partials in CTA order, stores y and resets the counter to
// zero. The summation order depends on the shape and gridDim only, never on timing: results are
// bit-identical from run to run on one device. BN: 128 where the tiles outnumber the CTAs (the LM
// head), else 64 (in_proj, out_proj: smaller pieces, cheaper reductions at the kernel's end);
// DUALITY_DECODE_GEMM_BN=64|128 forces one, for tuning.
//
// Before pdl::wait() the kernel only zeroes shared memory and prefetches its first stages of w
// into L2 (weights: no earlier kernel of a step writes them, and L2 is the coherence point, so a
// prefetch cannot make anyone read stale data); every load and store comes after it.
//
// Limits (gemm_decode_supports): f16/bf16 activations and weights, y act or f32, m ≤ 64, k a
// multiple of 64, lda a multiple of 8, a and w 16-byte aligned; y: any ldy, vector stores when
// ldy and y are aligned for 4 elements. One stream at a time per workspace/sync buffer.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/gemm_decode.h"

namespace duality::cuda {
namespace {

constexpr int kWarps = 8, kThreads = kWarps * 32;
constexpr int kBK = 64;                  // k per iteration: 128 bytes of each w and a row
constexpr int kChunks = kBK / 8;         // 16-byte chunks per staged row
constexpr int kStageBudget = 110 << 10;  // bytes of the pipeline ring
constexpr int kMaxCtas = static_cast<int>(kGemmDecodeSyncBytes / sizeof(uint32_t));

constexpr int clamp_int(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

// ---- PTX wrappers -----------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ uint64_t evict_first_policy() {
    uint64_t pol;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
    return pol;
}
// 16 bytes global -> shared, the source read through L2 only; src_bytes = 0 zero-fills.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(src_bytes));
}
// The same with an L2 cache policy and a 256-byte L2 prefetch (the row's next stage).
__device__ __forceinline__ void cp_async16_hint(void* dst, const void* src, int src_bytes,
                                                uint64_t pol) {
    asm volatile(
        "cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2, %3;\n" ::"r"(
            smem_addr(dst)),
        "l"(src), "r"(src_bytes), "l"(pol));
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void prefetch_l2(const void* p) {
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x2(uint32_t (&r)[2], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ uint32_t atom_add_acq_rel(uint32_t* p, uint32_t v) {
    uint32_t old;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;\n"
                 : "=r"(old)
                 : "l"(p), "r"(v)
                 : "memory");
    return old;
}

// d += A {16, 16} · B {16, 8}, f32 accumulators, in the operand dtype T.
template <typename T>
struct Mma;
template <>
struct Mma<__nv_bfloat16> {
    __device__ static __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
            "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};
template <>
struct Mma<__half> {
    __device__ static __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
            "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

// ---- tile geometry ----------------------------------------------------------------------------
template <int kMT, int kBN>
struct Geom {
    static_assert(kMT == 1 || kMT == 2 || kMT == 4 || kMT == 8, "n8 tiles of m: 1, 2, 4 or 8");
    static_assert(kBN == 64 || kBN == 128, "tile rows of w: 64 or 128");
    static constexpr int kM = 8 * kMT;                        // m padded
    static constexpr int kWN = kBN / 32, kWK = kWarps / kWN;  // warps along n and along k
    static constexpr int kStepsPerWarp = kBK / 16 / kWK;      // k16 steps per warp and stage
    static_assert(kStepsPerWarp * kWK * 16 == kBK, "k16 steps split evenly across kWK warps");
    static constexpr int kWStage = kBN * kBK, kAStage = kM * kBK;  // elements of a stage
    static constexpr int kStageBytes = (kWStage + kAStage) * 2;
    static constexpr int kStages = clamp_int(kStageBudget / kStageBytes, 3, 8);
    static constexpr int kLdE = kBN + 4;  // f32 tile rows: conflict-free fragment stores
    static constexpr int kQ = kBN / 4;    // float4 per tile row
    static constexpr int kItems = (kM * kQ + kThreads - 1) / kThreads;  // float4 per thread
    static constexpr size_t kSmemBytes =
        static_cast<size_t>(kStages) * kStageBytes + static_cast<size_t>(kM) * kLdE * sizeof(float);
    static_assert(kSmemBytes <= 160 * 1024, "fits an A100's 163 KB of shared memory per block");
};

struct Params {
    const void* a = nullptr;      // {m, k} act, rows lda apart
    const void* w = nullptr;      // {n, k} act, dense
    void* y = nullptr;            // {m, n} y dtype, rows ldy apart
    float* partial = nullptr;     // {2 · gridDim.x, m, BN} f32: the split tiles' pieces
    uint32_t* counter = nullptr;  // {gridDim.x}: pieces counted per split tile (zero between calls)
    int64_t lda = 0, ldy = 0;
    int m = 0, n = 0, k = 0;
    int kb = 0;     // iterations per tile: k / kBK
    int iters = 0;  // G = n_tiles · kb
    int vec_y = 0;  // y rows and base aligned for 4-element stores
};

// The first iteration of CTA c's range: ⌊c·G/C⌋.
__device__ __forceinline__ int range_start(int c, int G, int C) {
    return static_cast<int>(static_cast<int64_t>(c) * G / C);
}
// The CTA whose range holds iteration g: the largest c with range_start(c) ≤ g (C ≤ G).
__device__ __forceinline__ int cta_of(int64_t g, int G, int C) {
    return static_cast<int>(((g + 1) * C - 1) / G);
}

// y[r, col..col+4) = v (columns ≥ n dropped).
template <typename Y>
__device__ __forceinline__ void store_y4(Y* y, int64_t ldy, int r, int col, float4 v, int n,
                                         bool vec) {
    Y* p = y + r * ldy + col;
    const float f[4] = {v.x, v.y, v.z, v.w};
    if (vec && col + 4 <= n) {
        dtype::store<4>(p, f);
    } else {
#pragma unroll
        for (int e = 0; e < 4; ++e)
            if (col + e < n) p[e] = dtype::from_f32<Y>(f[e]);
    }
}

__device__ __forceinline__ float4 add4(float4 s, float4 v) {
    return make_float4(s.x + v.x, s.y + v.y, s.z + v.z, s.w + v.w);
}

template <typename T, typename Y, int kMT, int kBN>
struct Cta {
    using G_ = Geom<kMT, kBN>;
    static constexpr int kLdE = G_::kLdE, kQ = G_::kQ;

    Params p;
    T* Ws;     // {kStages, BN, 64}, chunks swizzled
    T* As;     // {kStages, kM, 64}, chunks swizzled
    float* E;  // {kM, kLdE}: the tile's f32 sums
    int* s_last;
    int tid, lane, wn, kw;
    int C, c, G;
    float acc[2][kMT][4];

    __device__ __forceinline__ void zero_acc() {
#pragma unroll
        for (int s = 0; s < 2; ++s)
#pragma unroll
            for (int t = 0; t < kMT; ++t)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[s][t][e] = 0.0f;
    }

    // Element offset of 16-byte chunk ch of staged row r (XOR swizzle over 8 rows).
    __device__ static __forceinline__ int swz(int r, int ch) {
        return r * kBK + ((ch ^ (r & 7)) * 8);
    }

    // Iteration (tile t, k block kb) into stage s.
    __device__ __forceinline__ void load(int t, int kb, int s, uint64_t pol) {
        const T* w = static_cast<const T*>(p.w);
        const T* a = static_cast<const T*>(p.a);
        const int64_t n0 = static_cast<int64_t>(t) * kBN;
        const int k0 = kb * kBK;
        T* ws = Ws + s * G_::kWStage;
#pragma unroll
        for (int j = 0; j < kBN * kChunks / kThreads; ++j) {
            const int i = tid + j * kThreads, r = i / kChunks, ch = i % kChunks;
            const int64_t row = n0 + r;
            const bool ok = row < p.n;
            cp_async16_hint(ws + swz(r, ch), ok ? w + row * p.k + k0 + ch * 8 : w, ok ? 16 : 0,
                            pol);
        }
        T* as = As + s * G_::kAStage;
        for (int i = tid; i < p.m * kChunks; i += kThreads) {
            const int r = i / kChunks, ch = i % kChunks;
            cp_async16(as + swz(r, ch), a + r * p.lda + k0 + ch * 8, 16);
        }
    }

    // acc += this warp's k16 steps of stage s.
    __device__ __forceinline__ void compute(int s) {
        const T* ws = Ws + s * G_::kWStage;
        const T* as = As + s * G_::kAStage;
#pragma unroll
        for (int j = 0; j < G_::kStepsPerWarp; ++j) {
            const int ks = kw + j * G_::kWK;  // k16 step within the stage
            // A = w rows (two m16 strips) × k16: matrices (rows 0-7 | 8-15) × (k 0-7 | 8-15).
            uint32_t af[2][4];
#pragma unroll
            for (int st = 0; st < 2; ++st) {
                const int r = wn * 32 + st * 16 + (lane & 15), ch = 2 * ks + (lane >> 4);
                ldsm_x4(af[st], ws + swz(r, ch));
            }
            // B = a rows (n8 tiles of m) × k16: per tile, matrices k 0-7 and k 8-15.
            uint32_t bf[kMT][2];
            if constexpr (kMT == 1) {
                const int r = lane & 7, ch = 2 * ks + ((lane >> 3) & 1);
                ldsm_x2(bf[0], as + swz(r, ch));
            } else {
#pragma unroll
                for (int pt = 0; pt < kMT / 2; ++pt) {
                    const int r = 16 * pt + (lane & 7) + 8 * (lane >> 4);
                    const int ch = 2 * ks + ((lane >> 3) & 1);
                    uint32_t q[4];
                    ldsm_x4(q, as + swz(r, ch));
                    bf[2 * pt][0] = q[0];
                    bf[2 * pt][1] = q[1];
                    bf[2 * pt + 1][0] = q[2];
                    bf[2 * pt + 1][1] = q[3];
                }
            }
#pragma unroll
            for (int st = 0; st < 2; ++st)
#pragma unroll
                for (int t = 0; t < kMT; ++t) Mma<T>::run(acc[st][t], af[st], bf[t][0], bf[t][1]);
        }
    }

    // E (=, or += when add) this warp's accumulators, transposed to {m, n}: the fragment's row
    // is a column n of y, its column a row m.
    __device__ __forceinline__ void to_smem(bool add) {
        const int gr = lane / 4, qd = lane % 4;
#pragma unroll
        for (int st = 0; st < 2; ++st)
#pragma unroll
            for (int t = 0; t < kMT; ++t) {
                const int nr = wn * 32 + st * 16 + gr, mc = t * 8 + 2 * qd;
                float* e0 = E + mc * kLdE + nr;  // (m = mc, n = nr)
                float* e1 = e0 + kLdE;           // (mc + 1, nr)
                if (add) {
                    e0[0] += acc[st][t][0];
                    e1[0] += acc[st][t][1];
                    e0[8] += acc[st][t][2];
                    e1[8] += acc[st][t][3];
                } else {
                    e0[0] = acc[st][t][0];
                    e1[0] = acc[st][t][1];
                    e0[8] = acc[st][t][2];
                    e1[8] = acc[st][t][3];
                }
            }
    }

    __device__ __forceinline__ float4 e4(int r, int col) const {
        return *reinterpret_cast<const float4*>(E + r * kLdE + col);
    }

    // The partial slot of CTA cc's piece of tile t.
    __device__ __forceinline__ const float* slot(int cc, int t) const {
        const int first_tile = range_start(cc, G, C) / p.kb;
        return p.partial + static_cast<int64_t>(2 * cc + (t == first_tile ? 0 : 1)) * p.m * kBN;
    }

    // The end of this CTA's piece of tile t (whole when it covered all of the tile's k).
    __device__ __forceinline__ void finish(int t, bool whole) {
        for (int j = 0; j < G_::kWK; ++j) {  // E = Σ_kw acc, in kw order
            if (kw == j) to_smem(j > 0);
            __syncthreads();
        }
        Y* y = static_cast<Y*>(p.y);
        const int n0 = t * kBN, items = p.m * kQ;
        const bool vec = p.vec_y != 0;
        if (whole) {
            for (int i = tid; i < items; i += kThreads) {
                const int r = i / kQ, col = 4 * (i % kQ);
                store_y4(y, p.ldy, r, n0 + col, e4(r, col), p.n, vec);
            }
            return;
        }
        // A piece: publish it, count it; the last piece of the tile sums them all.
        const int64_t g0 = static_cast<int64_t>(t) * p.kb;
        const int c_first = cta_of(g0, G, C), c_last = cta_of(g0 + p.kb - 1, G, C);
        float* mine = const_cast<float*>(slot(c, t));
        for (int i = tid; i < items; i += kThreads) {
            const int r = i / kQ, col = 4 * (i % kQ);
            __stcg(reinterpret_cast<float4*>(mine + r * kBN + col), e4(r, col));
        }
        __threadfence();
        __syncthreads();
        if (tid == 0) {
            const uint32_t before = atom_add_acq_rel(p.counter + c_first, 1u);
            const bool last = before == static_cast<uint32_t>(c_last - c_first);
            if (last) p.counter[c_first] = 0;  // every piece has counted: ready for the next call
            *s_last = last;
        }
        __syncthreads();
        if (!*s_last) return;
        __threadfence();
        float4 sum[G_::kItems];
#pragma unroll
        for (int u = 0; u < G_::kItems; ++u) sum[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int cc = c_first; cc <= c_last; ++cc) {  // fixed order: CTA index
            const float* src = slot(cc, t);
#pragma unroll
            for (int u = 0; u < G_::kItems; ++u) {
                const int i = tid + u * kThreads;
                if (i < items) {
                    const int r = i / kQ, col = 4 * (i % kQ);
                    const float4 v =
                        cc == c ? e4(r, col)
                                : __ldcg(reinterpret_cast<const float4*>(src + r * kBN + col));
                    sum[u] = add4(sum[u], v);
                }
            }
        }
#pragma unroll
        for (int u = 0; u < G_::kItems; ++u) {
            const int i = tid + u * kThreads;
            if (i < items) {
                const int r = i / kQ, col = 4 * (i % kQ);
                store_y4(y, p.ldy, r, n0 + col, sum[u], p.n, vec);
            }
        }
    }
};

template <typename T, typename Y, int kMT, int kBN>
__global__ void __launch_bounds__(kThreads, 1) gemm_decode_kernel(Params p) {
    using G_ = Geom<kMT, kBN>;
    constexpr int kStages = G_::kStages;
    extern __shared__ __align__(128) unsigned char smem[];
    __shared__ int s_last;

    Cta<T, Y, kMT, kBN> cta{p};
    cta.Ws = reinterpret_cast<T*>(smem);
    cta.As = cta.Ws + kStages * G_::kWStage;
    cta.E = reinterpret_cast<float*>(cta.As + kStages * G_::kAStage);
    cta.s_last = &s_last;
    cta.tid = static_cast<int>(threadIdx.x);
    cta.lane = cta.tid % 32;
    const int warp = cta.tid / 32;
    cta.wn = warp % G_::kWN;
    cta.kw = warp / G_::kWN;
    cta.C = static_cast<int>(gridDim.x);
    cta.c = static_cast<int>(blockIdx.x);
    cta.G = p.iters;
    const int KB = p.kb, tid = cta.tid;
    const int g_begin = range_start(cta.c, cta.G, cta.C);
    const int g_end = range_start(cta.c + 1, cta.G, cta.C);  // > g_begin: the host keeps C ≤ G

    // Rows m..kM of every a stage are never loaded: zero them once (the MMA's padding columns).
    {
        const int per = (G_::kM - p.m) * kChunks;
        for (int i = tid; i < kStages * per; i += kThreads) {
            const int s = i / per, r = p.m + (i % per) / kChunks, ch = i % kChunks;
            *reinterpret_cast<uint4*>(cta.As + s * G_::kAStage + r * kBK + ch * 8) =
                make_uint4(0, 0, 0, 0);
        }
    }
    // The first stages' w rows towards L2 while the previous kernel finishes (see the header).
    {
        const T* w = static_cast<const T*>(p.w);
        for (int j = 0; j < kStages - 1 && g_begin + j < g_end; ++j) {
            const int g = g_begin + j, t = g / KB, kb = g % KB;
            for (int r = tid; r < kBN; r += kThreads) {
                const int64_t row = static_cast<int64_t>(t) * kBN + r;
                if (row < p.n) prefetch_l2(w + row * p.k + kb * kBK);
            }
        }
    }
    pdl::wait();
    pdl::allow_next();

    const uint64_t pol = evict_first_policy();
    // Prologue: kStages - 1 iterations in flight (one commit group each, possibly empty).
    int lg = g_begin, lt = g_begin / KB, lkb = g_begin % KB;  // the next iteration to load
    for (int s = 0; s < kStages - 1; ++s) {
        if (lg < g_end) {
            cta.load(lt, lkb, s, pol);
            ++lg;
            if (++lkb == KB) {
                lkb = 0;
                ++lt;
            }
        }
        cp_async_commit();
    }
    int t = g_begin / KB, kb = g_begin % KB;
    bool whole = kb == 0;  // this piece started at the tile's first k block
    cta.zero_acc();
    for (int g = g_begin; g < g_end; ++g) {
        cp_async_wait<kStages - 2>();  // iteration g has landed (for this thread's copies) ...
        __syncthreads();               // ... and everyone's; stage (g - 1) is free again
        if (lg < g_end) {
            cta.load(lt, lkb, (lg - g_begin) % kStages, pol);
            ++lg;
            if (++lkb == KB) {
                lkb = 0;
                ++lt;
            }
        }
        cp_async_commit();
        cta.compute((g - g_begin) % kStages);
        if (kb == KB - 1 || g == g_end - 1) {
            cta.finish(t, whole && kb == KB - 1);
            cta.zero_acc();
            ++t;
            kb = 0;
            whole = true;
        } else {
            ++kb;
        }
    }
    cp_async_wait<0>();
}

// ---- host side ---------------------------------------------------------------------------------
int sm_count() {
    static int cached[64] = {};
    int dev = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
    if (dev < 0 || dev >= 64) fail("gemm_decode: device index", "dev", __FILE__, __LINE__);
    if (cached[dev] == 0)
        DUALITY_CUDA_CHECK(
            cudaDeviceGetAttribute(&cached[dev], cudaDevAttrMultiProcessorCount, dev));
    return cached[dev];
}

// DUALITY_DECODE_GEMM_BN=64|128 forces the tile width (for tuning); 0: the heuristic.
int forced_bn() {
    static const int v = [] {
        const char* s = std::getenv("DUALITY_DECODE_GEMM_BN");
        if (s && std::strcmp(s, "64") == 0) return 64;
        if (s && std::strcmp(s, "128") == 0) return 128;
        return 0;
    }();
    return v;
}

struct Plan {
    int bn = 0, ctas = 0, n_tiles = 0, iters = 0;
};

Plan plan(int64_t n, int64_t k) {
    Plan pl;
    const int sms = std::min(sm_count(), kMaxCtas);
    const int64_t n128 = (n + 127) / 128;
    pl.bn = forced_bn() ? forced_bn() : (n128 >= sms ? 128 : 64);
    pl.n_tiles = static_cast<int>((n + pl.bn - 1) / pl.bn);
    pl.iters = static_cast<int>(static_cast<int64_t>(pl.n_tiles) * (k / kBK));
    pl.ctas = std::min(sms, pl.iters);
    return pl;
}

template <typename T, typename Y, int kMT, int kBN>
void launch(const Params& prm, int ctas, cudaStream_t stream) {
    using G_ = Geom<kMT, kBN>;
    static bool configured = false;  // per instantiation
    if (!configured) {
        DUALITY_CUDA_CHECK(cudaFuncSetAttribute(gemm_decode_kernel<T, Y, kMT, kBN>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(G_::kSmemBytes)));
        configured = true;
    }
    pdl::launch(gemm_decode_kernel<T, Y, kMT, kBN>, dim3(static_cast<unsigned>(ctas)),
                dim3(kThreads), G_::kSmemBytes, stream, prm);
    DUALITY_CUDA_LAUNCH_CHECK();
}

template <typename T, typename Y, int kBN>
void launch_m(const Params& prm, int ctas, cudaStream_t stream) {
    if (prm.m <= 8) {
        launch<T, Y, 1, kBN>(prm, ctas, stream);
    } else if (prm.m <= 16) {
        launch<T, Y, 2, kBN>(prm, ctas, stream);
    } else if (prm.m <= 32) {
        launch<T, Y, 4, kBN>(prm, ctas, stream);
    } else {
        launch<T, Y, 8, kBN>(prm, ctas, stream);
    }
}

template <typename T, typename Y>
void launch_bn(const Params& prm, int bn, int ctas, cudaStream_t stream) {
    if (bn == 128) {
        launch_m<T, Y, 128>(prm, ctas, stream);
    } else {
        launch_m<T, Y, 64>(prm, ctas, stream);
    }
}

template <typename T>
void launch_y(const Params& prm, DType y_dtype, int bn, int ctas, cudaStream_t stream) {
    if (y_dtype == DType::kF32) {
        launch_bn<T, float>(prm, bn, ctas, stream);
    } else {
        launch_bn<T, T>(prm, bn, ctas, stream);
    }
}

}  // namespace

bool gemm_decode_supports(const void* a, int64_t lda, const void* w, DType y_dtype, int64_t m,
                          int64_t n, int64_t k, DType act) {
    if (act != DType::kF16 && act != DType::kBF16) return false;
    if (y_dtype != act && y_dtype != DType::kF32) return false;
    if (m < 1 || m > kDecodeMaxM || n < 1 || k < kBK || k % kBK != 0) return false;
    if (lda < k || lda % 8 != 0) return false;
    if (!dtype::is_aligned(a, 16) || !dtype::is_aligned(w, 16)) return false;
    // Iteration and element indices stay within int (n·k up to 2^31 - 1 elements of w).
    return n * k < (int64_t{1} << 31) && n <= (int64_t{1} << 30);
}

size_t gemm_decode_workspace_bytes(int64_t m, int64_t n, int64_t k) {
    const Plan pl = plan(n, k);
    return size_t{2} * static_cast<size_t>(pl.ctas) * static_cast<size_t>(m) *
           static_cast<size_t>(pl.bn) * sizeof(float);
}

void gemm_decode(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
                 int64_t m, int64_t n, int64_t k, DType act, void* workspace,
                 size_t workspace_bytes, uint32_t* sync, cudaStream_t stream) {
    if (m == 0 || n == 0) return;
    if (!gemm_decode_supports(a, lda, w, y_dtype, m, n, k, act) || !y || !sync || ldy < n)
        fail("gemm_decode: unsupported arguments (see gemm_decode_supports)", "gemm_decode",
             __FILE__, __LINE__);
    if (workspace_bytes < gemm_decode_workspace_bytes(m, n, k) || !workspace)
        fail("gemm_decode: workspace too small",
             ("m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k))
                 .c_str(),
             __FILE__, __LINE__);
    const Plan pl = plan(n, k);
    Params prm;
    prm.a = a;
    prm.w = w;
    prm.y = y;
    prm.partial = static_cast<float*>(workspace);
    prm.counter = sync;
    prm.lda = lda;
    prm.ldy = ldy;
    prm.m = static_cast<int>(m);
    prm.n = static_cast<int>(n);
    prm.k = static_cast<int>(k);
    prm.kb = static_cast<int>(k / kBK);
    prm.iters = pl.iters;
    const size_t y_el = dtype_size(y_dtype);
    prm.vec_y = ldy % 4 == 0 && dtype::is_aligned(y, 4 * y_el);
    switch (act) {
        case DType::kBF16:
            launch_y<__nv_bfloat16>(prm, y_dtype, pl.bn, pl.ctas, stream);
            return;
        case DType::kF16:
            launch_y<__half>(prm, y_dtype, pl.bn, pl.ctas, stream);
            return;
        default:
            fail("gemm_decode: not f16/bf16", "act", __FILE__, __LINE__);
    }
}

}  // namespace duality::cuda
