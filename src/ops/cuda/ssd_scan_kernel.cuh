// The sequential-scan SSD prefill's kernel and launches (ssd_scan.cu says what it computes, how
// it is parallelized and its limits), instantiated per activation dtype by ssd_scan_f32.cu,
// ssd_scan_f16.cu and ssd_scan_bf16.cu (each every state dtype, d_state and row count), which
// alone include this, so that the instantiations compile in parallel.
#pragma once

#include <cuda_runtime.h>

#include "core/cuda/check.h"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda::scan {

using dtype::from_f32;
using dtype::to_f32;

constexpr int kWarps = 4;  // head_dim ≤ kWarps · 32 rows per warp

template <typename T, typename S, int NJ, int R>
__global__ void __launch_bounds__(kWarps * 32) ssd_scan_kernel(SsdArgs a, const float* dt) {
    const int64_t seq = blockIdx.x, h = blockIdx.y;
    const int64_t P = a.head_dim, N = a.d_state, H = a.n_head, g = h / (H / a.n_group);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t t0 = a.batch.cu_seqlens[seq], t1 = a.batch.cu_seqlens[seq + 1];
    S* state = static_cast<S*>(a.state) +
               static_cast<int64_t>(a.batch.slots[seq]) * a.state_slot_stride + h * P * N;
    float s[R][NJ];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int64_t p = warp + kWarps * r;
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
            const int64_t n = lane + 32 * j;
            s[r][j] = (p < P && n < N) ? to_f32(state[p * N + n]) : 0.0f;
        }
    }
    const float A = a.A[h], Dh = a.D ? a.D[h] : 0.0f;
    for (int64_t t = t0; t < t1; ++t) {
        const T* x = static_cast<const T*>(a.x) + t * a.x_stride + h * P;
        const T* B = static_cast<const T*>(a.B) + t * a.bc_stride + g * N;
        const T* C = static_cast<const T*>(a.C) + t * a.bc_stride + g * N;
        T* y = static_cast<T*>(a.y) + t * H * P + h * P;
        const float d = dt[t * H + h], dA = expf(A * d);
        float b[NJ], c[NJ];
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
            const int64_t n = lane + 32 * j;
            b[j] = n < N ? to_f32(B[n]) : 0.0f;
            c[j] = n < N ? to_f32(C[n]) : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int64_t p = warp + kWarps * r;
            if (p >= P) break;
            const float xp = to_f32(x[p]), dx = d * xp;
            float acc = 0.0f;
#pragma unroll
            for (int j = 0; j < NJ; ++j) {
                s[r][j] = fmaf(dA, s[r][j], dx * b[j]);
                acc = fmaf(s[r][j], c[j], acc);
            }
            for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
            if (lane == 0) y[p] = from_f32<T>(fmaf(Dh, xp, acc));
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int64_t p = warp + kWarps * r;
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
            const int64_t n = lane + 32 * j;
            if (p < P && n < N) state[p * N + n] = from_f32<S>(s[r][j]);
        }
    }
}

template <typename T, typename S, int NJ>
void launch_rows(const SsdArgs& a, const float* dt, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>(a.batch.n_seq), static_cast<unsigned>(a.n_head));
    const int64_t rows = (a.head_dim + kWarps - 1) / kWarps;
    if (rows <= 4)
        ssd_scan_kernel<T, S, NJ, 4><<<grid, kWarps * 32, 0, stream>>>(a, dt);
    else if (rows <= 8)
        ssd_scan_kernel<T, S, NJ, 8><<<grid, kWarps * 32, 0, stream>>>(a, dt);
    else if (rows <= 16)
        ssd_scan_kernel<T, S, NJ, 16><<<grid, kWarps * 32, 0, stream>>>(a, dt);
    else if (rows <= 32 && NJ <= 4)
        ssd_scan_kernel<T, S, NJ, 32><<<grid, kWarps * 32, 0, stream>>>(a, dt);
    else
        fail("ssd_scan: head_dim · d_state too large", "head_dim", __FILE__, __LINE__);
}

template <typename T, typename S>
void launch(const SsdArgs& a, const float* dt, cudaStream_t stream) {
    const int64_t nj = (a.d_state + 31) / 32;
    if (nj <= 1)
        launch_rows<T, S, 1>(a, dt, stream);
    else if (nj <= 2)
        launch_rows<T, S, 2>(a, dt, stream);
    else if (nj <= 4)
        launch_rows<T, S, 4>(a, dt, stream);
    else if (nj <= 8)
        launch_rows<T, S, 8>(a, dt, stream);
    else
        fail("ssd_scan: d_state > 256", "d_state", __FILE__, __LINE__);
}

// The launch for activations T and the state dtype a.state_dtype.
template <typename T>
void launch_act(const SsdArgs& a, const float* dt, cudaStream_t stream) {
    DUALITY_DISPATCH_FLOAT("ssd_scan", a.state_dtype, S, launch<T, S>(a, dt, stream));
}

}  // namespace duality::cuda::scan
