// Causal depthwise conv1d + SiLU over a packed variable-length batch (CPU twin:
// cpu::conv1d_causal per sequence). Each sequence continues from the width-1 raw rows in its
// slot's conv state and leaves its own last width-1 raw rows there.
// Parallelization: two launches.
//   outputs: grid (channel blocks of 128, token tiles of 32); a thread walks its tile's tokens
//            for one channel, finding each token's sequence from cu_seqlens, and reads the
//            window from x or (for the first width-1 positions of a sequence) the old state.
//   state:   grid (channel blocks, sequences); a thread gathers its sequence's newest width-1
//            raw rows of [old state ; x] into registers, then writes them. It runs after the
//            outputs launch, so no thread reads a state another one has already replaced.
// Decode (one token per sequence) is the same code with tiles of one sequence per token.
// Limits: width in [2, 8].
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace {

constexpr int kChannels = 128, kTile = 32, kMaxWidth = 8;

__device__ int find_sequence(const int32_t* cu, int64_t n_seq, int64_t token) {
    int lo = 0, hi = static_cast<int>(n_seq) - 1;  // the last s with cu[s] <= token
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (cu[mid] <= token) lo = mid; else hi = mid - 1;
    }
    return lo;
}

template <typename T>
__global__ void conv1d_out_kernel(Conv1dArgs a) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
    const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTile;
    if (c >= a.channels || t0 >= a.batch.n_tokens) return;
    const int64_t t1 = min(t0 + kTile, a.batch.n_tokens), C = a.channels, W = a.width;
    const int32_t* cu = a.batch.cu_seqlens;
    const T* x = static_cast<const T*>(a.x);
    T* out = static_cast<T*>(a.out);
    float w[kMaxWidth];
    for (int k = 0; k < W; ++k) w[k] = a.weight[c * W + k];
    const float bias = a.bias ? a.bias[c] : 0.0f;
    int s = find_sequence(cu, a.batch.n_seq, t0);
    for (int64_t t = t0; t < t1; ++t) {
        while (t >= cu[s + 1]) ++s;
        const int64_t start = cu[s], p = t - start;
        const float* state = a.state + static_cast<int64_t>(a.batch.slots[s]) * a.state_slot_stride;
        float acc = bias;
        for (int k = 0; k < W; ++k) {
            const int64_t q = p - (W - 1) + k;  // position in the sequence; < 0: from the state
            const float v = q >= 0 ? to_f32(x[(start + q) * a.x_stride + c])
                                   : state[(W - 1 + q) * C + c];
            acc = fmaf(w[k], v, acc);
        }
        out[t * C + c] = from_f32<T>(silu(acc));
    }
}

template <typename T>
__global__ void conv1d_state_kernel(Conv1dArgs a) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
    const int s = static_cast<int>(blockIdx.y);
    if (c >= a.channels) return;
    const int64_t C = a.channels, W = a.width;
    const int64_t start = a.batch.cu_seqlens[s], L = a.batch.cu_seqlens[s + 1] - start;
    const T* x = static_cast<const T*>(a.x);
    float* state = a.state + static_cast<int64_t>(a.batch.slots[s]) * a.state_slot_stride;
    float next[kMaxWidth];
    for (int r = 0; r < W - 1; ++r) {
        const int64_t q = L - (W - 1) + r;
        next[r] = q >= 0 ? to_f32(x[(start + q) * a.x_stride + c]) : state[(W - 1 + q) * C + c];
    }
    for (int r = 0; r < W - 1; ++r) state[r * C + c] = next[r];
}

}  // namespace

void conv1d(const Conv1dArgs& a, DType act, cudaStream_t stream) {
    if (a.batch.n_tokens == 0) return;
    if (a.width < 2 || a.width > kMaxWidth)
        fail("conv1d: width must be in [2, 8]", "width", __FILE__, __LINE__);
    const unsigned channel_blocks = static_cast<unsigned>((a.channels + kChannels - 1) / kChannels);
    const dim3 out_grid(channel_blocks, static_cast<unsigned>((a.batch.n_tokens + kTile - 1) / kTile));
    const dim3 state_grid(channel_blocks, static_cast<unsigned>(a.batch.n_seq));
    DUALITY_DISPATCH_FLOAT(act, T, {
        conv1d_out_kernel<T><<<out_grid, kChannels, 0, stream>>>(a);
        conv1d_state_kernel<T><<<state_grid, kChannels, 0, stream>>>(a);
    });
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda
