// Row-wise argmax over the first `vocab` columns of f32 logits (greedy decoding; CPU twin:
// sampling::argmax). Ties go to the lowest id, NaN is never chosen over a number.
// Parallelization: one block of 512 threads per row; each thread scans a strided slice (float4
// loads, four in flight, where rows are 16-byte aligned), then (value, id) pairs are reduced by
// warp shuffles and one pair per warp in shared memory. Each id goes to ids and, where given, to
// ids_also as well (a device-fed decode loop: the next step's token input and the host's copy).
// argmax_from_key: the same id for one row whose LM head product already folded its argmax into a
// 64-bit key (argmax_key.cuh; gemv_fused's GemvFused::argmax_key), read and reset by one thread,
// so that a greedy batch-1 step has no one-block scan of the logits after its head.
// Limits: vocab < 2^31.
#include <cfloat>
#include <cstdint>

#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "ops/cuda/argmax_key.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}

// Folds (v, i) into the running best (bv, bi).
__device__ __forceinline__ void take(float v, int i, float& bv, int& bi) {
    if (better(v, i, bv, bi)) bv = v, bi = i;
}

// Folds the four columns i..i+3 held in a.
__device__ __forceinline__ void take4(const float4& a, int i, float& bv, int& bi) {
    take(a.x, i, bv, bi);
    take(a.y, i + 1, bv, bi);
    take(a.z, i + 2, bv, bi);
    take(a.w, i + 3, bv, bi);
}

// kVec4: the row is read as float4 (16-byte aligned rows), four of them in flight per thread.
template <bool kVec4>
__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const float* logits, int64_t ld, int64_t vocab, int32_t* ids, int32_t* ids_also) {
    pdl::wait();  // before any global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    const float* row = logits + static_cast<int64_t>(blockIdx.x) * ld;
    const int t = static_cast<int>(threadIdx.x);
    float bv = -FLT_MAX;
    int bi = 0x7fffffff;
    int64_t tail = 0;  // the first column the scalar loop below covers
    if constexpr (kVec4) {
        const auto* row4 = reinterpret_cast<const float4*>(row);
        const int64_t n4 = vocab / 4;
        int64_t q = t;
        for (; q + 3 * kThreads < n4; q += 4 * kThreads) {
            float4 a[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) a[u] = __ldg(row4 + q + u * kThreads);
#pragma unroll
            for (int u = 0; u < 4; ++u)
                take4(a[u], static_cast<int>(4 * (q + u * kThreads)), bv, bi);
        }
        for (; q < n4; q += kThreads) take4(__ldg(row4 + q), static_cast<int>(4 * q), bv, bi);
        tail = 4 * n4;
    }
    for (int64_t i = tail + t; i < vocab; i += kThreads) take(row[i], static_cast<int>(i), bv, bi);
        // Warp, then block: (value, id) pairs by shuffles, one pair per warp through shared memory.
#pragma unroll
    for (int off = 16; off > 0; off /= 2)
        take(__shfl_xor_sync(0xffffffffu, bv, off), __shfl_xor_sync(0xffffffffu, bi, off), bv, bi);
    constexpr int kWarps = kThreads / 32;
    __shared__ float sv[kWarps];
    __shared__ int si[kWarps];
    if (t % 32 == 0) sv[t / 32] = bv, si[t / 32] = bi;
    __syncthreads();
    if (t < 32) {
        bv = t < kWarps ? sv[t] : -FLT_MAX;
        bi = t < kWarps ? si[t] : 0x7fffffff;
#pragma unroll
        for (int off = 16; off > 0; off /= 2)
            take(__shfl_xor_sync(0xffffffffu, bv, off), __shfl_xor_sync(0xffffffffu, bi, off), bv,
                 bi);
        if (t == 0) {
            const int32_t id = bi == 0x7fffffff ? 0 : bi;
            ids[blockIdx.x] = id;
            if (ids_also) ids_also[blockIdx.x] = id;
        }
    }
}

// argmax_from_key: one thread's read, reset and stores.
__global__ void argmax_from_key_kernel(unsigned long long* key, int32_t* ids, int32_t* ids_also) {
    pdl::wait();  // before any global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    if (threadIdx.x != 0) return;
    const unsigned long long k = *key;
    *key = 0;
    const int32_t id = argmax_key_id(k);
    ids[0] = id;
    if (ids_also) ids_also[0] = id;
}

}  // namespace

void argmax_from_key(unsigned long long* key, int32_t* ids, int32_t* ids_also,
                     cudaStream_t stream) {
    pdl::launch(argmax_from_key_kernel, 1, 32, 0, stream, key, ids, ids_also);
    DUALITY_CUDA_LAUNCH_CHECK();
}

void argmax_rows(const float* logits, int64_t ld, int64_t rows, int64_t vocab, int32_t* ids,
                 cudaStream_t stream, int32_t* ids_also) {
    if (rows == 0) return;
    const bool vec4 = ld % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
    if (vec4)
        pdl::launch(argmax_kernel<true>, static_cast<unsigned>(rows), kThreads, 0, stream, logits,
                    ld, vocab, ids, ids_also);
    else
        pdl::launch(argmax_kernel<false>, static_cast<unsigned>(rows), kThreads, 0, stream, logits,
                    ld, vocab, ids, ids_also);
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda
