// Chunked SSD step K4 (spec 6.2 and 7): state passing along each sequence's chunks, in f32.
//   h = state[slots[s], head]                               (the slot's state: continuation)
//   for c in cu_chunks[s] .. cu_chunks[s+1]-1:
//       s_loc = st[c];  st[c] = h  (= prev, the state entering chunk c);  h = exp(Scs_c[Q-1])·h +
//       s_loc
//   state[slots[s], head] = h                                (rounded to the slot dtype S)
// Parallelization: one block of 256 threads per (1024-element slice of a head's {head_dim,
// d_state} state, head, sequence), slice fastest; each thread owns 4 elements 256 apart (coalesced)
// and walks the chunks in order, loading the next chunk's local state before it writes the current
// one. S: float, __half or __nv_bfloat16 slots; the slot's {n_head, head_dim, d_state} is dense.
// Limits: none beyond int64 indexing.
#include "core/cuda/check.h"
#include "ops/cuda/ssd_plan.h"
#include "ops/cuda/ssd_tile.cuh"

namespace duality::cuda::ssd {
namespace {

constexpr int kPassThreads = 256, kPerThread = 4;

template <typename S>
__global__ void __launch_bounds__(kPassThreads) state_passing_kernel(Plan p) {
    const int H = p.n_head, Q = p.chunk_size;
    const int64_t PN = static_cast<int64_t>(p.head_dim) * p.d_state;
    const int64_t n_eb = (PN + kPassThreads * kPerThread - 1) / (kPassThreads * kPerThread);
    const int64_t eb = blockIdx.x % n_eb, rest = blockIdx.x / n_eb;
    const int h = static_cast<int>(rest % H);
    const int64_t s = rest / H;
    S* slot = static_cast<S*>(p.state) + p.slots[s] * p.state_slot_stride + h * PN;
    const int64_t c0 = p.cu_chunks[s], c1 = p.cu_chunks[s + 1];
    const int64_t head_st = static_cast<int64_t>(p.head_dim) * p.n_ld;  // st stride of a head

    int64_t e[kPerThread], off[kPerThread];  // element in the slot / in a head's st block
    float hs[kPerThread], next[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
        e[k] = eb * kPassThreads * kPerThread + k * kPassThreads + threadIdx.x;
        off[k] = e[k] < PN ? (e[k] / p.d_state) * p.n_ld + e[k] % p.d_state : 0;
        hs[k] = e[k] < PN ? to_f32(slot[e[k]]) : 0.0f;
    }
    if (c0 < c1) {
        const float* st0 = p.st + (c0 * H + h) * head_st;
#pragma unroll
        for (int k = 0; k < kPerThread; ++k) next[k] = e[k] < PN ? st0[off[k]] : 0.0f;
    }
    for (int64_t c = c0; c < c1; ++c) {
        float* stc = p.st + (c * H + h) * head_st;
        const float scale = expf(p.cs[(c * H + h) * Q + Q - 1]);
        float cur[kPerThread];
#pragma unroll
        for (int k = 0; k < kPerThread; ++k) cur[k] = next[k];
        if (c + 1 < c1) {
            const float* stn = stc + H * head_st;
#pragma unroll
            for (int k = 0; k < kPerThread; ++k) next[k] = e[k] < PN ? stn[off[k]] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < kPerThread; ++k) {
            if (e[k] < PN) stc[off[k]] = hs[k];
            hs[k] = fmaf(scale, hs[k], cur[k]);
        }
    }
#pragma unroll
    for (int k = 0; k < kPerThread; ++k)
        if (e[k] < PN) slot[e[k]] = from_f32<S>(hs[k]);
}

}  // namespace

template <typename S>
void launch_state_passing(const Plan& p, cudaStream_t stream) {
    const int64_t PN = static_cast<int64_t>(p.head_dim) * p.d_state;
    const int64_t n_eb = (PN + kPassThreads * kPerThread - 1) / (kPassThreads * kPerThread);
    const int64_t blocks = n_eb * p.n_head * p.n_seq;
    state_passing_kernel<S><<<static_cast<unsigned>(blocks), kPassThreads, 0, stream>>>(p);
    DUALITY_CUDA_LAUNCH_CHECK();
}

template void launch_state_passing<float>(const Plan&, cudaStream_t);
template void launch_state_passing<__half>(const Plan&, cudaStream_t);
template void launch_state_passing<__nv_bfloat16>(const Plan&, cudaStream_t);

}  // namespace duality::cuda::ssd
