// Skinny GEMM for batch-1 decode: y {1, n} = a {1, k} · w {n, k}ᵀ, a matrix-vector product bound
// by reading w once from HBM. The kernel is written for M ≤ 8 rows, but from 2 rows on cuBLASLt
// is as fast or faster (H200, 2.7b in_proj/out_proj, `duality bench --ops --gemm-algos`: at
// m = 2 it is 16.6 + 9.5 µs against 20.9 + 7.6 here, at m = 8 17.5 + 9.5 against 39.4 + 18.5),
// so only m = 1 is routed here (kSmallM).
//
// Parallelization: one warp per output column n (a row of w). Each lane loads 16 bytes of that
// row per step (8 bf16/f16 or 4 f32 values) and the matching 16 bytes of each of the m rows of a
// (small, so they come from L1/L2), accumulates m partial dots in f32, and the warp reduces them
// with shuffles. A lane's steps go in groups of kGroup = 4 whose loads are all unconditional, the
// last group's included, and converted only after the whole group is issued, so a group's loads are
// in flight together. Before pdl::wait() each block asks for the start of its 8 contiguous rows of
// w (its share of an 8 MiB budget per product, kSmallMPrefetchBytes: whole rows first, so for
// the 2.7b's out_proj about 3 of its 8 rows) with bulk L2 prefetches, so at batch 1 the weights
// stream in while the norm or the decode step in front of the product is still running; and each
// lane loads its first group of its row before the wait (early reads, core/cuda/pdl.cuh). Groups of
// 4 against the loop this replaced, and groups of 8 (measured slower on whole 2.7b steps and
// removed): docs/architecture.md, "The forward pass (CUDA)".
//
// The same kernel, instantiated with an epilogue (kEpi) and an input scale (kScale), is gemv_fused
// (gemm_small_m.h): the batch-1 product with its neighbouring per-row ops folded in. The input
// scale's partial sums (and the conv's taps and window) are copied to shared memory by cp.async
// before the loop and read after it, so that the loop keeps the plain kernel's 48 registers (five
// blocks per SM; held in registers they took 60-70); warps past the last column compute it again
// and store nothing, since the input scale and the residual epilogue end in a block barrier. The
// store form of the LM head may fold the logits' argmax into a 64-bit key, one atomicMax a block
// (GemvFused::argmax_key, argmax_key.cuh). The plain instantiations' kernel bodies compile to the
// same PTX as before the fused forms existed (their parameter list gained the unused GemvFused).
//
// The bulk form (GemvFused::bulk, Hopper): lane 0 of each warp fetches the warp's whole row of w
// into shared memory with one bulk copy (cp.async.bulk on an mbarrier) at the start, before
// pdl::wait() with early reads, and the loop reads w from there: a block's 8 rows are in flight
// at once without registers (32-40 instead of 48) and without the L2 prefetch. 8 rows of k a block,
// so rows of at most 26 KiB (kBulkRowBytesMax); faster only for the smallest models (the model's
// gemv_bulk_).
//
// Limits: m = 1 (kSmallM); k a multiple of 8 (bf16/f16) or 4 (f32); a, w 16-byte aligned with lda a
// multiple of the vector width. Gemm::run checks these and falls back to cuBLASLt otherwise.
// gemv_fused: f16/bf16, a width-4 conv, kSmemParts partial sums in shared memory (more are read
// from global memory after the loop).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/cuda/pdl.cuh"
#include "core/cuda/prefetch.cuh"
#include "core/cuda/smem_limit.h"
#include "core/cuda/sync.cuh"
#include "ops/cuda/activation.cuh"
#include "ops/cuda/argmax_key.cuh"
#include "ops/cuda/gemm_small_m.h"
#include "ops/cuda/gemv_common.cuh"

