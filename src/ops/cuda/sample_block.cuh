// Block-wide building blocks of the sampling kernel (sample.cu): order-preserving token keys,
// deterministic reductions and scans, a shared-memory bitonic sort and a radix select over the
// keys of one row of logits. One CTA of kThreads threads works on one row; every function here
// must be called by all threads of the CTA (they synchronize).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace duality::cuda::sample_detail {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;  // 32: one warp can combine the per-warp partials
constexpr int kCap = 4096;             // keys per window (a sorted slice of the row)
constexpr int kItems = kCap / kThreads;
constexpr int kBins = 256;   // radix digit: 8 bits
constexpr int kLevels = 32;  // window-0 distance levels (see sample.cu)
static_assert(kWarps == 32 && kCap % kThreads == 0);

// ---- keys ------------------------------------------------------------------------------------
// A token's key orders it as the CPU chain does (sampling::filter): larger logit first, then lower
// id. High word: the logit's bits made order-preserving (-0 folded into +0, NaN below -inf); low
// word: ~id. Keys are unique, and 0 is below every real key (used as padding).
__device__ __forceinline__ uint32_t value_bits(float v) {
    if (v != v) return 0;
    const uint32_t b = __float_as_uint(v == 0.0f ? 0.0f : v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ uint64_t make_key(float v, int64_t id) {
    return (static_cast<uint64_t>(value_bits(v)) << 32) | (~static_cast<uint32_t>(id));
}
__device__ __forceinline__ float key_value(uint64_t k) {
    const uint32_t f = static_cast<uint32_t>(k >> 32);
    return __uint_as_float((f & 0x80000000u) ? (f & 0x7fffffffu) : ~f);
}
__device__ __forceinline__ int32_t key_id(uint64_t k) {
    return static_cast<int32_t>(~static_cast<uint32_t>(k));
}

// ---- the row loop ----------------------------------------------------------------------------
// Calls f(i, value, valid) for every id i of the row: 16-byte loads, two in flight per thread
// (up to 3 scalar loads before the first 16-byte boundary and after the last). Every thread runs
// the same number of iterations (valid is false for the padding calls), so f may use full-warp
// intrinsics. The order of the ids is fixed by n and the row's alignment.
template <typename F>
__device__ __forceinline__ void for_each_logit(const float* row, int64_t n, F&& f) {
    const auto misalign = static_cast<int64_t>((reinterpret_cast<uintptr_t>(row) & 15) / 4);
    const int64_t head = n < ((4 - misalign) & 3) ? n : ((4 - misalign) & 3);
    const int64_t t = threadIdx.x;
    f(t, t < head ? __ldg(row + t) : 0.0f, t < head);
    const float4* vec = reinterpret_cast<const float4*>(row + head);
    const int64_t n_vec = (n - head) / 4;
    for (int64_t base = 0; base < n_vec; base += 2 * kThreads) {
        float4 v[2];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int64_t k = base + j * kThreads + t;
            v[j] = k < n_vec ? __ldg(vec + k) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int64_t k = base + j * kThreads + t;
            const int64_t i = head + 4 * k;
            const bool valid = k < n_vec;
            f(i, v[j].x, valid);
            f(i + 1, v[j].y, valid);
            f(i + 2, v[j].z, valid);
            f(i + 3, v[j].w, valid);
        }
    }
    const int64_t tail = head + 4 * n_vec;
    f(tail + t, tail + t < n ? __ldg(row + tail + t) : 0.0f, tail + t < n);
}

// Adds 1 to h[bin] for every lane of the (full) warp with `take`, one atomic per distinct bin.
__device__ __forceinline__ void warp_hist_add(uint32_t* h, uint32_t bin, bool take) {
    const uint32_t key = take ? bin : 0xffffffffu;
    const unsigned peers = __match_any_sync(0xffffffffu, key);
    if (take && (threadIdx.x & 31) == static_cast<unsigned>(__ffs(peers) - 1))
        atomicAdd(h + bin, static_cast<uint32_t>(__popc(peers)));
}

// ---- reductions and scans (fixed order: the same inputs always give the same bits) -----------
struct Scratch {
    double d[kWarps];
    uint64_t u[kWarps];
    int64_t i[kWarps];
};

// Every thread's v combined by op(v, other) over the block, the same result in every thread:
// warps by xor shuffles, then warp 0 over the per-warp partials in `part` (one per warp).
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, T* part, Op op) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = part[lane];
        for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
        if (lane == 0) part[0] = v;
    }
    __syncthreads();
    const T r = part[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ double block_sum(double v, Scratch& s) {
    return block_reduce(v, s.d, [](double a, double o) { return a + o; });
}
__device__ __forceinline__ uint64_t block_sum(uint64_t v, Scratch& s) {
    return block_reduce(v, s.u, [](uint64_t a, uint64_t o) { return a + o; });
}
__device__ __forceinline__ uint64_t block_max(uint64_t v, Scratch& s) {
    return block_reduce(v, s.u, [](uint64_t a, uint64_t o) { return o > a ? o : a; });
}
__device__ __forceinline__ int64_t block_min(int64_t v, Scratch& s) {
    return block_reduce(v, s.i, [](int64_t a, int64_t o) { return o < a ? o : a; });
}

// Exclusive prefix sum over the threads in thread order (integers: exact); *total gets the sum.
__device__ __forceinline__ uint64_t block_exclusive_sum(uint64_t v, Scratch& s, uint64_t* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t x = v;
    for (int off = 1; off < 32; off <<= 1) {
        const uint64_t y = __shfl_up_sync(0xffffffffu, x, off);
        if (lane >= off) x += y;
    }
    if (lane == 31) s.u[warp] = x;
    __syncthreads();
    if (warp == 0) {
        uint64_t w = s.u[lane];
        for (int off = 1; off < 32; off <<= 1) {
            const uint64_t y = __shfl_up_sync(0xffffffffu, w, off);
            if (lane >= off) w += y;
        }
        s.u[lane] = w;
    }
    __syncthreads();
    const uint64_t before = warp ? s.u[warp - 1] : 0;
    *total = s.u[kWarps - 1];
    __syncthreads();
    return before + x - v;
}

// ---- sort ------------------------------------------------------------------------------------
// Sorts keys[0, n) descending in place (1 <= n <= kCap); keys[n, pow2 ceil) are overwritten.
__device__ __forceinline__ void bitonic_sort_desc(uint64_t* keys, int n) {
    int p = 1;
    while (p < n) p <<= 1;
    for (int i = n + static_cast<int>(threadIdx.x); i < p; i += kThreads) keys[i] = 0;
    __syncthreads();
    for (int k = 2; k <= p; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < p; i += kThreads) {
                const int o = i ^ j;
                if (o > i) {
                    const uint64_t a = keys[i], b = keys[o];
                    // Blocks with (i & k) == 0 end descending, the others ascending; the last
                    // merge (k == p) is all descending.
                    if (((i & k) == 0) ? (a < b) : (a > b)) {
                        keys[i] = b;
                        keys[o] = a;
                    }
                }
            }
            __syncthreads();
        }
    }
}

