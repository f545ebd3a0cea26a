// Token sampling on the GPU: the CPU chain of sampling::sample_row, row by row, with the same
// arithmetic (CPU twin: src/sampling/sampler.cpp).
//   temperature <= 0: argmax over [0, vocab), lowest id on ties.
//   else: sort order = logit descending, id ascending; top-k keeps the first k; p = softmax over
//   them at temperature T (exp in double, rounded to float, divided by the double sum); top-p keeps
//   the shortest prefix whose mass reaches top_p; min-p cuts at the first p < min_p·p_max;
//   q = p / Σ kept p; the token is the first one (in order) whose running Σ q exceeds
//   u = draw_uniform(seed, step) (splitmix64), else the last survivor.
//
// Parallelization: one CTA of 1024 threads per row, no sort of the vocabulary. Keys (logit bits,
// ~id) order tokens exactly as the CPU does. Pass 1 (16-byte loads): the largest key; greedy rows
// stop here. Pass 2: counts of tokens per distance level below the max (d = max - l <= 2^(j-8)),
// and when top-k is off, the softmax denominator (double exp per token). Window 0 = the tokens of
// one level (a prefix of the sorted order, at most 4096 keys: the shallowest level holding all
// top-k keys or all keys min-p can keep, else the deepest that fits), gathered into shared memory
// and bitonic-sorted; the chain runs there with block scans. Sums of probabilities are exact
// fixed-point integers (2^-62 units), which equal the CPU's double sums whenever those are exact
// (every addend above ~2^-29). Only when the survivors or the draw reach past window 0 (flat
// distributions: thousands of candidates) does the kernel walk on through windows of 4096 keys,
// each found by a radix select (4-6 more passes over the row): correct but much slower. top_k
// beyond window 0 costs one radix select for its threshold. No workspace, no global atomics.
// Expected cost (not yet measured): about 3 passes over the row (+ the double exps when top-k is
// off, + the sort of window 0), a few µs per row, rows in parallel.
//
// Limits: logits finite or -inf (NaN sorts last; an infinite max gives NaN probabilities, as on
// the CPU; the id is always in [0, vocab)); vocab < 2^31. Where the token can differ from the
// CPU's: the double softmax sum is added in a different order, and device exp() may differ from
// glibc's by an ulp; either moves a float probability by one ulp only when its exact value lies
// within ~1e-16 of a float rounding boundary, and that changes the token only if the draw or the
// top-p mass also falls within ~1e-8 of a cut. Probabilities below 2^-39 are rounded in the
// fixed-point sums (at most 2^-63 each), where the CPU rounds its running sum instead.
#include <cstdint>

#include "core/cuda/check.h"
#include "ops/cuda/ops.h"
#include "ops/cuda/sample_block.cuh"