namespace duality::cuda {
namespace {

using gemv::dot_add;
using gemv::from_f32;
using gemv::ldg16;
using gemv::Vec;

constexpr int kWarps = 8;  // per block
constexpr int kGroup = 4;  // steps of a row whose loads a lane issues together

// The bulk form's longest row: kWarps of them and the static shared memory within the 227 KiB a
// block may have.
constexpr int64_t kBulkRowBytesMax = int64_t{26} << 10;

// A kScale input's partial sums copied to the block's shared memory before the loop (cp.async,
// so no register holds them during it; the rest are read after it): the residual epilogue's
// parts of d_model ≤ 5120 columns (the largest model now, Codestral's 4096, has 512).
constexpr int kSmemParts = 640;

// kEpi: GemvFused::Epilogue (kStore with kScale false: the plain product of gemm_small_m, M rows);
// the fused forms (gemv_fused) have M = 1 and take f.
// kBulk (Hopper): each warp's row of w comes into dynamic shared memory (kWarps rows of k) as one
// bulk copy issued at the start, instead of groups of loads into registers.
template <typename T, typename Y, int M, int kEpi = GemvFused::kStore, bool kScale = false,
          bool kBulk = false>
__global__ void __launch_bounds__(kWarps * 32)
    gemm_small_m_kernel(const T* __restrict__ a, int64_t lda, const T* __restrict__ w,
                        Y* __restrict__ y, int64_t ldy, int64_t n, int64_t k,
                        int64_t prefetch_block_bytes, bool early, GemvFused f) {
    constexpr bool kResidual = kEpi == GemvFused::kResidual;
    // This block's rows of w are contiguous and never written by a step's kernels: ask for them
    // before waiting for the kernel in front (core/cuda/prefetch.cuh).
    if (!kBulk && threadIdx.x == 0) {
        const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kWarps;
        const int64_t rows = n - col0 < kWarps ? n - col0 : kWarps;
        const int64_t mine = rows * k * static_cast<int64_t>(sizeof(T));
        prefetch_l2_bulk(w + col0 * k, mine < prefetch_block_bytes ? mine : prefetch_block_bytes);
    }
    constexpr int V = Vec<T>::kN;
    const int lane = threadIdx.x % 32;
    const int64_t col = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    // The block barriers of the residual epilogue and the input scale need every warp: a warp past
    // the end computes the last column again and stores nothing.
    const int64_t row = (kResidual || kScale) && col >= n ? n - 1 : col;
    const T* wr = w + row * k;
    const int64_t step = 32 * V;
    int64_t i = static_cast<int64_t>(lane) * V;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = 0.0f;
    // Groups of kGroup vectors whose loads are all unconditional, so that the compiler issues a
    // group's loads together: a vector past the row's end reads the row's (or a's) first one
    // instead and its product is skipped. (A load under `if`, converted inside the branch, waits
    // for its data before the next load is issued: one round trip per vector, which made 2.7b
    // batch-1 steps 2.26 -> 2.77 ms in 9d59537.)
    uint4 wq[kBulk ? 1 : kGroup];
    extern __shared__ __align__(16) unsigned char sm_rows[];  // kBulk: {kWarps, k} T
    __shared__ uint64_t sm_bar[kBulk ? kWarps : 1];
    const T* srow = reinterpret_cast<const T*>(sm_rows) + (threadIdx.x / 32) * k;
    const auto load_w = [&] {
        if constexpr (kBulk) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            if (lane == 0) {
                uint64_t* bar = &sm_bar[threadIdx.x / 32];
                sync::mbar_init(bar);
                sync::mbar_init_fence();
                sync::bulk_load(const_cast<T*>(srow), wr, static_cast<uint32_t>(k * sizeof(T)),
                                bar);
            }
#else
            (void)sm_bar;
            __trap();  // launched on Hopper only (gemv_fused_bulk_supported)
#endif
        } else {
#pragma unroll
            for (int u = 0; u < kGroup; ++u) {
                const int64_t e = i + u * step;
                wq[u] = ldg16(wr + (e < k ? e : 0));
            }
        }
    };
    // The first group before waiting for the kernel in front (an early read: weights).
    // The fused forms' small inputs go to shared memory by cp.async, so that they arrive during
    // the loop without holding registers in it (at 70 registers the conv form fitted 3 blocks
    // per SM instead of 5, and the 780m's [xBC | dt] product took two waves).
    const int warp = threadIdx.x / 32;
    __shared__ float sm_parts[kScale ? kSmemParts : 1];
    __shared__ float sm_conv[kEpi == GemvFused::kConv ? kWarps : 1][8];  // taps, bias, window
    const Conv1dArgs& cf = f.conv;
    const bool conv =
        kEpi == GemvFused::kConv && col >= f.conv_begin && col < f.conv_begin + cf.channels;
    const int64_t c = col - f.conv_begin;
    int64_t slot = 0;
    // The conv's taps and its slot's window: early reads (the window is written only by this
    // kernel, the slot by the host; core/cuda/pdl.cuh).
    const auto load_conv = [&] {
        if (!conv || lane != 0) return;
        slot = *cf.batch.slots;
        const float* state = cf.state + slot * cf.state_slot_stride + c;
        float* dst = sm_conv[kEpi == GemvFused::kConv ? warp : 0];
#pragma unroll
        for (int j = 0; j < 4; ++j) sync::cp_async4(dst + j, cf.weight + c * 4 + j);
        if (cf.bias)
            sync::cp_async4(dst + 4, cf.bias + c);
        else
            dst[4] = 0.0f;
#pragma unroll
        for (int j = 0; j < 3; ++j) sync::cp_async4(dst + 5 + j, state + j * cf.channels);
    };
    if (early && row < n) {
        load_w();
        if constexpr (kEpi == GemvFused::kConv) load_conv();
    }
    pdl::wait();  // before any other global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    if (row >= n) return;
    if (!early) {
        load_w();
        if constexpr (kEpi == GemvFused::kConv) load_conv();
    }
    if constexpr (kScale) {
        const int64_t n_smem = f.in_scale.n_part < kSmemParts ? f.in_scale.n_part : kSmemParts;
        for (int64_t q = threadIdx.x; q < n_smem; q += kWarps * 32)
            sync::cp_async4(&sm_parts[q], f.in_scale.ssq + q);
    }
    float res = 0.0f;
    if constexpr (kResidual) {
        if (lane == 0) res = f.residual[row];
    }
    if constexpr (kBulk) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        __syncwarp();  // lane 0's barrier init
        sync::mbar_wait(&sm_bar[threadIdx.x / 32], 0);
#endif
    }
    for (;;) {
        uint4 aq[kGroup][M];
#pragma unroll
        for (int u = 0; u < kGroup; ++u) {
            const int64_t e = i + u * step;
#pragma unroll
            for (int m = 0; m < M; ++m) aq[u][m] = ldg16(a + m * lda + (e < k ? e : 0));
        }
#pragma unroll
        for (int u = 0; u < kGroup; ++u) {
            if (i + u * step < k) {
                Vec<T> wv;
                if constexpr (kBulk)
                    wv.set(*reinterpret_cast<const uint4*>(srow + i + u * step));
                else
                    wv.set(wq[u]);
#pragma unroll
                for (int m = 0; m < M; ++m) {
                    Vec<T> av;
                    av.set(aq[u][m]);
                    dot_add(acc[m], wv, av);
                }
            }
        }
        i += kGroup * step;
        if (i >= k) break;
        if constexpr (!kBulk) load_w();
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int off = 16; off > 0; off /= 2) acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], off);
    }
    if constexpr (kScale || kEpi != GemvFused::kStore) {
        float v = acc[0];
        if constexpr (kScale || kEpi == GemvFused::kConv) {
            sync::cp_async_wait_all();
            if constexpr (kScale)
                __syncthreads();  // every thread's copies of the parts
            else
                __syncwarp();  // lane 0's of the conv's inputs
        }
        if constexpr (kScale) {
            float sum = 0.0f;
            for (int64_t q = lane; q < f.in_scale.n_part; q += 32)
                sum += q < kSmemParts ? sm_parts[q] : __ldg(f.in_scale.ssq + q);
#pragma unroll
            for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
            v *= rsqrtf(sum / f.in_scale.count + f.in_scale.eps);
        }
        if constexpr (kResidual) {
            // Each warp's square of its column, then thread 0 sums them in warp order: the
            // block's part of out_parts.
            __shared__ float ssq[kWarps];
            const float r = res + v;
            if (lane == 0) {
                ssq[warp] = col < n ? r * r : 0.0f;
                if (col < n) {
                    f.residual[col] = r;
                    static_cast<T*>(f.u)[col] = from_f32<T>(r * __ldg(f.w_next + col));
                }
            }
            __syncthreads();
            if (threadIdx.x == 0) {
                float sum = 0.0f;
#pragma unroll
                for (int i = 0; i < kWarps; ++i) sum += ssq[i];
                f.out_parts[blockIdx.x] = sum;
            }
        } else if (lane == 0 && col < n) {
            if (conv) {
                // As conv1d would see it: x rounded to act, the window in f32.
                gemv::conv_epilogue<T>(sm_conv[kEpi == GemvFused::kConv ? warp : 0], v, cf, slot,
                                       c);
            } else if (f.y_f32) {
                static_cast<float*>(f.y)[col] = v;
            } else {
                static_cast<T*>(f.y)[col] = from_f32<T>(v);
            }
        }
        if constexpr (kEpi == GemvFused::kStore && kScale) {
            // The block's largest argmax key into f.argmax_key (warps past the end: key 0).
            if (f.argmax_key) {
                __shared__ unsigned long long keys[kWarps];
                if (lane == 0) keys[warp] = col < f.argmax_vocab ? argmax_key_of(v, col) : 0;
                __syncthreads();
                if (threadIdx.x == 0) {
                    unsigned long long best = 0;
#pragma unroll
                    for (int i = 0; i < kWarps; ++i) best = keys[i] > best ? keys[i] : best;
                    if (best) atomicMax(f.argmax_key, best);
                }
            }
        }
        return;
    }
    if (lane < M) {
        float mine = acc[0];
#pragma unroll
        for (int m = 1; m < M; ++m)
            if (lane == m) mine = acc[m];
        y[lane * ldy + col] = from_f32<Y>(mine);
    }
}

