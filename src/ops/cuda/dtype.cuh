// Device-side conversions between f32 and the activation dtypes, and the one switch that turns
// a runtime DType into a kernel's element type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/cuda/check.h"
#include "duality/types.h"

namespace duality::cuda {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// softplus with the threshold-20 form of the references (spec 12.7).
__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// Block-wide sum over blockDim.x threads (a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // partial may still be read from a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    const int n_warps = blockDim.x / 32;
    v = lane < n_warps ? partial[lane] : 0.0f;
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

}  // namespace duality::cuda

// Runs `...` with `T` bound to the element type of `dt` (f32, f16, bf16).
#define DUALITY_DISPATCH_FLOAT(dt, T, ...)                                                  \
    switch (dt) {                                                                           \
        case ::duality::DType::kF32: {                                                      \
            using T = float;                                                                \
            __VA_ARGS__;                                                                    \
            break;                                                                          \
        }                                                                                   \
        case ::duality::DType::kF16: {                                                      \
            using T = __half;                                                               \
            __VA_ARGS__;                                                                    \
            break;                                                                          \
        }                                                                                   \
        case ::duality::DType::kBF16: {                                                     \
            using T = __nv_bfloat16;                                                        \
            __VA_ARGS__;                                                                    \
            break;                                                                          \
        }                                                                                   \
        default: ::duality::cuda::fail("not a float dtype", #dt, __FILE__, __LINE__);        \
    }
