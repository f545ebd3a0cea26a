// Skinny GEMM for batch-1 decode: y {1, n} = a {1, k} · w {n, k}ᵀ, a matrix-vector product bound
// by reading w once from HBM. The kernel is written for M ≤ 8 rows, but from 2 rows on cuBLASLt
// is as fast or faster (H200, 2.7b in_proj/out_proj, `duality bench --ops --gemm-algos`: at
// m = 2 it is 16.6 + 9.5 µs against 20.9 + 7.6 here, at m = 8 17.5 + 9.5 against 39.4 + 18.5),
// so only m = 1 is routed here (kSmallM).
//
// Parallelization: one warp per output column n (a row of w). Each lane loads 16 bytes of that
// row per iteration (8 bf16/f16 or 4 f32 values) and the matching 16 bytes of each of the m rows
// of a (small, so they come from L1/L2), accumulates m partial dots in f32, and the warp reduces
// them with shuffles. Four iterations are unrolled so each lane keeps several loads in flight.
// Before pdl::wait() each block asks for the start of its 8 contiguous rows of w (its share of an
// 8 MiB budget per product, kSmallMPrefetchBytes: whole rows first, so for the 2.7b's out_proj
// about 3 of its 8 rows) with bulk L2 prefetches, so at batch 1 the weights stream in while the
// norm or the decode step in front of the product is still running.
//
// The wide variant (opt-in, DUALITY_GEMV_WIDE=1; gemm_small_m_wide_kernel): blocks of 4 warps, one
// row of w per warp as above, but each lane holds kWideVecs 16-byte vectors of its row in flight
// at once (the 2.7b's out_proj row, 10 KB, in one round trip instead of five), the first of them
// loaded BEFORE pdl::wait() (w is never written by a step, so the load cannot see a stale value:
// the same argument as the prefetch), and a staged once per block in shared memory. Written
// because Nsight Compute (H200, 2.7b, batch 1, kernels one at a time) timed the warp-row kernel at
// 2.1-2.5 TB/s: out_proj's 320 blocks of 8 warps put 19 warps of 2 KB in flight on an SM, about
// half of what HBM's latency asks for.
//
// Limits: m = 1 (kSmallM); k a multiple of 8 (bf16/f16) or 4 (f32); a, w 16-byte aligned with lda a
// multiple of the vector width; the wide variant also k · sizeof(T) <= kWideMaxABytes. Gemm::run
// checks these and falls back to cuBLASLt (or, for the wide variant, the warp-row kernel).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "core/cuda/pdl.cuh"
#include "core/cuda/prefetch.cuh"
#include "ops/cuda/gemm_small_m.h"

namespace duality::cuda {
namespace {

template <typename T>
struct Vec;  // 16 bytes of T, converted to f32
template <>
struct Vec<float> {
    static constexpr int kN = 4;
    float v[4];
    __device__ void load(const float* p) {
        const float4 q = __ldg(reinterpret_cast<const float4*>(p));
        v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    }
};
template <>
struct Vec<__nv_bfloat16> {
    static constexpr int kN = 8;
    float v[8];
    __device__ void load(const __nv_bfloat16* p) {
        const uint4 q = __ldg(reinterpret_cast<const uint4*>(p));
        const auto* h = reinterpret_cast<const __nv_bfloat162*>(&q);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 f = __bfloat1622float2(h[i]);
            v[2 * i] = f.x, v[2 * i + 1] = f.y;
        }
    }
};
template <>
struct Vec<__half> {
    static constexpr int kN = 8;
    float v[8];
    __device__ void load(const __half* p) {
        const uint4 q = __ldg(reinterpret_cast<const uint4*>(p));
        const auto* h = reinterpret_cast<const __half2*>(&q);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 f = __half22float2(h[i]);
            v[2 * i] = f.x, v[2 * i + 1] = f.y;
        }
    }
};

template <typename Y>
__device__ Y from_f32(float x);
template <>
__device__ float from_f32<float>(float x) {
    return x;
}
template <>
__device__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}
template <>
__device__ __half from_f32<__half>(float x) {
    return __float2half(x);
}

constexpr int kWarps = 8;  // per block

