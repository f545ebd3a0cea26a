// Decode GEMM: y {m, n} = a {m, k} · w {n, k}ᵀ for 1 ≤ m ≤ 64 rows (a decode step's batch), f16
// or bf16 operands, f32 accumulation, y in the act dtype or f32. At these m the product is bound
// by reading w once from HBM; cuBLASLt streams the 2.7b out_proj (26 MB) at only 1.7-1.9 TB/s
// for m ≤ 16 (11.6-15 µs, varying from run to run), this kernel at 2.7 TB/s (9.6-9.9 µs),
// measured on an H200.
//
// Math: mma.sync m16n8k16 (sm_80 and later) computing yᵀ = w · aᵀ: 16 rows of w are the A
// operand and 8 rows of a the B operand. w goes from HBM straight into registers, never through
// shared memory: each thread loads 16 contiguous bytes (8 elements) of a w row per 32 k, and the
// k order inside every 32-element block is permuted so that those 8 elements ARE the thread's
// A-fragment registers of two k16 MMAs (elements 8t..8t+3 feed MMA 0, 8t+4..8t+7 MMA 1, thread
// t = lane % 4). A dot product does not care about the order of k as long as a uses the same
// permutation, and it does: a thread's B fragments for the same two MMAs are again 8 contiguous
// elements of an a row, one 16-byte load (through L1, where every warp of the CTA finds them).
// So both operands move as 16-byte vectors with no shuffles and no shared-memory staging.
//
// Parallelization: a CTA is 8 warps (two CTAs per SM); warp (strip, part) owns 16 rows of w and
// every kw-th step of 64 k of the CTA's slice, with kw ∈ {1, 2, 4, 8} warps along k, so a CTA
// covers 128 / kw rows. k is cut into `splits` slices, one CTA per (group of rows, slice). The
// host picks kw and splits from a cost model (waves × the longest warp's steps, plus the partial
// tiles to add up). Each thread keeps 2-3 steps of w in flight in registers. The k-warps of a
// strip add up in shared memory in kw order. With one slice the CTA stores y directly;
// otherwise it stores its f32 partial tile to the workspace and counts itself on its group's
// counter, and the CTA that completes the count adds the slices in slice order, stores y and
// resets the counter to zero. The summation order depends on the shape and the SM count only:
// results are bit-identical from run to run on one device.
//
// Before pdl::wait() the kernel only prefetches its first steps of w into L2 (weights are never
// written by the kernels of a step, and L2 is the coherence point, so a prefetch cannot make
// anyone read stale data); every load into registers comes after it.
//
// Limits (gemm_decode_workspace): f16/bf16 activations and weights, y act or f32, m ≤ 64, k a
// multiple of 64, lda a multiple of 8, a and w 16-byte aligned, n · k, m · lda and m · ldy below
// 2^31, at most 4096 groups; y is written with scalar stores (any ldy ≥ n, aligned to its element).
// It does not call pdl::allow_next(): the next kernel launches when it completes. One stream at a
// time per workspace/sync buffer. Slower than cuBLASLt at m ≥ 32 and on wide products (the 2.7b
// in_proj), for reasons not yet profiled: a variant with two strips per warp, which halves a's L1
// traffic per byte of w, was no faster at m = 32 or 64. Gemm uses it only where it was measured
// faster.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "core/cuda/prefetch.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/gemm_decode.h"
#include "ops/cuda/mma.cuh"

