// The fused SSD's conv1d prologue (SsdConv; ssd_fused_kernel.cuh, which alone includes this): a
// head block computes x = silu(conv1d(x_raw)) of its head's channels from in_proj's raw rows
// itself, so that x's conv output never goes through memory. Parallelization and limits below
// (chunks of at most 128 tokens, the raw rows in the block's prev region).
#pragma once

#include "ops/cuda/activation.cuh"
#include "ops/cuda/conv_taps.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ssd_fused_common.cuh"

namespace duality::cuda::fused {

// SsdConv, in two steps. conv_x_load: cp.async of the chunk's raw x rows of head h, rows −3..len−1
// (row −3 first; rows before the packed batch zero-filled), into `raw` {qa + 3, kP} (the prev
// region, unused until step 3; ssd_conv_supported checks that the rows fit). conv_x: once they
// have landed, x = silu(conv1d(x_raw)) (width 4, spec 5.3; conv_taps.cuh, the same arithmetic as
// conv1d.cu) into Xs in the activation dtype, rows len..qa zero. A thread takes 8 channels of
// qa / 32 consecutive rows and slides the window of the 3 raw rows before them over them; before
// a sequence's first token (`first`: rows −3..−1 then belong to the sequence packed in front) the
// window comes from the sequence's conv state (f32, global memory).
template <typename T, int kP>
__device__ __forceinline__ void conv_x_load(const FusedParams& p, int h, int64_t start, int len,
                                            T* raw) {
    constexpr int kXV = kP / 8;  // 16-byte vectors per row
    const T* xg = static_cast<const T*>(p.x) + start * p.x_stride + h * kP;  // raw row 0
    for (int v = static_cast<int>(threadIdx.x); v < (len + 3) * kXV; v += kThreads) {
        const int r = v / kXV - 3, cv = (v % kXV) * 8;
        const bool ok = start + r >= 0;
        cp_async16(raw + (r + 3) * kP + cv, ok ? xg + r * p.x_stride + cv : xg, ok ? 16 : 0);
    }
}

// The conv in two halves: `load(p, c, h, qa, first)` brings the thread's taps and, in front of a
// sequence's first chunk, its window rows from the conv state (global memory) into registers;
// the kernel calls it while the cp.async rows are in flight, so those loads' latency hides
// behind the copy. `run` convolves the staged rows once they have landed.
template <typename T, int kP>
struct ConvX {
    int v, rows, r0;
    conv::Taps<T, 4, 8> taps;
    float win[3][8];  // raw rows r0 − 3 .. r0 − 1 (those before the sequence from its conv state)

    __device__ __forceinline__ void load(const FusedParams& p, int64_t c, int h, int qa,
                                         bool first) {
        constexpr int kXV = kP / 8;
        static_assert(kThreads / kXV == 32, "one row group per 32 rows of the chunk");
        const int tid = static_cast<int>(threadIdx.x);
        v = tid % kXV;
        rows = qa / 32;
        r0 = (tid / kXV) * rows;
        const int64_t ch = static_cast<int64_t>(h) * kP + v * 8;  // the thread's first channel
        taps.load(p.conv_w, p.conv_b, ch);
        if (first && r0 < 3) {
            const float* st = p.conv_state + p.slots[p.chunk_seq[c]] * p.conv_slot_stride + ch;
#pragma unroll
            for (int k = 0; k < 3; ++k) {
                if (r0 - 3 + k >= 0) continue;
                float lo[4], hi[4];  // two 16-byte loads (the state is only 16-byte aligned)
                dtype::load<4>(st + (r0 + k) * p.conv_ld, lo);
                dtype::load<4>(st + (r0 + k) * p.conv_ld + 4, hi);
#pragma unroll
                for (int i = 0; i < 8; ++i) win[k][i] = i < 4 ? lo[i] : hi[i - 4];
            }
        }
    }

    // x = silu(conv1d(raw)) into Xs, whose element (r, col) is at xo(r, col) (16-byte pieces of a
    // row contiguous); `first` as in load(). The thread's raw rows (at most 3 + 4:
    // chunks of at most 128 tokens) are all loaded before any is used, and the rows unrolled, so
    // the block's 8 warps keep 7 shared loads and 32 SiLUs in flight each instead of a chain of
    // row-at-a-time latencies (the prologue is latency-bound: 2 blocks of 8 warps per SM).
    template <typename XOffset>
    __device__ __forceinline__ void run(int len, bool first, const T* raw, T* Xs,
                                        const XOffset& xo) {
        using M = Act<T>;
        // qa / 32 rows a thread: chunks of at most 128 tokens, which ssd_conv_supported requires
        // (a longer chunk would leave rows of Xs unwritten).
        constexpr int kMaxRows = 4;
        dtype::RawOf<8, T> bits[3 + kMaxRows];  // raw rows r0 − 3 .. r0 + rows − 1
#pragma unroll
        for (int k = 0; k < 3 + kMaxRows; ++k) {
            const int r = r0 - 3 + k;
            const bool wanted = k < 3 ? !(first && r < 0) && r0 < len : k - 3 < rows && r < len;
            if (wanted) bits[k] = dtype::load_bits<8>(raw + (r + 3) * kP + v * 8);
        }
#pragma unroll
        for (int k = 0; k < 3; ++k)
            if (r0 < len && !(first && r0 - 3 + k < 0)) dtype::unpack<8>(bits[k], raw, win[k]);
#pragma unroll
        for (int i = 0; i < kMaxRows; ++i) {
            const int r = r0 + i;
            if (i >= rows) break;
            uint32_t o[4] = {0, 0, 0, 0};  // padding rows (r >= len) zero
            if (r < len) {
                float x[8], y[8];
                dtype::unpack<8>(bits[3 + i], raw, x);
                taps.apply(win, x, y);
                conv::push<4, 8>(win, x);
#pragma unroll
                for (int q = 0; q < 4; ++q) o[q] = M::pack(y[2 * q], y[2 * q + 1]);
            }
            *reinterpret_cast<uint4*>(Xs + xo(r, v * 8)) = make_uint4(o[0], o[1], o[2], o[3]);
        }
    }
};

}  // namespace duality::cuda::fused