// ---- radix select ----------------------------------------------------------------------------
struct SelectSmem {
    uint32_t hist[kWarps][kBins];  // per-warp histograms (no atomics across warps)
};
struct SelectScalars {
    uint32_t total[kBins];
    uint32_t digit, above, count;
};

// Returns a key T such that exactly r of the row's keys K satisfy T <= K < hi (1 <= r <= the
// number of keys below hi): MSB-first radix select over the 64-bit keys, 8 bits per pass, that
// stops as soon as the bucket holding the r-th key is wanted whole. The id half of the key only
// needs the low id_bits bits (ids < 2^id_bits: the bits above are all ones). At most 4 passes over
// the row settle the logit value, ceil(id_bits / 8) more split ties.
__device__ inline uint64_t select_threshold(const float* row, int64_t n, uint64_t hi, int64_t r,
                                            int id_bits, SelectSmem& sm, SelectScalars& sc) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int id_digits = (id_bits + 7) / 8;
    uint64_t prefix = 0, mask = 0;
    for (int step = 0; step < 4 + id_digits; ++step) {
        int shift;
        if (step < 4) {
            shift = 56 - 8 * step;
        } else {
            if (step == 4) {
                const uint64_t ones = (0xffffffffull << id_bits) & 0xffffffffull;
                prefix |= ones;
                mask |= ones;
            }
            shift = 8 * (id_digits - 1 - (step - 4));
        }
        for (int i = threadIdx.x; i < kWarps * kBins; i += kThreads) (&sm.hist[0][0])[i] = 0;
        __syncthreads();
        for_each_logit(row, n, [&](int64_t i, float v, bool valid) {
            const uint64_t k = make_key(v, i);
            const bool take = valid && k < hi && (k & mask) == prefix;
            warp_hist_add(sm.hist[warp], static_cast<uint32_t>(k >> shift) & (kBins - 1), take);
        });
        __syncthreads();
        for (int b = threadIdx.x; b < kBins; b += kThreads) {
            uint32_t t = 0;
            for (int w = 0; w < kWarps; ++w) t += sm.hist[w][b];
            sc.total[b] = t;
        }
        __syncthreads();
        if (warp == 0) {
            // Lane l owns bins 255 - 8l - j (j = 0..7): lanes in order walk the bins downwards.
            uint32_t own = 0;
            for (int j = 0; j < 8; ++j) own += sc.total[kBins - 1 - 8 * lane - j];
            uint32_t incl = own;
            for (int off = 1; off < 32; off <<= 1) {
                const uint32_t y = __shfl_up_sync(0xffffffffu, incl, off);
                if (lane >= off) incl += y;
            }
            uint32_t acc = incl - own;
            if (acc < r && static_cast<int64_t>(incl) >= r) {
                for (int j = 0; j < 8; ++j) {
                    const uint32_t b = kBins - 1 - 8 * lane - j;
                    if (acc + sc.total[b] >= r) {
                        sc.digit = b;
                        sc.above = acc;
                        sc.count = sc.total[b];
                        break;
                    }
                    acc += sc.total[b];
                }
            }
        }
        __syncthreads();
        const uint32_t digit = sc.digit, above = sc.above, count = sc.count;
        __syncthreads();
        r -= above;
        prefix |= static_cast<uint64_t>(digit) << shift;
        mask |= static_cast<uint64_t>(kBins - 1) << shift;
        if (count == r) break;  // the whole bucket is wanted: the rest of the bits may be 0
    }
    return prefix;
}

}  // namespace duality::cuda::sample_detail