namespace duality::cuda {
namespace {

constexpr int kWarps = 8, kThreads = kWarps * 32;  // two CTAs per SM
constexpr int kStripRows = 16;                     // rows of w per warp: the MMA's M
constexpr int kKB = 64;                            // k per step: 128 bytes of a w row
constexpr int kMaxGroups = static_cast<int>(kGemmDecodeSyncBytes / sizeof(uint32_t));

// ---- PTX wrappers -----------------------------------------------------------------------------
// 16 bytes of w, read once: not kept in L1.
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

struct Params {
    const void* a = nullptr;      // {m, k} act, rows lda apart
    const void* w = nullptr;      // {n, k} act, dense
    void* y = nullptr;            // {m, n} y dtype, rows ldy apart
    float* partial = nullptr;     // {groups · splits, m, rows} f32: the slices' partial tiles
    uint32_t* counter = nullptr;  // {groups}: slices counted per group (zero between calls)
    int64_t lda = 0, ldy = 0;
    int m = 0, n = 0, k = 0;
    int kw = 1;      // warps along k in a CTA (1, 2, 4 or 8): a CTA covers 8 / kw strips
    int splits = 1;  // k slices per group (one CTA each)
    int steps = 0;   // k / 64
};

// One step (64 k) of a warp's strip: w {rows g, g + 8 × 2 blocks of 32} in registers; a_t + k0
// + a_off[j]: a row min(8j + g, m - 1) at element 8t of the step.
template <typename T, int kMT>
__device__ __forceinline__ void mma_step(float (&acc)[kMT][4], const uint4 (&w)[4], const T* a_t,
                                         const int (&a_off)[kMT], int k0) {
#pragma unroll
    for (int blk = 0; blk < 2; ++blk) {
        const uint4 lo = w[2 * blk], hi = w[2 * blk + 1];  // rows g and g + 8
        uint4 b[kMT];
#pragma unroll
        for (int j = 0; j < kMT; ++j)
            b[j] = __ldg(reinterpret_cast<const uint4*>(a_t + a_off[j] + k0 + blk * 32));
#pragma unroll
        for (int j = 0; j < kMT; ++j) {
            mma_m16n8k16<T>(acc[j], {lo.x, hi.x, lo.y, hi.y}, b[j].x, b[j].y);
            mma_m16n8k16<T>(acc[j], {lo.z, hi.z, lo.w, hi.w}, b[j].z, b[j].w);
        }
    }
}

// w rows r0 and r1 (r1 = r0 + 8) at step s: the thread's 16 bytes of each 32-element block.
template <typename T>
__device__ __forceinline__ void load_w(uint4 (&w)[4], const T* w0, const T* w1, int s) {
    w[0] = ld_stream16(w0 + s * kKB);
    w[1] = ld_stream16(w1 + s * kKB);
    w[2] = ld_stream16(w0 + s * kKB + 32);
    w[3] = ld_stream16(w1 + s * kKB + 32);
}

template <typename T, typename Y, int kMT>
__global__ void __launch_bounds__(kThreads, 2) gemm_decode_kernel(Params p) {
    constexpr int kDepth = kMT >= 8 ? 2 : 3;      // steps of w in flight per thread
    extern __shared__ __align__(16) float red[];  // {kWarps, 4·kMT, 32}: the k-warps' sums
    __shared__ int s_last;

    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    const int g = lane / 4, t = lane % 4;
    const int sw = warp / p.kw, kw = warp % p.kw;   // strip in the CTA, part of k
    const int rows = (kWarps / p.kw) * kStripRows;  // rows of w per CTA
    const int group = static_cast<int>(blockIdx.x) / p.splits;
    const int split = static_cast<int>(blockIdx.x) % p.splits;
    const int s0 = split * p.steps / p.splits, s1 = (split + 1) * p.steps / p.splits;
    // This warp takes the CTA's steps s0 + kw, s0 + kw + kw_count, ...
    const int first = s0 + kw, n_mine = first < s1 ? (s1 - first + p.kw - 1) / p.kw : 0;
    const int stride = p.kw * kKB;

    // This thread's w rows (rows past n read row n - 1; their results are dropped).
    const int r0 = group * rows + sw * kStripRows + g, r1 = r0 + 8;
    const T* w = static_cast<const T*>(p.w);
    const T* w0 = w + static_cast<int64_t>(min(r0, p.n - 1)) * p.k + first * kKB + t * 8;
    const T* w1 = w + static_cast<int64_t>(min(r1, p.n - 1)) * p.k + first * kKB + t * 8;
    if (t == 0) {
#pragma unroll
        for (int i = 0; i < kDepth; ++i) {
            if (i < n_mine) {
                prefetch_l2_line(w0 + i * stride);
                prefetch_l2_line(w1 + i * stride);
            }
        }
    }
    pdl::wait();

    // a rows past m read row m - 1; their columns of y are dropped.
    const T* a_t = static_cast<const T*>(p.a) + first * kKB + t * 8;
    int a_off[kMT];
#pragma unroll
    for (int j = 0; j < kMT; ++j) a_off[j] = min(8 * j + g, p.m - 1) * static_cast<int>(p.lda);

    uint4 buf[kDepth][4];
#pragma unroll
    for (int i = 0; i < kDepth; ++i)
        if (i < n_mine) load_w(buf[i], w0, w1, i * p.kw);

    float acc[kMT][4];
#pragma unroll
    for (int j = 0; j < kMT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    for (int s = 0; s < n_mine; s += kDepth) {
#pragma unroll
        for (int i = 0; i < kDepth; ++i) {
            const int it = s + i;
            if (it < n_mine) {
                mma_step<T, kMT>(acc, buf[i], a_t, a_off, it * stride);
                if (it + kDepth < n_mine) load_w(buf[i], w0, w1, (it + kDepth) * p.kw);
            }
        }
    }

    // The k-warps of a strip meet in shared memory; warp kw = 0 adds them in kw order.
    if (p.kw > 1) {
        if (kw > 0) {
#pragma unroll
            for (int j = 0; j < kMT; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    red[(warp * 4 * kMT + 4 * j + e) * 32 + lane] = acc[j][e];
        }
        __syncthreads();
        if (kw == 0) {
            for (int q = 1; q < p.kw; ++q)
#pragma unroll
                for (int j = 0; j < kMT; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        acc[j][e] += red[((warp + q) * 4 * kMT + 4 * j + e) * 32 + lane];
        }
    }

    // acc[j][e] (warps kw = 0): w row r0 (e < 2) or r1 (e ≥ 2), a row 8j + 2t + (e & 1).
    Y* y = static_cast<Y*>(p.y);
    if (p.splits == 1) {
        if (kw != 0) return;
#pragma unroll
        for (int j = 0; j < kMT; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int mr = 8 * j + 2 * t + (e & 1), r = e < 2 ? r0 : r1;
                if (mr < p.m && r < p.n) y[mr * p.ldy + r] = dtype::from_f32<Y>(acc[j][e]);
            }
        }
        return;
    }
    const int tile = p.m * rows;  // floats of a partial tile {m, rows}
    if (kw == 0) {
        float* part = p.partial + static_cast<int64_t>(blockIdx.x) * tile;
        const int lr0 = sw * kStripRows + g;
#pragma unroll
        for (int j = 0; j < kMT; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int mr = 8 * j + 2 * t + (e & 1), lr = e < 2 ? lr0 : lr0 + 8;
                if (mr < p.m) part[mr * rows + lr] = acc[j][e];
            }
        }
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(&p.counter[group], 1u) == p.splits - 1u;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    // The last slice's CTA adds the slices in slice order, 4 columns at a time, with the loads
    // of 4 slices in flight before their adds.
    const float4* base =
        reinterpret_cast<const float4*>(p.partial + static_cast<int64_t>(group) * p.splits * tile);
    const int tile4 = tile / 4;
    for (int i = static_cast<int>(threadIdx.x); i < tile4; i += kThreads) {
        float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int sp = 0; sp < p.splits; sp += 4) {
            float4 v[4];
#pragma unroll
            for (int q = 0; q < 4; ++q)
                if (sp + q < p.splits) v[q] = __ldcg(base + (sp + q) * tile4 + i);
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                if (sp + q < p.splits) {
                    sum.x += v[q].x;
                    sum.y += v[q].y;
                    sum.z += v[q].z;
                    sum.w += v[q].w;
                }
            }
        }
        const int mr = 4 * i / rows, r = group * rows + 4 * i % rows;
        const float f[4] = {sum.x, sum.y, sum.z, sum.w};
#pragma unroll
        for (int e = 0; e < 4; ++e)
            if (r + e < p.n) y[mr * p.ldy + r + e] = dtype::from_f32<Y>(f[e]);
    }
    if (threadIdx.x == 0) p.counter[group] = 0;
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

int m_tiles(int64_t m) {
    return m <= 8 ? 1 : m <= 16 ? 2 : m <= 32 ? 4 : 8;
}

struct Plan {
    int kw = 1, rows = 0, groups = 0, splits = 0, steps = 0;
    size_t smem = 0, workspace = 0;
};

// Warps along k and k slices per group, from a cost in steps of 64 k per warp: the waves (two
// CTAs per SM) times the longest warp's steps plus one for the CTA's start, plus the partial
// tiles the last CTA of a group reads (64 KB taken as one step) and its handshake.
Plan plan(int64_t m, int64_t n, int64_t k) {
    const int slots = 2 * sm_count();
    Plan best;
    double best_cost = 0;
    for (int kw : {1, 2, 4, 8}) {
        Plan pl;
        pl.kw = kw;
        pl.rows = kWarps / kw * kStripRows;
        pl.groups = static_cast<int>((n + pl.rows - 1) / pl.rows);
        pl.steps = static_cast<int>(k / kKB);
        if (pl.groups > kMaxGroups) continue;
        for (int s = 1; s <= std::min(pl.steps, 32); ++s) {
            const int longest = (pl.steps + s - 1) / s;
            if (longest < kw)
                break;  // no warp idle in the longest slice (a shorter one may
                        // leave a warp without steps: it adds zeros)
            const int64_t tasks = static_cast<int64_t>(pl.groups) * s;
            const auto tile = static_cast<double>(m) * pl.rows * sizeof(float);
            double cost =
                static_cast<double>((tasks + slots - 1) / slots) * ((longest + kw - 1) / kw + 1);
            if (s > 1) cost += s * tile / 65536.0 + 0.5;
            const size_t workspace = s > 1 ? static_cast<size_t>(tasks * tile) : 0;
            if (workspace > (size_t{16} << 20)) continue;
            if (best.splits == 0 || cost < best_cost - 1e-9) {
                best = pl;
                best.splits = s;
                best.workspace = workspace;
                best.smem = kw > 1 ? size_t{kWarps} * 4 * m_tiles(m) * 32 * sizeof(float) : 0;
                best_cost = cost;
            }
        }
    }
    return best;
}

template <typename T, typename Y, int kMT>
void launch(const Params& prm, const Plan& pl, cudaStream_t stream) {
    // The k-warps' sums take at most kWarps · 4 · 8 · 32 floats (32 KiB): under the 48 KiB a
    // launch may use without opting in.
    static_assert(size_t{kWarps} * 4 * 8 * 32 * sizeof(float) <= 48 * 1024, "shared memory");
    auto* kernel = gemm_decode_kernel<T, Y, kMT>;
    pdl::launch(kernel, dim3(static_cast<unsigned>(pl.groups * pl.splits)), dim3(kThreads), pl.smem,
                stream, prm);
    DUALITY_CUDA_LAUNCH_CHECK();
}

template <typename T, typename Y>
void launch_m(const Params& prm, const Plan& pl, cudaStream_t stream) {
    switch (m_tiles(prm.m)) {
        case 1:
            return launch<T, Y, 1>(prm, pl, stream);
        case 2:
            return launch<T, Y, 2>(prm, pl, stream);
        case 4:
            return launch<T, Y, 4>(prm, pl, stream);
        default:
            return launch<T, Y, 8>(prm, pl, stream);
    }
}

template <typename T>
void launch_y(const Params& prm, DType y_dtype, const Plan& pl, cudaStream_t stream) {
    if (y_dtype == DType::kF32) {
        launch_m<T, float>(prm, pl, stream);
    } else {
        launch_m<T, T>(prm, pl, stream);
    }
}

}  // namespace

namespace {

// The operand checks of gemm_decode_workspace (without the plan).
bool operands_ok(const void* a, int64_t lda, const void* w, DType y_dtype, int64_t m, int64_t n,
                 int64_t k, DType act) {
    if (act != DType::kF16 && act != DType::kBF16) return false;
    if (y_dtype != act && y_dtype != DType::kF32) return false;
    if (m < 1 || m > kDecodeMaxM || n < 1 || k < kKB || k % kKB != 0) return false;
    if (lda < k || lda % 8 != 0) return false;
    if (!dtype::is_aligned(a, 16) || !dtype::is_aligned(w, 16)) return false;
    // Element offsets of w and a stay within int.
    return n * k < (int64_t{1} << 31) && m * lda < (int64_t{1} << 31);
}

}  // namespace

std::optional<size_t> gemm_decode_workspace(const void* a, int64_t lda, const void* w,
                                            DType y_dtype, int64_t m, int64_t n, int64_t k,
                                            DType act) {
    if (!operands_ok(a, lda, w, y_dtype, m, n, k, act)) return std::nullopt;
    const Plan pl = plan(m, n, k);  // no plan: n needs more than kMaxGroups groups
    return pl.splits > 0 ? std::optional<size_t>(pl.workspace) : std::nullopt;
}

void gemm_decode(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
                 int64_t m, int64_t n, int64_t k, DType act, void* workspace,
                 size_t workspace_bytes, uint32_t* sync, cudaStream_t stream) {
    if (m == 0 || n == 0) return;
    const bool ok = operands_ok(a, lda, w, y_dtype, m, n, k, act);
    const Plan pl = ok ? plan(m, n, k) : Plan{};
    if (pl.splits == 0 || !y || !sync || ldy < n || m * ldy >= (int64_t{1} << 31))
        fail("gemm_decode: unsupported arguments (see gemm_decode_workspace)", "gemm_decode",
             __FILE__, __LINE__);
    if (workspace_bytes < pl.workspace || (pl.workspace > 0 && !workspace))
        fail("gemm_decode: workspace too small",
             ("m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k))
                 .c_str(),
             __FILE__, __LINE__);
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
    prm.kw = pl.kw;
    prm.splits = pl.splits;
    prm.steps = pl.steps;
    switch (act) {
        case DType::kBF16:
            return launch_y<__nv_bfloat16>(prm, y_dtype, pl, stream);
        case DType::kF16:
            return launch_y<__half>(prm, y_dtype, pl, stream);
        default:
            fail("gemm_decode: not f16/bf16", "act", __FILE__, __LINE__);
    }
}

}  // namespace duality::cuda
