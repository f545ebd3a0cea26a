// Device pieces of the batch-1 GEMV (gemm_small_m.cu: gemv_fused, a warp per column): 16-byte
// loads and their conversion to f32, the per-lane dot (lane l takes the 8-element vectors l,
// l + 32, ..., then a shuffle tree), the rounding to the output dtype, and the kConv epilogue (one
// raw xBC channel through the width-4 conv; GemvFused in gemm_small_m.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "ops/cuda/activation.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda::gemv {

// 16 bytes at p, through the read-only path.
__device__ __forceinline__ uint4 ldg16(const void* p) {
    return __ldg(reinterpret_cast<const uint4*>(p));
}

template <typename T>
struct Vec;  // 16 bytes of T (raw bits already loaded), converted to f32
template <>
struct Vec<float> {
    static constexpr int kN = 4;
    float v[4];
    __device__ void set(uint4 q) {
        v[0] = __uint_as_float(q.x), v[1] = __uint_as_float(q.y);
        v[2] = __uint_as_float(q.z), v[3] = __uint_as_float(q.w);
    }
};
template <>
struct Vec<__nv_bfloat16> {
    static constexpr int kN = 8;
    float v[8];
    __device__ void set(uint4 q) {
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
    __device__ void set(uint4 q) {
        const auto* h = reinterpret_cast<const __half2*>(&q);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 f = __half22float2(h[i]);
            v[2 * i] = f.x, v[2 * i + 1] = f.y;
        }
    }
};

// acc += w · a over one vector's elements.
template <typename T>
__device__ __forceinline__ void dot_add(float& acc, const Vec<T>& w, const Vec<T>& a) {
#pragma unroll
    for (int e = 0; e < Vec<T>::kN; ++e) acc = fmaf(w.v[e], a.v[e], acc);
}

using dtype::from_f32;  // rounding to the output dtype (dtype.cuh)

// The kConv epilogue of channel c: v is the product's value for that raw xBC channel, cv the
// channel's taps [0, 4), bias [4] and window [5, 8) (f32, as conv1d reads them). As conv1d would
// see it: x = act(v) joins the window; out[c] = act(silu(bias + taps · window)); the slot's
// state shifts by one row.
template <typename T>
__device__ __forceinline__ void conv_epilogue(const float* cv, float v, const Conv1dArgs& cf,
                                              int64_t slot, int64_t c) {
    const float x = static_cast<float>(from_f32<T>(v));
    float o = cv[4];
#pragma unroll
    for (int j = 0; j < 3; ++j) o = fmaf(cv[j], cv[5 + j], o);
    o = fmaf(cv[3], x, o);
    static_cast<T*>(cf.out)[c] = from_f32<T>(silu<T>(o));
    float* state = cf.state + slot * cf.state_slot_stride + c;
    state[0] = cv[6], state[cf.channels] = cv[7];
    state[2 * cf.channels] = x;
}

}  // namespace duality::cuda::gemv
