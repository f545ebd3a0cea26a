// Row-wise argmax over the first `vocab` columns of f32 logits (greedy decoding; CPU twin:
// sampling::argmax). Ties go to the lowest id, NaN is never chosen over a number.
// Parallelization: one block of 512 threads per row; each thread scans a strided slice, then a
// shared-memory tree reduction of (value, id) pairs. Limits: none.
#include <cfloat>

#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}

__global__ void argmax_kernel(const float* logits, int64_t ld, int64_t vocab, int32_t* ids) {
    pdl::wait();  // before any global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    const float* row = logits + static_cast<int64_t>(blockIdx.x) * ld;
    float bv = -FLT_MAX;
    int bi = 0x7fffffff;
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
        const float v = row[i];
        if (better(v, static_cast<int>(i), bv, bi)) bv = v, bi = static_cast<int>(i);
    }
    __shared__ float sv[kThreads];
    __shared__ int si[kThreads];
    sv[threadIdx.x] = bv;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            const float v = sv[threadIdx.x + stride];
            const int i = si[threadIdx.x + stride];
            if (better(v, i, sv[threadIdx.x], si[threadIdx.x]))
                sv[threadIdx.x] = v, si[threadIdx.x] = i;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) ids[blockIdx.x] = si[0] == 0x7fffffff ? 0 : si[0];
}

}  // namespace

void argmax_rows(const float* logits, int64_t ld, int64_t rows, int64_t vocab, int32_t* ids,
                 cudaStream_t stream) {
    if (rows == 0) return;
    pdl::launch(argmax_kernel, static_cast<unsigned>(rows), kThreads, 0, stream, logits, ld, vocab,
                ids);
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda
