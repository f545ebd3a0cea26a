// The fused decode step of the SSM (spec 8.3; CPU twin: cpu::dt_softplus + cpu::ssd_sequential
// with one token), for a batch of single-token sequences:
//   Δ = clamp(softplus(dt_raw + dt_bias)),  dA = exp(A·Δ)
//   S[p, n] = dA·S[p, n] + Δ·x[p]·B[n],     y[p] = Σ_n S[p, n]·C[n] + D·x[p]
// Parallelization: one block of 4 warps per (sequence, head); a warp owns head_dim rows p, its
// lanes hold B and C for n = lane + 32·j in registers and stream the state row (coalesced), so
// many independent state loads are in flight; y[p] is a warp-shuffle sum. The state is read and
// written once in its storage dtype (f32, f16 or bf16), with all math in f32.
// Limits: d_state ≤ 256.
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace {

constexpr int kWarps = 4;

template <typename T, typename S, int NJ>
__global__ void __launch_bounds__(kWarps * 32) ssm_decode_kernel(SsdArgs a, DecodeDt d) {
    const int64_t seq = blockIdx.x, h = blockIdx.y;
    const int64_t P = a.head_dim, N = a.d_state, g = h / (a.n_head / a.n_group);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const T* x = static_cast<const T*>(a.x) + seq * a.x_stride + h * P;
    const T* B = static_cast<const T*>(a.B) + seq * a.bc_stride + g * N;
    const T* C = static_cast<const T*>(a.C) + seq * a.bc_stride + g * N;
    const float dt = fminf(fmaxf(softplus(to_f32(static_cast<const T*>(d.dt_raw)[seq * d.raw_stride + h]) +
                                          d.dt_bias[h]),
                                 d.dt_min),
                           d.dt_max);
    const float dA = expf(a.A[h] * dt), Dh = a.D ? a.D[h] : 0.0f;
    float b[NJ], c[NJ];
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
        const int64_t n = lane + 32 * j;
        b[j] = n < N ? to_f32(B[n]) : 0.0f;
        c[j] = n < N ? to_f32(C[n]) : 0.0f;
    }
    S* state = static_cast<S*>(a.state) +
               static_cast<int64_t>(a.batch.slots[seq]) * a.state_slot_stride + h * P * N;
    T* y = static_cast<T*>(a.y) + seq * a.n_head * P + h * P;
    for (int64_t p = warp; p < P; p += kWarps) {
        const float xp = to_f32(x[p]), dtx = dt * xp;
        S* row = state + p * N;
        float s[NJ];
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
            const int64_t n = lane + 32 * j;
            s[j] = n < N ? to_f32(row[n]) : 0.0f;
        }
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
            const int64_t n = lane + 32 * j;
            const float v = fmaf(dA, s[j], dtx * b[j]);
            if (n < N) row[n] = from_f32<S>(v);
            acc = fmaf(v, c[j], acc);
        }
        for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (lane == 0) y[p] = from_f32<T>(fmaf(Dh, xp, acc));
    }
}

template <typename T, typename S>
void launch(const SsdArgs& a, const DecodeDt& d, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>(a.batch.n_seq), static_cast<unsigned>(a.n_head));
    const int nj = static_cast<int>((a.d_state + 31) / 32);
    if (nj <= 1) ssm_decode_kernel<T, S, 1><<<grid, kWarps * 32, 0, stream>>>(a, d);
    else if (nj <= 2) ssm_decode_kernel<T, S, 2><<<grid, kWarps * 32, 0, stream>>>(a, d);
    else if (nj <= 4) ssm_decode_kernel<T, S, 4><<<grid, kWarps * 32, 0, stream>>>(a, d);
    else if (nj <= 8) ssm_decode_kernel<T, S, 8><<<grid, kWarps * 32, 0, stream>>>(a, d);
    else fail("ssm_decode: d_state > 256", "d_state", __FILE__, __LINE__);
}

}  // namespace

void ssm_decode(const SsdArgs& a, const DecodeDt& d, DType act, cudaStream_t stream) {
    if (a.batch.n_seq == 0) return;
    DUALITY_DISPATCH_FLOAT(act, T, {
        DUALITY_DISPATCH_FLOAT(a.state_dtype, S, launch<T, S>(a, d, stream));
    });
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda
