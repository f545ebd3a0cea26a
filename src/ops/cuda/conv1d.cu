// Causal depthwise conv1d + SiLU over a packed VarlenBatch (spec 5.3, 8.3, 8.4), each sequence
// continuing from its conv state (the W-1 newest raw rows, oldest first, f32) and leaving its
// last W-1 raw rows there:
//   out[t, c] = silu(bias[c] + Σ_k weight[c, k] · X[t - (W-1) + k, c]),  X = [old state ; x]
//
// Two paths, chosen on the host:
// - Decode (n_tokens == n_seq, i.e. one token per sequence): conv1d_walk_kernel, one thread per
//   (sequence, V channels). It reads its slot's old state into registers, walks the sequence's
//   tokens in order (the window in registers), writes out, then writes the new state. Each
//   thread owns its (slot, channels), so reading before writing needs no synchronization. The
//   weights and the first sequence's slot, window and cu_seqlens rows are read before
//   pdl::wait() (early reads, core/cuda/pdl.cuh; the caller's operation in front, the in_proj
//   product in a model, must not write them), while that operation finishes. Grid: (channel
//   blocks, sequences).
// - Prefill / mixed batches: conv1d_tile_kernel computes the outputs only, parallel over token
//   tiles and channels: a block covers TT consecutive packed tokens (which may span sequences)
//   × blockDim.x·V channels; each thread first requests its first U = 4 rows (8 at V = 8), the
//   W-1 packed rows in front of the tile and its taps, then finds the tile's first sequence by
//   binary search in cu_seqlens and takes its window from those rows (or from the old state
//   where the tile starts within W-1 tokens of its sequence), so it waits for one round trip
//   before the first row; then it slides the window over the tile, U rows at a time, held as
//   raw bits until used. Afterwards
//   conv1d_state_kernel (one thread per (sequence, V channels)) writes each new state from x and,
//   for sequences shorter than W-1, the old state. The old state is only written by the second
//   launch, so no tile ever reads a state that is being overwritten.
// Conv1dArgs::out_begin/out_end/outputs/state_update run a part of the op (ssd_fused's SsdConv:
// B's and C's outputs before the SSD, the state update after it); a part always takes the
// prefill kernels.
// V = 4 channels per thread when channels, x_stride and state_slot_stride are multiples of 4 and
// the pointers are aligned (16-byte f32 / 8-byte f16 and bf16 accesses); else V = 1. Prefill of
// f16/bf16 takes V = 8 (16-byte accesses of x) where multiples of 8 and alignment allow. SiLU
// is activation/silu<T> (fast exp and division for 16-bit activations).
//
// Limits: width in {2, 3, 4}; act f32/f16/bf16; the slots of one batch must be distinct, except
// a scratch slot whose contents nobody reads (decode padding); x and out must not overlap;
// channels < 2^16 · 128 · V.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "ops/cuda/activation.cuh"
#include "ops/cuda/conv_taps.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace {

using conv::push;
using conv::Taps;

constexpr int kPrefetch = 4;  // U: rows loaded ahead in the tile kernel (8 at V = 8)

// The sequence s holding packed token t (cu[s] <= t < cu[s + 1]); t < cu[n_seq].
__device__ __forceinline__ int64_t find_seq(const int32_t* cu, int64_t n_seq, int64_t t) {
    int64_t lo = 0, hi = n_seq - 1;
    while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (cu[mid + 1] > t)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

// ---- decode: one thread walks one sequence ---------------------------------------------------
template <typename T, int W, int V>
__global__ void conv1d_walk_kernel(Conv1dArgs a, bool early) {
    const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
    const int64_t C = a.channels, s0 = blockIdx.y;
    const bool mine = c < C;
    Taps<T, W, V> taps;
    float win[W - 1][V];
    const auto state_of = [&](int64_t s) {
        return a.state + static_cast<int64_t>(a.batch.slots[s]) * a.state_slot_stride + c;
    };
    const auto load_window = [&](const float* st) {
#pragma unroll
        for (int k = 0; k < W - 1; ++k) dtype::load<V>(st + k * C, win[k]);
    };
    // The weights, the first sequence's slot, window and rows in the batch come in while the
    // kernel in front finishes (early reads, core/cuda/pdl.cuh: the kernel in front writes none
    // of them).
    int64_t t0_first = 0, t1_first = 0;
    if (early && mine) {
        taps.load(a.weight, a.bias, c);
        if (s0 < a.batch.n_seq) {
            load_window(state_of(s0));
            t0_first = a.batch.cu_seqlens[s0];
            t1_first = a.batch.cu_seqlens[s0 + 1];
        }
    }
    pdl::wait();  // before any other global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    if (!mine) return;
    const T* x = static_cast<const T*>(a.x);
    T* out = static_cast<T*>(a.out);
    if (!early) taps.load(a.weight, a.bias, c);
    for (int64_t s = s0; s < a.batch.n_seq; s += gridDim.y) {
        float* st = state_of(s);
        const bool first_early = early && s == s0;
        const int64_t t0 = first_early ? t0_first : a.batch.cu_seqlens[s];
        const int64_t t1 = first_early ? t1_first : a.batch.cu_seqlens[s + 1];
        // The window (unless read early) and the first token's row are loaded together (one round
        // trip in decode).
        float xv[V];
        if (!first_early) load_window(st);
        if (t0 < t1) dtype::load<V>(x + t0 * a.x_stride + c, xv);
        for (int64_t t = t0; t < t1; ++t) {
            float o[V];
            taps.apply(win, xv, o);
            dtype::store<V>(out + t * C + c, o);
            push<W, V>(win, xv);
            if (t + 1 < t1) dtype::load<V>(x + (t + 1) * a.x_stride + c, xv);
        }
#pragma unroll
        for (int k = 0; k < W - 1; ++k) dtype::store<V>(st + k * C, win[k]);
    }
}

// ---- prefill: outputs over token tiles -------------------------------------------------------
// Loads the window of sequence s before its token at position `pos` (rows pos-(W-1)..pos-1 of
// [old state ; x], x's rows starting at packed token t_seq).
template <typename T, int W, int V>
__device__ __forceinline__ void load_window(const Conv1dArgs& a, int64_t s, int64_t t_seq,
                                            int64_t pos, int64_t c, float (&win)[W - 1][V]) {
    const T* x = static_cast<const T*>(a.x);
    const float* st = a.state + static_cast<int64_t>(a.batch.slots[s]) * a.state_slot_stride + c;
#pragma unroll
    for (int k = 0; k < W - 1; ++k) {
        const int64_t tau = pos - (W - 1) + k;
        if (tau >= 0)
            dtype::load<V>(x + (t_seq + tau) * a.x_stride + c, win[k]);
        else
            dtype::load<V>(st + (W - 1 + tau) * a.channels, win[k]);
    }
}

template <typename T, int W, int V>
__global__ void conv1d_tile_kernel(Conv1dArgs a, int64_t tile_tokens) {
    pdl::wait();  // before any global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    const int64_t c =
        a.out_begin + (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * V;
    if (c >= a.out_end) return;
    const int64_t t_begin = static_cast<int64_t>(blockIdx.x) * tile_tokens;
    const int64_t t_end =
        t_begin + tile_tokens < a.batch.n_tokens ? t_begin + tile_tokens : a.batch.n_tokens;
    const int64_t C = a.channels;
    const int32_t* cu = a.batch.cu_seqlens;
    const T* x = static_cast<const T*>(a.x);
    T* out = static_cast<T*>(a.out);
    // U rows ahead, held as raw bits (half the registers of their f32 values at 16 bits).
    constexpr int U = kPrefetch * (V == 8 ? 2 : 1);
    dtype::RawOf<V, T> xr[U];
    const auto load_rows = [&](int64_t t) {
#pragma unroll
        for (int u = 0; u < U; ++u)
            if (t + u < t_end) xr[u] = dtype::load_bits<V>(x + (t + u) * a.x_stride + c);
    };
    // Everything the first rows need is requested before anything waits: the first U rows, the
    // W-1 packed rows in front of the tile (the window unless the tile starts within W-1 tokens
    // of its sequence, decided once cu_seqlens is in) and the taps. A thread then waits for one
    // round trip, not for the sequence lookup and the window after it.
    load_rows(t_begin);
    dtype::RawOf<V, T> before[W - 1];
#pragma unroll
    for (int k = 0; k < W - 1; ++k) {
        const int64_t t = t_begin - (W - 1) + k;
        if (t >= 0) before[k] = dtype::load_bits<V>(x + t * a.x_stride + c);
    }
    Taps<T, W, V> taps;
    taps.load(a.weight, a.bias, c);

    int64_t s = find_seq(cu, a.batch.n_seq, t_begin);
    int64_t seq_begin = cu[s], seq_end = cu[s + 1];
    float win[W - 1][V];
    {
        const float* st =
            a.state + static_cast<int64_t>(a.batch.slots[s]) * a.state_slot_stride + c;
#pragma unroll
        for (int k = 0; k < W - 1; ++k) {
            const int64_t tau = t_begin - seq_begin - (W - 1) + k;  // position in the sequence
            if (tau >= 0)
                dtype::unpack<V>(before[k], x, win[k]);
            else
                dtype::load<V>(st + (W - 1 + tau) * a.channels, win[k]);
        }
    }
    for (int64_t t = t_begin; t < t_end; t += U) {
        if (t > t_begin) load_rows(t);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t tt = t + u;
            if (tt < t_end) {
                float xv[V];
                dtype::unpack<V>(xr[u], x, xv);
                if (tt == seq_end) {  // the next non-empty sequence starts here
                    do {
                        ++s;
                    } while (cu[s + 1] <= tt);
                    seq_begin = cu[s];
                    seq_end = cu[s + 1];
                    load_window<T, W, V>(a, s, seq_begin, 0, c, win);
                }
                float o[V];
                taps.apply(win, xv, o);
                dtype::store<V>(out + tt * C + c, o);
                push<W, V>(win, xv);
            }
        }
    }
}

// New state of each sequence: the last W-1 rows of [old state ; x], read before written.
template <typename T, int W, int V>
__global__ void conv1d_state_kernel(Conv1dArgs a) {
    pdl::wait();  // before any global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
    if (c >= a.channels) return;
    const T* x = static_cast<const T*>(a.x);
    for (int64_t s = blockIdx.y; s < a.batch.n_seq; s += gridDim.y) {
        float* st = a.state + static_cast<int64_t>(a.batch.slots[s]) * a.state_slot_stride + c;
        const int64_t t0 = a.batch.cu_seqlens[s], len = a.batch.cu_seqlens[s + 1] - t0;
        float next[W - 1][V];
#pragma unroll
        for (int r = 0; r < W - 1; ++r) {
            const int64_t tau = len - (W - 1) + r;
            if (tau >= 0)
                dtype::load<V>(x + (t0 + tau) * a.x_stride + c, next[r]);
            else
                dtype::load<V>(st + (W - 1 + tau) * a.channels, next[r]);
        }
#pragma unroll
        for (int r = 0; r < W - 1; ++r) dtype::store<V>(st + r * a.channels, next[r]);
    }
}

unsigned clamp_grid(int64_t n, int64_t max) {
    return static_cast<unsigned>(n < max ? n : max);
}

// Threads per block for n_vec vectors of channels: 32..128.
int block_threads(int64_t n_vec) {
    int threads = 32;
    while (threads < 128 && threads < n_vec) threads *= 2;
    return threads;
}

template <typename T, int W, int V>
void launch_conv1d(const Conv1dArgs& a, bool whole, cudaStream_t stream) {
    const int64_t n_vec = (a.channels + V - 1) / V;
    const int threads = block_threads(n_vec);
    const int64_t channel_blocks = (n_vec + threads - 1) / threads;
    if (whole && a.batch.n_tokens == a.batch.n_seq) {
        const dim3 grid(clamp_grid(channel_blocks, 2147483647), clamp_grid(a.batch.n_seq, 65535));
        pdl::launch(conv1d_walk_kernel<T, W, V>, grid, threads, 0, stream, a, pdl::early_reads());
        DUALITY_CUDA_LAUNCH_CHECK();
        return;
    }
    if (a.batch.n_tokens <= 0) return;  // every sequence empty: states unchanged
    if (a.outputs && a.out_end > a.out_begin) {
        const int64_t out_vec = (a.out_end - a.out_begin + V - 1) / V;
        const int out_threads = block_threads(out_vec);
        // Tile length: the longest of 64, 32, 16, 8 tokens that still gives ~256k threads over
        // the channels computed (B's and C's alone are 32 vectors on the 2.7b: 8-token tiles).
        // (2.7b, 8k tokens, bench --ops on an H200: 16-token tiles 62.5-63.1 µs, 8-token tiles,
        // one group of loads a thread, 69.9 µs.)
        int64_t tile = 64;
        while (tile > 8 && out_vec * ((a.batch.n_tokens + tile - 1) / tile) < 262144) tile /= 2;
        const dim3 tiles(clamp_grid((a.batch.n_tokens + tile - 1) / tile, 2147483647),
                         clamp_grid((out_vec + out_threads - 1) / out_threads, 65535));
        pdl::launch(conv1d_tile_kernel<T, W, V>, tiles, out_threads, 0, stream, a, tile);
        DUALITY_CUDA_LAUNCH_CHECK();
    }
    if (a.state_update) {
        const dim3 seqs(clamp_grid(channel_blocks, 2147483647), clamp_grid(a.batch.n_seq, 65535));
        pdl::launch(conv1d_state_kernel<T, W, V>, seqs, threads, 0, stream, a);
        DUALITY_CUDA_LAUNCH_CHECK();
    }
}

template <typename T, int V>
void launch_width(const Conv1dArgs& a, bool whole, cudaStream_t stream) {
    switch (a.width) {
        case 2:
            launch_conv1d<T, 2, V>(a, whole, stream);
            break;
        case 3:
            launch_conv1d<T, 3, V>(a, whole, stream);
            break;
        case 4:
            launch_conv1d<T, 4, V>(a, whole, stream);
            break;
        default:
            std::fprintf(stderr, "duality: internal error: cuda::conv1d: width %lld (2..4)\n",
                         static_cast<long long>(a.width));
            std::abort();
    }
}

// V = 8 exists for 16-bit activations only.
template <typename T>
void launch_vec(const Conv1dArgs& a, bool whole, bool vec8, bool vec, cudaStream_t stream) {
    if constexpr (sizeof(T) == 2) {
        if (vec8) {
            launch_width<T, 8>(a, whole, stream);
            return;
        }
    }
    if (vec)
        launch_width<T, 4>(a, whole, stream);
    else
        launch_width<T, 1>(a, whole, stream);
}

}  // namespace