template <typename T, typename Y, int M>
__global__ void __launch_bounds__(kWarps * 32)
    gemm_small_m_kernel(const T* __restrict__ a, int64_t lda, const T* __restrict__ w,
                        Y* __restrict__ y, int64_t ldy, int64_t n, int64_t k,
                        int64_t prefetch_block_bytes) {
    // This block's rows of w are contiguous and never written by a step's kernels: ask for them
    // before waiting for the kernel in front (core/cuda/prefetch.cuh).
    if (threadIdx.x == 0) {
        const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kWarps;
        const int64_t rows = n - col0 < kWarps ? n - col0 : kWarps;
        const int64_t mine = rows * k * static_cast<int64_t>(sizeof(T));
        prefetch_l2_bulk(w + col0 * k, mine < prefetch_block_bytes ? mine : prefetch_block_bytes);
    }
    pdl::wait();  // before any other global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    constexpr int V = Vec<T>::kN;
    const int lane = threadIdx.x % 32;
    const int64_t col = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    if (col >= n) return;
    const T* wr = w + col * k;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = 0.0f;
    constexpr int kUnroll = 4;
    const int64_t step = 32 * V;
    int64_t i = static_cast<int64_t>(lane) * V;
    for (; i + (kUnroll - 1) * step < k; i += kUnroll * step) {
        Vec<T> wv[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) wv[u].load(wr + i + u * step);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
            for (int m = 0; m < M; ++m) {
                Vec<T> av;
                av.load(a + m * lda + i + u * step);
#pragma unroll
                for (int e = 0; e < V; ++e) acc[m] = fmaf(wv[u].v[e], av.v[e], acc[m]);
            }
        }
    }
    for (; i < k; i += step) {
        Vec<T> wv;
        wv.load(wr + i);
#pragma unroll
        for (int m = 0; m < M; ++m) {
            Vec<T> av;
            av.load(a + m * lda + i);
#pragma unroll
            for (int e = 0; e < V; ++e) acc[m] = fmaf(wv.v[e], av.v[e], acc[m]);
        }
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int off = 16; off > 0; off /= 2) acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], off);
    }
    if (lane < M) {
        float mine = acc[0];
#pragma unroll
        for (int m = 1; m < M; ++m)
            if (lane == m) mine = acc[m];
        y[lane * ldy + col] = from_f32<Y>(mine);
    }
}

constexpr int kWideWarps = 4;  // per block of the wide kernel (one row of w each)
constexpr int kWideVecs = 20;  // 16-byte vectors of w per lane in flight (a 10 KB bf16 row)
constexpr int kWideMaxABytes = 32 * 1024;  // a staged in shared memory

// The 16-byte vector `raw` of T as f32 values, dotted with the matching vector of a.
template <typename T>
__device__ __forceinline__ float dot16(const uint4& raw, const uint4& av) {
    float acc = 0.0f;
    if constexpr (std::is_same_v<T, float>) {
        const float* x = reinterpret_cast<const float*>(&raw);
        const float* y = reinterpret_cast<const float*>(&av);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc = fmaf(x[e], y[e], acc);
    } else {
        using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
        const T2* x = reinterpret_cast<const T2*>(&raw);
        const T2* y = reinterpret_cast<const T2*>(&av);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float2 fx, fy;
            if constexpr (std::is_same_v<T, __half>) {
                fx = __half22float2(x[e]);
                fy = __half22float2(y[e]);
            } else {
                fx = __bfloat1622float2(x[e]);
                fy = __bfloat1622float2(y[e]);
            }
            acc = fmaf(fx.x, fy.x, acc);
            acc = fmaf(fx.y, fy.y, acc);
        }
    }
    return acc;
}

template <typename T, typename Y, int U>
__global__ void __launch_bounds__(kWideWarps * 32, U <= kWideVecs / 2 ? 8 : 4)
    gemm_small_m_wide_kernel(const T* __restrict__ a, const T* __restrict__ w, Y* __restrict__ y,
                             int64_t n, int64_t k) {
    extern __shared__ uint4 a_s[];  // {k · sizeof(T) / 16}: a's row
    const int lane = threadIdx.x % 32;
    const int64_t col = static_cast<int64_t>(blockIdx.x) * kWideWarps + threadIdx.x / 32;
    const int64_t vecs = k * static_cast<int64_t>(sizeof(T)) / 16;  // per row of w
    const uint4* wr = reinterpret_cast<const uint4*>(w + (col < n ? col : 0) * k);
    // The first U vectors of each lane, before waiting for the kernel in front: weights are never
    // written by a step (see the header and core/cuda/pdl.cuh).
    uint4 raw[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const int64_t v = lane + int64_t{32} * u;
        if (col < n && v < vecs) raw[u] = __ldg(wr + v);
    }
    pdl::wait();  // a comes from the kernel in front
    pdl::allow_next();
    const uint4* av = reinterpret_cast<const uint4*>(a);
    for (int64_t v = threadIdx.x; v < vecs; v += kWideWarps * 32) a_s[v] = __ldg(av + v);
    __syncthreads();
    if (col >= n) return;  // after the block's last barrier
    float acc = 0.0f;
    for (int64_t base = 0; base < vecs; base += int64_t{32} * U) {
        if (base > 0) {
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int64_t v = base + lane + int64_t{32} * u;
                if (v < vecs) raw[u] = __ldg(wr + v);
            }
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t v = base + lane + int64_t{32} * u;
            if (v < vecs) acc += dot16<T>(raw[u], a_s[v]);
        }
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) y[col] = from_f32<Y>(acc);
}

