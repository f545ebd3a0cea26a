// The gated norm done by the last block of two side-by-side launches (GatedNormTail, ops.h):
// what it computes, and why no block waits, is there. Parallelization: the last block alone, its
// threads strided over the row in vectors of 8 (two passes over y and z from L2: the sum of v²,
// then the scaled output), reduce::block_sum between them. Limits: blockDim.x a multiple of 32;
// every thread of the block must call it (it has block barriers); dim a multiple of 8, y, z and
// out 16-byte aligned.
#pragma once

#include "ops/cuda/activation.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"
#include "ops/cuda/reduce.cuh"

namespace duality::cuda {

template <typename T>
__device__ void gated_norm_tail(const GatedNormTail& t) {
    __shared__ bool last;
    __threadfence();  // this thread's stores of y or z are visible device-wide ...
    __syncthreads();  // ... for every thread of the block
    if (threadIdx.x == 0) last = atomicAdd(t.counter, 1u) + 1u == t.blocks;  // before the count
    __syncthreads();
    if (!last) return;
    __threadfence();  // every other block's stores are visible to this one's loads
    const T* y = static_cast<const T*>(t.y);
    const T* z = static_cast<const T*>(t.z);
    const int64_t step = static_cast<int64_t>(blockDim.x) * 8;
    float ss = 0.0f;
    for (int64_t c = static_cast<int64_t>(threadIdx.x) * 8; c < t.dim; c += step) {
        float yv[8], zv[8];
        dtype::load<8, dtype::Cache::kL2>(y + c, yv);
        dtype::load<8, dtype::Cache::kL2>(z + c, zv);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float v = yv[i] * silu<T>(zv[i]);
            ss += v * v;
        }
    }
    ss = reduce::block_sum(ss);
    const float s = rsqrtf(ss / static_cast<float>(t.dim) + t.eps);
    T* out = static_cast<T*>(t.out);
    for (int64_t c = static_cast<int64_t>(threadIdx.x) * 8; c < t.dim; c += step) {
        float yv[8], zv[8], o[8];
        dtype::load<8, dtype::Cache::kL2>(y + c, yv);
        dtype::load<8, dtype::Cache::kL2>(z + c, zv);
#pragma unroll
        for (int i = 0; i < 8; ++i) o[i] = yv[i] * silu<T>(zv[i]) * s * t.w[c + i];
        dtype::store<8>(out + c, o);
    }
    if (threadIdx.x == 0) *t.counter = 0u;  // for the next pair of launches
}

}  // namespace duality::cuda