// The budget spread over a product's blocks, in whole 16-byte pieces. Nothing without PDL: the
// kernel in front has finished before this one starts, so there is nothing to overlap.
int64_t prefetch_per_block(int64_t prefetch_bytes, unsigned blocks, int64_t k, size_t el) {
    return !pdl::enabled()      ? 0
           : prefetch_bytes < 0 ? kWarps * k * static_cast<int64_t>(el)
                                : prefetch_bytes / blocks / 16 * 16;
}

// Launches kernel (a gemm_small_m_kernel instantiation) with `smem` bytes of dynamic shared memory.
template <auto kKernel, typename... Args>
void launch_smem(dim3 grid, size_t smem, cudaStream_t stream, Args... args) {
    // (A block of exactly 48 KiB of rows, the bulk form's k = 3072 at 16 bits, needs the
    // attribute too: the kernel's static shared memory counts against the default.)
    ensure_dynamic_smem(reinterpret_cast<const void*>(kKernel), smem);
    pdl::launch(kKernel, grid, dim3(kWarps * 32), smem, stream, args...);
}

template <typename T, typename Y>
void launch(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, int64_t m, int64_t n,
            int64_t k, int64_t prefetch_bytes, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>((n + kWarps - 1) / kWarps)), block(kWarps * 32);
    auto* A = static_cast<const T*>(a);
    auto* W = static_cast<const T*>(w);
    auto* Yp = static_cast<Y*>(y);
    if (m != 1) fail("gemm_small_m: m != 1", "m", __FILE__, __LINE__);
    if (n == 0) return;
    if (k == 0) {  // y = 0 (the kernel reads a row's first vector in place of those past its end)
        DUALITY_CUDA_CHECK(cudaMemsetAsync(y, 0, static_cast<size_t>(n) * sizeof(Y), stream));
        return;
    }
    const int64_t per_block = prefetch_per_block(prefetch_bytes, grid.x, k, sizeof(T));
    pdl::launch(gemm_small_m_kernel<T, Y, 1>, grid, block, 0, stream, A, lda, W, Yp, ldy, n, k,
                per_block, pdl::early_reads(), GemvFused{});
    DUALITY_CUDA_LAUNCH_CHECK();
}

template <typename T>
void dispatch_y(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
                int64_t m, int64_t n, int64_t k, int64_t prefetch_bytes, cudaStream_t stream) {
    if (y_dtype == DType::kF32) {
        launch<T, float>(a, lda, w, y, ldy, m, n, k, prefetch_bytes, stream);
    } else {
        launch<T, T>(a, lda, w, y, ldy, m, n, k, prefetch_bytes, stream);
    }
}

template <typename T, int kEpi, bool kScale>
void launch_fused(const void* a, const void* w, int64_t n, int64_t k, int64_t per_block, dim3 grid,
                  const GemvFused& f, cudaStream_t stream) {
    if (f.bulk)
        launch_smem<gemm_small_m_kernel<T, T, 1, kEpi, kScale, true>>(
            grid, kWarps * k * sizeof(T), stream, static_cast<const T*>(a), k,
            static_cast<const T*>(w), static_cast<T*>(nullptr), int64_t{0}, n, k, per_block,
            pdl::early_reads(), f);
    else
        pdl::launch(gemm_small_m_kernel<T, T, 1, kEpi, kScale>, grid, dim3(kWarps * 32), 0, stream,
                    static_cast<const T*>(a), k, static_cast<const T*>(w), static_cast<T*>(nullptr),
                    int64_t{0}, n, k, per_block, pdl::early_reads(), f);
}

