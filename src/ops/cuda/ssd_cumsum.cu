// Chunked SSD step K1 (spec 6.2): per chunk c and head h, for i < Q (chunk_size)
//   dtc[c, h, i] = Δ[chunk_start + i, h]     (0 for i >= chunk_len)
//   cs[c, h, i]  = Σ_{j <= i} A_h · dtc[c, h, j]   (f32; flat past chunk_len)
// Parallelization: one block of 256 threads per (chunk, 32 consecutive heads). The chunk is walked
// in segments of 32 tokens: the block stages the {32 tokens, 32 heads} slice of dt (coalesced along
// heads) in shared memory, then warp w scans heads w, w+8, w+16, w+24 with a warp prefix sum
// (lane = token) and carries each head's running sum to the next segment.
// Limits: any n_head, any chunk_size; dt is f32 {n_tokens, n_head} dense.
#include "core/cuda/check.h"
#include "ops/cuda/ssd_plan.h"

namespace duality::cuda::ssd {
namespace {

constexpr int kHeads = 32, kWarps = 8;

__global__ void __launch_bounds__(kWarps * 32) chunk_cumsum_kernel(Plan p) {
    __shared__ float tile[32][kHeads + 1];  // {token, head}
    const int H = p.n_head, Q = p.chunk_size;
    const int n_hb = (H + kHeads - 1) / kHeads;
    const int64_t c = blockIdx.x / n_hb;
    const int h0 = static_cast<int>(blockIdx.x % n_hb) * kHeads;
    const int64_t start = p.chunk_start[c];
    const int len = p.chunk_len[c];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    float carry[kHeads / kWarps], a_h[kHeads / kWarps];
#pragma unroll
    for (int k = 0; k < kHeads / kWarps; ++k) {
        const int h = h0 + warp + kWarps * k;
        carry[k] = 0.0f;
        a_h[k] = h < H ? p.A[h] : 0.0f;
    }
    for (int i0 = 0; i0 < Q; i0 += 32) {
        for (int e = threadIdx.x; e < 32 * kHeads; e += kWarps * 32) {
            const int r = e / kHeads, hh = e % kHeads, i = i0 + r;
            tile[r][hh] = (i < len && h0 + hh < H) ? p.dt[(start + i) * H + h0 + hh] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kHeads / kWarps; ++k) {
            const int hh = warp + kWarps * k, h = h0 + hh, i = i0 + lane;
            if (h >= H) continue;  // warp-uniform
            const float d = tile[lane][hh];
            float v = a_h[k] * d;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const float n = __shfl_up_sync(0xffffffffu, v, o);
                if (lane >= o) v += n;
            }
            if (i < Q) {
                const int64_t at = (c * H + h) * Q + i;
                p.dtc[at] = d;
                p.cs[at] = carry[k] + v;
            }
            carry[k] += __shfl_sync(0xffffffffu, v, 31);
        }
        __syncthreads();
    }
}

}  // namespace

void launch_chunk_cumsum(const Plan& p, cudaStream_t stream) {
    const int64_t blocks = p.n_chunk * ((p.n_head + kHeads - 1) / kHeads);
    chunk_cumsum_kernel<<<static_cast<unsigned>(blocks), kWarps * 32, 0, stream>>>(p);
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda::ssd