template <typename T, typename Y>
void launch_wide(const void* a, const void* w, void* y, int64_t n, int64_t k, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>((n + kWideWarps - 1) / kWideWarps));
    const size_t smem = static_cast<size_t>(k) * sizeof(T);
    const int64_t per_lane = (static_cast<int64_t>(smem) / 16 + 31) / 32;
    auto* A = static_cast<const T*>(a);
    auto* W = static_cast<const T*>(w);
    auto* Yp = static_cast<Y*>(y);
    if (per_lane <= kWideVecs / 2)
        pdl::launch(gemm_small_m_wide_kernel<T, Y, kWideVecs / 2>, grid, kWideWarps * 32, smem,
                    stream, A, W, Yp, n, k);
    else
        pdl::launch(gemm_small_m_wide_kernel<T, Y, kWideVecs>, grid, kWideWarps * 32, smem, stream,
                    A, W, Yp, n, k);
    DUALITY_CUDA_LAUNCH_CHECK();
}

template <typename T, typename Y>
void launch(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, int64_t m, int64_t n,
            int64_t k, int64_t prefetch_bytes, bool wide, cudaStream_t stream) {
    if (wide && m == 1 && k * static_cast<int64_t>(sizeof(T)) <= kWideMaxABytes) {
        if (n > 0) launch_wide<T, Y>(a, w, y, n, k, stream);
        return;
    }
    const dim3 grid(static_cast<unsigned>((n + kWarps - 1) / kWarps)), block(kWarps * 32);
    auto* A = static_cast<const T*>(a);
    auto* W = static_cast<const T*>(w);
    auto* Yp = static_cast<Y*>(y);
    if (m != 1) fail("gemm_small_m: m != 1", "m", __FILE__, __LINE__);
    if (n == 0) return;
    // The budget spread over the blocks, in whole 16-byte pieces. Nothing without PDL: the
    // kernel in front has finished before this one starts, so there is nothing to overlap.
    const int64_t per_block = !pdl::enabled()      ? 0
                              : prefetch_bytes < 0 ? kWarps * k * int64_t{sizeof(T)}
                                                   : prefetch_bytes / grid.x / 16 * 16;
    pdl::launch(gemm_small_m_kernel<T, Y, 1>, grid, block, 0, stream, A, lda, W, Yp, ldy, n, k,
                per_block);
    DUALITY_CUDA_LAUNCH_CHECK();
}

template <typename T>
void dispatch_y(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
                int64_t m, int64_t n, int64_t k, int64_t prefetch_bytes, bool wide,
                cudaStream_t stream) {
    if (y_dtype == DType::kF32) {
        launch<T, float>(a, lda, w, y, ldy, m, n, k, prefetch_bytes, wide, stream);
    } else {
        launch<T, T>(a, lda, w, y, ldy, m, n, k, prefetch_bytes, wide, stream);
    }
}

}  // namespace

bool gemm_small_m_supports(const void* a, int64_t lda, const void* w, DType y_dtype, int64_t m,
                           int64_t k, DType act) {
    const int64_t vec = act == DType::kF32 ? 4 : 8;
    const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    return m >= 1 && m <= kSmallM && k % vec == 0 && lda % vec == 0 && aligned(a) && aligned(w) &&
           (y_dtype == act || y_dtype == DType::kF32);
}

void gemm_small_m(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
                  int64_t m, int64_t n, int64_t k, DType act, int64_t prefetch_bytes, bool wide,
                  cudaStream_t stream) {
    switch (act) {
        case DType::kF32:
            launch<float, float>(a, lda, w, y, ldy, m, n, k, prefetch_bytes, wide, stream);
            return;
        case DType::kBF16:
            dispatch_y<__nv_bfloat16>(a, lda, w, y, ldy, y_dtype, m, n, k, prefetch_bytes, wide,
                                      stream);
            return;
        case DType::kF16:
            dispatch_y<__half>(a, lda, w, y, ldy, y_dtype, m, n, k, prefetch_bytes, wide, stream);
            return;
        default:
            fail("gemm_small_m: not a float dtype", "act", __FILE__, __LINE__);
    }
}

}  // namespace duality::cuda