namespace duality::cuda {
namespace {

using namespace sample_detail;

constexpr double kFixed = 0x1p62;   // fixed-point scale of probability sums
constexpr uint64_t kNoKey = ~0ull;  // "no upper bound": above every real key

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

struct Smem {
    union {
        uint64_t win[kCap];                // the current window, sorted descending
        SelectSmem select;                 // radix-select histograms
        uint32_t levels[kWarps][kLevels];  // pass-2 level counts
    } u;
    SelectScalars sc;
    Scratch scratch;
    uint32_t counter;  // gather_window's fill count
    uint32_t n0;       // keys of window 0 when chosen by level
    int level;         // window 0: the deepest level with at most kCap keys, or -1
};

// The distance level of a token below the max: the smallest j with d = max - l <= 2^(j-8),
// clamped to [0, 31] (31: farther than 2^22, -inf, NaN); the max itself is level 0 even when it
// is -inf. Monotone in d, and d in l, so "level <= j" selects a prefix of the sorted order.
__device__ __forceinline__ int distance_level(float d) {
    if (!(d <= 0x1p22f)) return kLevels - 1;
    if (d <= 0x1p-8f) return 0;
    int e;
    const float f = frexpf(d, &e);
    return (f == 0.5f ? e - 1 : e) + 8;
}
__device__ __forceinline__ int level_of(float max_logit, float l) {
    return l == max_logit ? 0 : distance_level(__fsub_rn(max_logit, l));
}

// The splitmix64 draw of sampling::draw_uniform, as an integer: u = bits · 2^-53.
__device__ __forceinline__ uint64_t draw_bits(uint64_t seed, uint64_t draw) {
    uint64_t z = seed + (draw + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z >> 11;
}

// The chain's arithmetic for one row, exactly as sampling::filter does it.
struct Softmax {
    double inv_t, top, sum = 1.0;

    __device__ double x(float l) const {  // l/T - max/T
        return __dsub_rn(__dmul_rn(static_cast<double>(l), inv_t), top);
    }
    __device__ double e(float l) const { return exp(x(l)); }  // unrounded
    // A term of the denominator. The CPU adds them largest first, from exp(0) = 1 on, so a term
    // below 2^-53 (half an ulp of the running sum) never changes its sum: leave those out too.
    __device__ double sum_term(float l) const {
        const double v = x(l);
        return v < -36.8 ? 0.0 : exp(v);  // exp(-36.8) = 1.04e-16 < 2^-53
    }
    __device__ float p(float l) const {  // the float probability after the first softmax
        const float f = __double2float_rn(e(l));
        return __double2float_rn(__ddiv_rn(static_cast<double>(f), sum));
    }
};

__device__ __forceinline__ uint64_t to_fixed(float p) {
    return __double2ull_rn(static_cast<double>(p) * kFixed);
}

// Gathers the row's keys with lo <= key < hi (by_level: level_of(max - l) <= level instead) into
// sm.u.win and sorts them descending. Returns how many there are (the caller knows it fits).
__device__ int gather_window(Smem& sm, const float* row, int64_t n, bool by_level, int level,
                             float max_logit, uint64_t lo, uint64_t hi) {
    if (threadIdx.x == 0) sm.counter = 0;
    __syncthreads();
    for_each_logit(row, n, [&](int64_t i, float v, bool valid) {
        const uint64_t k = make_key(v, i);
        const bool take =
            valid && (by_level ? level_of(max_logit, v) <= level : (k >= lo && k < hi));
        const unsigned ballot = __ballot_sync(0xffffffffu, take);
        const int lane = threadIdx.x & 31;
        uint32_t base = 0;
        if (lane == 0 && ballot) base = atomicAdd(&sm.counter, __popc(ballot));
        base = __shfl_sync(0xffffffffu, base, 0);
        if (take) {
            const uint32_t slot = base + __popc(ballot & ((1u << lane) - 1));
            if (slot < kCap) sm.u.win[slot] = k;
        }
    });
    __syncthreads();
    const int count = static_cast<int>(min(sm.counter, static_cast<uint32_t>(kCap)));
    bitonic_sort_desc(sm.u.win, count);
    return count;
}

// Row state shared by the phases of the kernel.
struct Row {
    const float* logits;
    int64_t n;    // vocab
    int id_bits;  // ids < 2^id_bits
    float max_logit;
    int64_t n0;  // keys in window 0
    int64_t k;   // top-k survivors (n when top-k is off)
};

// Loads window 0 (the n0 largest keys) into shared memory, sorted.
__device__ void load_window0(Smem& sm, const Row& row) {
    if (sm.level >= 0) {
        gather_window(sm, row.logits, row.n, true, sm.level, row.max_logit, 0, 0);
    } else {
        const uint64_t lo =
            select_threshold(row.logits, row.n, kNoKey, row.n0, row.id_bits, sm.u.select, sm.sc);
        gather_window(sm, row.logits, row.n, false, 0, row.max_logit, lo, kNoKey);
    }
}

// Loads the r keys that follow `hi` in the sorted order.
__device__ void load_next_window(Smem& sm, const Row& row, uint64_t hi, int64_t r) {
    const uint64_t lo = select_threshold(row.logits, row.n, hi, r, row.id_bits, sm.u.select, sm.sc);
    gather_window(sm, row.logits, row.n, false, 0, row.max_logit, lo, hi);
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* logits, int64_t ld, int64_t vocab, const DeviceSampling* params,
                  int32_t* ids) {
    __shared__ Smem sm;
    const DeviceSampling prm = params[blockIdx.x];
    Row row;
    row.logits = logits + static_cast<int64_t>(blockIdx.x) * ld;
    row.n = vocab;
    row.id_bits = 64 - __clzll(static_cast<long long>(vocab > 1 ? vocab - 1 : 1));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    // Pass 1: the largest key = argmax with the lowest id among equal logits.
    uint64_t best = 0;
    for_each_logit(row.logits, row.n, [&](int64_t i, float v, bool valid) {
        const uint64_t k = valid ? make_key(v, i) : 0;
        best = k > best ? k : best;
    });
    best = block_max(best, sm.scratch);
    if (!(prm.temperature > 0.0f)) {
        if (threadIdx.x == 0) ids[blockIdx.x] = key_id(best);
        return;
    }
    row.max_logit = key_value(best);
    Softmax sm_f;
    sm_f.inv_t = static_cast<double>(__fdiv_rn(1.0f, prm.temperature));
    sm_f.top = __dmul_rn(static_cast<double>(row.max_logit), sm_f.inv_t);
    row.k = (prm.top_k > 0 && prm.top_k < vocab) ? prm.top_k : vocab;
    const bool topk_on = row.k < vocab;
    const bool topp_on = (prm.top_p < 1.0f);
    const bool minp_on = (prm.min_p > 0.0f);

    // Pass 2: keys per distance level; the softmax denominator when every token survives top-k.
    for (int i = threadIdx.x; i < kWarps * kLevels; i += kThreads) (&sm.u.levels[0][0])[i] = 0;
    __syncthreads();
    double part = 0.0;
    for_each_logit(row.logits, row.n, [&](int64_t, float v, bool valid) {
        warp_hist_add(sm.u.levels[warp], level_of(row.max_logit, v), valid);
        if (valid && !topk_on) part += sm_f.sum_term(v);
    });
    __syncthreads();
    if (warp == 0) {
        uint32_t cum = 0;
        for (int w = 0; w < kWarps; ++w) cum += sm.u.levels[w][lane];
        for (int off = 1; off < 32; off <<= 1) {
            const uint32_t y = __shfl_up_sync(0xffffffffu, cum, off);
            if (lane >= off) cum += y;
        }
        // Counts are cumulative and non-decreasing in the level: the fitting levels are a prefix.
        const unsigned fits = __ballot_sync(0xffffffffu, lane < kLevels - 1 && cum <= kCap);
        int level = __popc(fits) - 1;
        // A shallower window suffices when it holds every key that can survive: all top-k keys,
        // or every key min-p can keep (p >= min_p·p_max: d <= T·ln(1/min_p), plus a margin).
        // (Only speed depends on this choice: the walk goes on past window 0 when needed.)
        const unsigned has_k = __ballot_sync(0xffffffffu, topk_on && cum >= row.k);
        if (has_k && __ffs(has_k) - 1 <= level) {
            level = __ffs(has_k) - 1;
        } else if (minp_on && level >= 0) {
            const float reach = prm.temperature * (logf(1.0f / prm.min_p) + 1e-3f);
            level = ::min(level, distance_level(reach));
        }
        const uint32_t n0 = __shfl_sync(0xffffffffu, cum, level < 0 ? 0 : level);
        if (lane == 0) {
            sm.level = level;
            sm.n0 = n0;
        }
    }
    __syncthreads();
    row.n0 = sm.level >= 0 ? static_cast<int64_t>(sm.n0) : min64(kCap, row.k);
    if (!topk_on) sm_f.sum = block_sum(part, sm.scratch);

    // top-k wider than window 0: its threshold key, and the denominator over the keys above it.
    uint64_t topk_lo = 0;
    if (topk_on && row.k > row.n0) {
        topk_lo =
            select_threshold(row.logits, row.n, kNoKey, row.k, row.id_bits, sm.u.select, sm.sc);
        part = 0.0;
        for_each_logit(row.logits, row.n, [&](int64_t i, float v, bool valid) {
            if (valid && make_key(v, i) >= topk_lo) part += sm_f.sum_term(v);
        });
        sm_f.sum = block_sum(part, sm.scratch);
    }

    load_window0(sm, row);
    if (topk_on && row.k <= row.n0) {  // window 0 holds all top-k survivors, in CPU order
        part = 0.0;
        for (int j = 0; j < kItems; ++j) {
            const int i = threadIdx.x * kItems + j;
            if (i < row.k) part += sm_f.sum_term(key_value(sm.u.win[i]));
        }
        sm_f.sum = block_sum(part, sm.scratch);
    }

    // Phase A: where the survivors end (top-p, min-p) and their mass. Events, by global position g
    // in the sorted order: min-p fails at g (keep g), top-p mass reaches top_p at g (keep g + 1).
    const float p_max = __double2float_rn(__ddiv_rn(1.0, sm_f.sum));
    const float min_p_floor = __fmul_rn(prm.min_p, p_max);
    const uint64_t top_p_fixed = __double2ull_rn(static_cast<double>(prm.top_p) * kFixed);
    int64_t keep = row.k;
    uint64_t kept = 0;  // Σ p of the survivors, fixed point
    bool window0_loaded = true;
    if (!topp_on && !minp_on && row.k > row.n0) {
        // Nothing cuts: the survivors are the top-k set, whose mass takes one pass.
        uint64_t s = 0;
        for_each_logit(row.logits, row.n, [&](int64_t i, float v, bool valid) {
            if (valid && make_key(v, i) >= topk_lo) s += to_fixed(sm_f.p(v));
        });
        kept = block_sum(s, sm.scratch);
    } else {
        int64_t pos = 0, n_win = row.n0;
        for (;;) {
            const int64_t n_use = min64(n_win, row.k - pos);
            float p[kItems];
            uint64_t own = 0;
            for (int j = 0; j < kItems; ++j) {
                const int i = threadIdx.x * kItems + j;
                p[j] = i < n_use ? sm_f.p(key_value(sm.u.win[i])) : 0.0f;
                own += to_fixed(p[j]);
            }
            uint64_t total;
            uint64_t cum = kept + block_exclusive_sum(own, sm.scratch, &total);
            int64_t event = INT64_MAX;
            for (int j = 0; j < kItems; ++j) {
                const int i = threadIdx.x * kItems + j;
                if (i >= n_use) break;
                const int64_t g = pos + i;
                cum += to_fixed(p[j]);
                if (minp_on && g >= 1 && !(p[j] >= min_p_floor)) event = min64(event, g);
                if (topp_on && cum >= top_p_fixed) event = min64(event, g + 1);
            }
            event = block_min(event, sm.scratch);
            if (event != INT64_MAX) {
                keep = event;
                uint64_t s = 0;
                for (int j = 0; j < kItems; ++j) {
                    const int i = threadIdx.x * kItems + j;
                    if (pos + i < keep && i < n_use) s += to_fixed(p[j]);
                }
                kept += block_sum(s, sm.scratch);
                break;
            }
            kept += total;
            pos += n_use;
            if (pos >= row.k) break;  // keep = k
            const uint64_t hi = sm.u.win[n_use - 1];
            __syncthreads();
            n_win = min64(kCap, row.k - pos);
            load_next_window(sm, row, hi, n_win);
            window0_loaded = false;
        }
    }

    // Phase B: the draw. q = p / kept; the first survivor whose running Σ q exceeds u.
    const double kept_d = __ull2double_rn(kept) / kFixed;
    const uint64_t u_fixed = draw_bits(prm.seed, prm.step) << 9;  // u · 2^62, exact
    if (!window0_loaded) {
        __syncthreads();
        load_window0(sm, row);
    }
    uint64_t acc = 0;
    int64_t pos = 0, n_win = row.n0;
    for (;;) {
        const int64_t n_use = min64(n_win, keep - pos);
        uint64_t q[kItems];
        uint64_t own = 0;
        for (int j = 0; j < kItems; ++j) {
            const int i = threadIdx.x * kItems + j;
            const float pj = i < n_use ? sm_f.p(key_value(sm.u.win[i])) : 0.0f;
            q[j] = i < n_use ? to_fixed(__double2float_rn(__ddiv_rn(pj, kept_d))) : 0;
            own += q[j];
        }
        uint64_t total;
        uint64_t cum = acc + block_exclusive_sum(own, sm.scratch, &total);
        int64_t hit = INT64_MAX;
        for (int j = 0; j < kItems; ++j) {
            const int i = threadIdx.x * kItems + j;
            if (i >= n_use) break;
            cum += q[j];
            if (u_fixed < cum) {
                hit = i;
                break;
            }
        }
        hit = block_min(hit, sm.scratch);
        if (hit != INT64_MAX || pos + n_use >= keep) {
            // No hit by the last survivor: rounding left u above the total, take the last one.
            if (threadIdx.x == 0)
                ids[blockIdx.x] = key_id(sm.u.win[hit != INT64_MAX ? hit : n_use - 1]);
            return;
        }
        acc += total;
        pos += n_use;
        const uint64_t hi = sm.u.win[n_use - 1];
        __syncthreads();
        n_win = min64(kCap, keep - pos);
        load_next_window(sm, row, hi, n_win);
    }
}

}  // namespace

size_t sample_workspace_bytes(int64_t, int64_t) {
    return 0;
}

void sample(const float* logits, int64_t ld, int64_t rows, int64_t vocab,
            const DeviceSampling* params, int32_t* ids, void*, cudaStream_t stream) {
    if (rows <= 0) return;
    if (vocab < 1 || vocab > ld || vocab >= (int64_t{1} << 31))
        fail("sample: need 1 <= vocab <= ld and vocab < 2^31", "vocab", __FILE__, __LINE__);
    sample_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, ld, vocab, params,
                                                                        ids);
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda
