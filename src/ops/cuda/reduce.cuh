// Warp and block sums for the CUDA kernels (f32).
#pragma once

#include <cuda_runtime.h>

namespace duality::cuda::reduce {

// The sum of v over the 32 lanes of a full warp, in every lane.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The sum of v over the block (blockDim.x a multiple of 32, at most 1024), in every thread.
// Every thread of the block must call it; it may be called again afterwards.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float part[32];
    v = warp_sum(v);
    const int warp = threadIdx.x / 32, n_warp = blockDim.x / 32;
    if (threadIdx.x % 32 == 0) part[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < n_warp; ++i) total += part[i];
    __syncthreads();  // part may be overwritten by the next call
    return total;
}

}  // namespace duality::cuda::reduce