template <typename T>
void dispatch_fused(const void* a, const void* w, int64_t n, int64_t k, int64_t per_block,
                    dim3 grid, const GemvFused& f, cudaStream_t stream) {
    const bool scaled = f.in_scale.ssq != nullptr;
    switch (f.epilogue) {
        case GemvFused::kStore:  // always scaled (gemv_fused checks)
            return launch_fused<T, GemvFused::kStore, true>(a, w, n, k, per_block, grid, f, stream);
        case GemvFused::kConv:
            return scaled ? launch_fused<T, GemvFused::kConv, true>(a, w, n, k, per_block, grid, f,
                                                                    stream)
                          : launch_fused<T, GemvFused::kConv, false>(a, w, n, k, per_block, grid, f,
                                                                     stream);
        case GemvFused::kResidual:
            return scaled ? launch_fused<T, GemvFused::kResidual, true>(a, w, n, k, per_block, grid,
                                                                        f, stream)
                          : launch_fused<T, GemvFused::kResidual, false>(a, w, n, k, per_block,
                                                                         grid, f, stream);
    }
}

}  // namespace

bool gemv_fused_bulk_supported(int64_t k, DType act) {
    // Bulk copies and mbarriers where the kernels were built for Hopper (as PDL).
    return pdl::enabled() && k * static_cast<int64_t>(dtype_size(act)) <= kBulkRowBytesMax;
}

bool gemv_fused_supports(const void* a, const void* w, int64_t k, DType act) {
    return (act == DType::kBF16 || act == DType::kF16) &&
           gemm_small_m_supports(a, k, w, act, 1, k, act);
}

void gemv_fused(const void* a, const void* w, int64_t n, int64_t k, DType act,
                int64_t prefetch_bytes, const GemvFused& f, cudaStream_t stream) {
    if (!gemv_fused_supports(a, w, k, act) || k == 0)
        fail("gemv_fused: unsupported operands", "a", __FILE__, __LINE__);
    if (f.bulk && !gemv_fused_bulk_supported(k, act))
        fail("gemv_fused: bulk rows unsupported here", "f.bulk", __FILE__, __LINE__);
    if (f.epilogue == GemvFused::kStore && f.in_scale.ssq == nullptr)
        fail("gemv_fused: kStore without an input scale", "f", __FILE__, __LINE__);
    if (f.argmax_key &&
        (f.epilogue != GemvFused::kStore || !f.y_f32 || f.argmax_vocab < 0 || f.argmax_vocab > n))
        fail("gemv_fused: argmax_key needs kStore with f32 logits and 0 <= argmax_vocab <= n",
             "f.argmax_key", __FILE__, __LINE__);
    if (n == 0) return;
    const dim3 grid(static_cast<unsigned>((n + kWarps - 1) / kWarps));
    const int64_t per_block = prefetch_per_block(prefetch_bytes, grid.x, k, dtype_size(act));
    if (act == DType::kBF16)
        dispatch_fused<__nv_bfloat16>(a, w, n, k, per_block, grid, f, stream);
    else
        dispatch_fused<__half>(a, w, n, k, per_block, grid, f, stream);
    DUALITY_CUDA_LAUNCH_CHECK();
}

int64_t gemv_fused_wave_columns(DType act) {
    int device = 0, sms = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&device));
    DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    const void* kernel =
        act == DType::kBF16
            ? reinterpret_cast<const void*>(
                  gemm_small_m_kernel<__nv_bfloat16, __nv_bfloat16, 1, GemvFused::kConv, true>)
            : reinterpret_cast<const void*>(
                  gemm_small_m_kernel<__half, __half, 1, GemvFused::kConv, true>);
    const int blocks = resident_blocks(kernel, kWarps * 32, 0);
    return static_cast<int64_t>(blocks) * sms * kWarps;
}

bool gemm_small_m_supports(const void* a, int64_t lda, const void* w, DType y_dtype, int64_t m,
                           int64_t k, DType act) {
    const int64_t vec = act == DType::kF32 ? 4 : 8;
    const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    return m >= 1 && m <= kSmallM && k % vec == 0 && lda % vec == 0 && aligned(a) && aligned(w) &&
           (y_dtype == act || y_dtype == DType::kF32);
}

void gemm_small_m(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
                  int64_t m, int64_t n, int64_t k, DType act, int64_t prefetch_bytes,
                  cudaStream_t stream) {
    switch (act) {
        case DType::kF32:
            launch<float, float>(a, lda, w, y, ldy, m, n, k, prefetch_bytes, stream);
            return;
        case DType::kBF16:
            dispatch_y<__nv_bfloat16>(a, lda, w, y, ldy, y_dtype, m, n, k, prefetch_bytes, stream);
            return;
        case DType::kF16:
            dispatch_y<__half>(a, lda, w, y, ldy, y_dtype, m, n, k, prefetch_bytes, stream);
            return;
        default:
            fail("gemm_small_m: not a float dtype", "act", __FILE__, __LINE__);
    }
}

}  // namespace duality::cuda
