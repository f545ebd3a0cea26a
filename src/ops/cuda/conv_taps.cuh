// Per-thread taps of the causal depthwise conv1d + SiLU (spec 5.3), shared by conv1d.cu and the
// fused SSD's conv prologue (ssd_fused.cu, SsdConv) so both compute
//   out = silu(b + w[0]·x[t-W+1] + ... + w[W-1]·x[t])
// with the same f32 operations in the same order. A thread holds the weights and bias of V
// consecutive channels and a window of the W-1 older rows in registers.
#pragma once

#include <cstdint>

#include "ops/cuda/activation.cuh"

namespace duality::cuda::conv {

// Per-thread conv parameters for V channels starting at c (T: the activation dtype).
template <typename T, int W, int V>
struct Taps {
    float w[V][W];
    float b[V];
    __device__ __forceinline__ void load(const float* weight, const float* bias, int64_t c) {
        // Width 4: one 16-byte load per channel when the weights are aligned (they are when
        // they come from a device allocation).
        const bool vec = W == 4 && reinterpret_cast<uintptr_t>(weight) % 16 == 0;
#pragma unroll
        for (int i = 0; i < V; ++i) {
            if (vec) {
                const float4 q = *reinterpret_cast<const float4*>(weight + (c + i) * W);
                const float qv[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
                for (int k = 0; k < W; ++k) w[i][k] = qv[k % 4];
            } else {
#pragma unroll
                for (int k = 0; k < W; ++k) w[i][k] = weight[(c + i) * W + k];
            }
            b[i] = bias ? bias[c + i] : 0.0f;
        }
    }
    // out = silu(conv) for the window `win` (W-1 older rows, oldest first) and the new row `x`.
    __device__ __forceinline__ void apply(const float (&win)[W - 1][V], const float (&x)[V],
                                          float (&out)[V]) const {
#pragma unroll
        for (int i = 0; i < V; ++i) {
            float acc = b[i];
#pragma unroll
            for (int k = 0; k < W - 1; ++k) acc = fmaf(w[i][k], win[k][i], acc);
            acc = fmaf(w[i][W - 1], x[i], acc);
            out[i] = silu<T>(acc);
        }
    }
};

// Shifts the window by one row: drops the oldest, appends x.
template <int W, int V>
__device__ __forceinline__ void push(float (&win)[W - 1][V], const float (&x)[V]) {
#pragma unroll
    for (int k = 0; k + 1 < W - 1; ++k)
#pragma unroll
        for (int i = 0; i < V; ++i) win[k][i] = win[k + 1][i];
#pragma unroll
    for (int i = 0; i < V; ++i) win[W - 2][i] = x[i];
}

}  // namespace duality::cuda::conv