void conv1d(const Conv1dArgs& args, DType act, cudaStream_t stream) {
    if (args.batch.n_seq <= 0 || args.channels <= 0) return;
    Conv1dArgs a = args;
    if (a.out_end == 0) a.out_end = a.channels;
    if (a.out_begin < 0 || a.out_end > a.channels || a.out_begin % 8 != 0 ||
        (a.out_end % 8 != 0 && a.out_end != a.channels)) {
        std::fprintf(stderr,
                     "duality: internal error: cuda::conv1d: output channels [%lld, %lld)\n",
                     static_cast<long long>(a.out_begin), static_cast<long long>(a.out_end));
        std::abort();
    }
    // Only the whole operation may take the decode kernel (outputs and state in one walk).
    const bool whole = a.outputs && a.state_update && a.out_begin == 0 && a.out_end == a.channels;
    DUALITY_DISPATCH_FLOAT("conv1d", act, T, {
        const bool vec = a.channels % 4 == 0 && a.x_stride % 4 == 0 &&
                         a.state_slot_stride % 4 == 0 && dtype::is_aligned(a.x, 4 * sizeof(T)) &&
                         dtype::is_aligned(a.out, 4 * sizeof(T)) && dtype::is_aligned(a.state, 16);
        // Prefill of 16-bit activations: 8 channels (16 bytes of x) a thread.
        const bool vec8 = vec && (a.batch.n_tokens != a.batch.n_seq || !whole) &&
                          a.channels % 8 == 0 && a.x_stride % 8 == 0 &&
                          a.state_slot_stride % 8 == 0 && dtype::is_aligned(a.x, 16) &&
                          dtype::is_aligned(a.out, 16) && dtype::is_aligned(a.state, 32);
        launch_vec<T>(a, whole, vec8, vec, stream);
    });
}

}  // namespace duality::cuda
