// A whole batch-1 decode step in one persistent launch: every layer and the LM head (spec 8.3,
// the CPU twin is the chain cpu_model runs for one token):
//   per layer:  u = RMSNorm(r)·w_norm                       (r: the f32 residual stream)
//               zxbcdt = u·W_inᵀ                            (GEMV, stage A)
//               xBC = silu(conv1d(conv_state, xBC_raw)); Δ = clamp(softplus(dt + dt_bias))
//               S = exp(AΔ)·S + Δ·x ⊗ B;  y = S·C + D·x;  v = y·silu(z)   (stage B)
//               r += GatedRMSNorm(v)·W_outᵀ                 (GEMV, stage C; conv state shifted)
//   then:       logits = RMSNorm(r)·w_f · W_headᵀ           (GEMV, stage F)
// It exists because at batch 1 a step is a chain of small dependent kernels (6-7 per layer) whose
// launch and drain latencies, not HBM, set the time: the 130m's step took 0.35 ms as kernels
// against 0.05 ms of weight bytes (docs/architecture.md, "Batch-1 decode in one launch").
// Status: correct (op cases, model tests) but not yet faster, so the model takes it only with
// DUALITY_DECODE_STACK=1. H200, random bf16 weights (timing test): 130m 0.437 ms per step against
// the chain's 0.348-0.353; 2.7b 2.95 against 2.16 ms. Per 2.7b layer (median block, µs): norm 2.5,
// in_proj 12.1, barrier 6.1, SSM step 4.7, barrier 2.8, gate + conv 4.6, out_proj 7.4, barrier
// 4.9: the latency-bound parts and the barrier waits (load imbalance between SMs included) are
// far longer than the 200 KB ring hides (about 7 µs of one SM's share of HBM).
//
// Parallelization: one block per SM (grid = the SM count, or fewer with
// DecodeStackArgs::blocks; all resident), 8 consumer warps and one producer warp. The producer
// streams the block's rows of every weight matrix, in the order the stages use them (in_proj
// and out_proj of layer 0, 1, ..., then the LM head), into a ring of shared-memory slots with
// bulk copies (cp.async.bulk, completing on the slot's "full" mbarrier), and refills a slot
// once its consumer warp has arrived on its "empty" mbarrier. It runs ahead of the consumers by
// the ring's size (200 KB on Hopper) and never waits for a grid barrier, so
// HBM keeps streaming weights while the consumers sit in the latency-bound parts (the SSM step,
// the norms, the grid barriers). A matrix's rows are split evenly over the blocks; a block's rows
// are cut into pieces of as many whole rows as fit a 20 KB slot (at most an eighth of the block's
// rows, so that every warp gets pieces of the small matrices), and consumer warp w takes the
// pieces w, w + 8, ... of each matrix (a GEMV piece: lanes over k in 16-byte vectors, a warp sum
// per row). Since the warps take turns on the slots, a warp may reach a slot's next fill while
// another still holds its previous one; an mbarrier parity wait then cannot tell that phase from
// the one before it (it would pass at once), so each warp first waits for the producer's count
// of fills issued to the slot (a shared word) and only then for the fill's parity. The stages are
// separated by grid barriers (a counter and a generation word; 3 per layer). Stage B: one item per
// (head, 16 rows of head_dim), a block's items in passes of up to 3 (2 at d_state 256; 16 threads
// per row, d_state / 16 state elements per thread), every load of a pass issued first; each pass
// also convolves all B and C channels into shared memory (the same values every pass: only
// models with more than 3 items per block, such as Codestral's 512 on 132 SMs, repeat it). The
// cross-block data (zxbcdt, v, the partial sums, the residual, the states) is read with
// ld.global.cg (volatile asm, so it stays after the barrier), never from a stale L1 line. Every
// wait has a watchdog: after 4 s a message naming the wait and a trap (a broken launch, not a hung
// process; a debugger or compute-sanitizer can trip it).
//
// Numerics: as the kernel chain it replaces, the intermediate vectors are rounded to the
// activation dtype where that chain stores them (u, zxbcdt, the conv output, y, the gated-norm
// output, out_proj's output before it joins the f32 residual); sums are f32 in a fixed order, so
// results are deterministic. SiLU is activation.cuh's fast form, the norms use rsqrtf, the gated
// norm's group sums are two-level (16-row partials, then lanes). Biases (rare in Mamba-2) are added
// in f32 before the one rounding, where the chain rounds the GEMM output, adds the bias and
// rounds again (up to one act ulp apart). State f32 only.
//
// Limits (decode_stack_supported): Hopper code (sm_90: bulk copies, mbarriers), f16/bf16
// activations, f32 state, head_dim a multiple of 16, d_state 64/128/256, d_conv 2-4, at most 64
// norm groups, rows of at most 20 KB (d_model, d_inner <= 10240), 2·n_group·d_state <= 5120,
// 16-byte aligned matrices, norm weights, residual, v, SSM state and slot stride (float4
// accesses). One launch at a time per sync buffer. The grid (at most the SM count, one block
// per SM) is not a cooperative launch: every block must be resident at once, so no other
// kernel that holds SMs while waiting on other blocks may run beside it (decode_stack_available
// checks that one block fits an SM; MPS or green-context SM limits are not detected).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "core/cuda/prefetch.cuh"
#include "core/cuda/smem_limit.h"
#include "core/cuda/sync.cuh"
#include "ops/cuda/activation.cuh"
#include "ops/cuda/dt_softplus.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"
#include "ops/cuda/reduce.cuh"

namespace duality::cuda {
namespace {

constexpr int kConsumerWarps = 8;
constexpr int kConsumers = kConsumerWarps * 32;
constexpr int kThreads = kConsumers + 32;  // + the producer warp
constexpr int kSlotBytes = 20 * 1024;      // one ring slot: whole weight rows
constexpr int kMaxSlots = 10;
constexpr int kVecBytes = 20 * 1024;  // a stage's input vector (act) or stage B's B and C (f32)
// Scratch floats: [0, 8) sums, [32, 96) item rows (kMaxPassItems · 16), [96, 160) group scales,
// [160, 288) the residual rows of the block's out_proj rows (stage C).
constexpr int kRedFloats = 288;
constexpr int kItemRows = 16;  // stage B: rows of head_dim per item
constexpr int kMaxGroups = 64;

size_t smem_bytes(int n_slot) {
    return static_cast<size_t>(n_slot) * kSlotBytes + kVecBytes + kRedFloats * 4 +
           2 * static_cast<size_t>(n_slot) * 8 + static_cast<size_t>(n_slot) * 4;
}

// The device code below is Hopper's (sm_90 and later); the compute_80 pass compiles an empty
// kernel, which decode_stack_supported never lets run.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
// A spin that has lasted for seconds is a bug (a broken barrier or ring): say where, and trap, so
// that the launch fails instead of hanging the process. tick() once per spin.
__device__ __noinline__ void stuck(const char* what) {
    printf("duality: decode_stack: block %d thread %d stuck in %s\n", blockIdx.x, threadIdx.x,
           what);
    __trap();
}
struct Watchdog {
    static constexpr uint64_t kStuckNs = 4'000'000'000ull;
    uint32_t spins = 0;
    uint64_t t0 = 0;
    __device__ __forceinline__ void tick(const char* what) {
        if (++spins % 1024 != 0) return;
        if (t0 == 0)
            t0 = sync::global_ns();
        else if (sync::global_ns() - t0 > kStuckNs)
            stuck(what);
    }
};

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity, const char* what) {
    Watchdog dog;
    while (!sync::mbar_try_wait(bar, parity)) dog.tick(what);
}

// The consumer warps' barrier (named barrier 1; the producer warp never joins it).
__device__ __forceinline__ void consumers_sync() {
    asm volatile("bar.sync 1, %0;" ::"n"(kConsumers) : "memory");
}

// Sum over the consumer threads, in every one of them (red[0, 8) as scratch).
__device__ __forceinline__ float consumers_sum(float v, float* red) {
    v = reduce::warp_sum(v);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    consumers_sync();
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kConsumerWarps; ++i) s += red[i];
    consumers_sync();
    return s;
}

// All consumers of all blocks, with ssd_fused's ticket and epoch: words[0] counts arrivals,
// words[1] is the epoch. Thread 0 reads the epoch before it arrives (acquire, then acq_rel: the
// arrivals form a release sequence that the last one acquires); the last block to arrive resets
// the count and releases the next epoch, which the others wait for (acquire). The words are left
// ready for the next barrier and the next launch. bar.sync on both sides carries the block's
// other threads' accesses.
__device__ __forceinline__ void grid_sync(uint32_t* words) {
    consumers_sync();
    if (threadIdx.x == 0) {
        const uint32_t next = sync::ld_acquire(words + 1) + 1u;
        if (sync::atom_add_acq_rel(words, 1u) == gridDim.x - 1) {
            words[0] = 0;
            sync::st_release(words + 1, next);
        } else {
            Watchdog dog;
            while (sync::ld_acquire(words + 1) != next) dog.tick("the grid barrier");
        }
    }
    consumers_sync();
}

constexpr int kResAt = 160, kResRows = 128;  // stage C's residual rows in the scratch floats
constexpr int kMaxPassItems = 3;  // stage B: items of a block loaded together (2 at d_state 256)
static_assert(32 + kMaxPassItems * kItemRows <= 96, "item rows fit their scratch");

// A 16-bit act value written by another block in an earlier stage, read from L2 (ld.global.cg).
// CUDA's __ldcg overloads for __half and __nv_bfloat16 are asm without `volatile` or a memory
// clobber, which the compiler may move across the grid barrier; the unsigned short one is not.
template <typename T>
__device__ __forceinline__ float ld_cg(const T* p) {
    const unsigned short bits = __ldcg(reinterpret_cast<const unsigned short*>(p));
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
        return __bfloat162float(__ushort_as_bfloat16(bits));
    else
        return __half2float(__ushort_as_half(bits));
}

// Brings the line holding p (a weight, never written by a step) into L1.
__device__ __forceinline__ void prefetch_l1(const void* p) {
    asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
}

// Stage timestamps (profile mode): thread 0 of each block, slot k of layer l.
constexpr int kStamps = 8;
__device__ __forceinline__ void stamp(const DecodeStackArgs& a, int64_t l, int k) {
    if (a.profile && threadIdx.x == 0)
        a.profile[(l * kStamps + k) * gridDim.x + blockIdx.x] = sync::global_ns();
}

// ---- the block's share of a matrix ------------------------------------------------------------
// Rows [r0, r1) of an {n, k} matrix, cut into pieces of rpp rows (one ring slot each).
struct Span {
    int64_t r0, r1;
    int rpp, pieces;
};
__device__ __forceinline__ Span span_of(int64_t n, int64_t k) {
    Span s;
    s.r0 = n * blockIdx.x / gridDim.x;
    s.r1 = n * (blockIdx.x + 1) / gridDim.x;
    const int64_t row_bytes = k * 2;
    // Whole rows per slot, but no more than an eighth of the block's rows, so that every consumer
    // warp gets pieces of the small matrices (the 130m's out_proj has 6 rows per block).
    const int64_t eighth = (s.r1 - s.r0 + kConsumerWarps - 1) / kConsumerWarps;
    s.rpp =
        static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(kSlotBytes / row_bytes, eighth)));
    s.pieces = static_cast<int>((s.r1 - s.r0 + s.rpp - 1) / s.rpp);
    return s;
}

struct Plan {
    Span in, out, head;
    uint32_t per_layer;  // pieces per layer (in_proj + out_proj)
};
__device__ __forceinline__ Plan plan_of(const DecodeStackArgs& a) {
    Plan p;
    p.in = span_of(2 * a.d_inner + 2 * a.n_group * a.d_state + a.n_head, a.d_model);
    p.out = span_of(a.d_model, a.d_inner);
    p.head = span_of(a.vocab_rows, a.d_model);
    p.per_layer = static_cast<uint32_t>(p.in.pieces + p.out.pieces);
    return p;
}

// Piece g of the block's weight stream (in_proj and out_proj of layer 0, 1, ..., then the LM
// head): its source and size.
__device__ __forceinline__ void piece_at(const DecodeStackArgs& a, const Plan& plan, uint32_t g,
                                         const char** src, uint32_t* bytes) {
    const uint32_t layer = g / plan.per_layer, rem = g % plan.per_layer;
    const void* w;
    const Span* sp;
    int64_t k, p;
    if (layer >= a.n_layer) {
        w = a.head;
        sp = &plan.head;
        k = a.d_model;
        p = g - static_cast<uint32_t>(a.n_layer) * plan.per_layer;
    } else if (rem < static_cast<uint32_t>(plan.in.pieces)) {
        w = a.layers[layer].in_proj;
        sp = &plan.in;
        k = a.d_model;
        p = rem;
    } else {
        w = a.layers[layer].out_proj;
        sp = &plan.out;
        k = a.d_inner;
        p = rem - plan.in.pieces;
    }
    const int64_t r = sp->r0 + p * sp->rpp;
    const int64_t rows = sp->r1 - r < sp->rpp ? sp->r1 - r : sp->rpp;
    *src = static_cast<const char*>(w) + r * k * 2;
    *bytes = static_cast<uint32_t>(rows * k * 2);
}

// The producer: one lane issues every piece of the block in stream order (piece g: slot
// g % n_slot, its (g / n_slot)-th fill), and asks L2 for piece g + ahead as it issues piece g
// (DecodeStackArgs::l2_ahead, default kL2Ahead), meant to keep HBM streaming while the ring is
// full and the consumers are in a latency-bound stage. Off by default: on an H200 the 2.7b's step
// took 3.79 ms with 12 pieces ahead, 3.89 with 24, 2.91 with 4 and 2.95 with none (the 130m's
// 0.42-0.44 ms throughout); not profiled (likely L2 thrash, and the prefetches competing with the
// ring's copies).
constexpr uint32_t kL2Ahead = 0;
__device__ void produce(const DecodeStackArgs& a, const Plan& plan, unsigned char* ring,
                        uint64_t* full, uint64_t* empty, volatile uint32_t* issued, int n_slot) {
    const uint32_t total =
        static_cast<uint32_t>(a.n_layer) * plan.per_layer + static_cast<uint32_t>(plan.head.pieces);
    const uint32_t ahead = a.l2_ahead >= 0 ? static_cast<uint32_t>(a.l2_ahead) : kL2Ahead;
    const char* src;
    uint32_t bytes;
    for (uint32_t g = 0; g < ahead && g < total; ++g) {
        piece_at(a, plan, g, &src, &bytes);
        prefetch_l2_bulk(src, bytes);
    }
    for (uint32_t g = 0; g < total; ++g) {
        if (ahead > 0 && g + ahead < total) {
            piece_at(a, plan, g + ahead, &src, &bytes);
            prefetch_l2_bulk(src, bytes);
        }
        const uint32_t slot = g % n_slot, round = g / n_slot;
        if (round > 0) mbar_wait(empty + slot, (round - 1) & 1, "the producer's wait for a slot");
        piece_at(a, plan, g, &src, &bytes);
        sync::bulk_load(ring + static_cast<size_t>(slot) * kSlotBytes, src, bytes, full + slot);
        __threadfence_block();
        issued[slot] = round + 1;  // the slot's current phase is now this fill's
    }
}

// 8 16-bit values (one 16-byte vector) to f32.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& q, float (&f)[8]) {
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        if constexpr (std::is_same_v<T, __nv_bfloat16>) {
            f[2 * i] = __uint_as_float(w[i] << 16);
            f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        } else {
            const __half2 h = *reinterpret_cast<const __half2*>(&w[i]);
            const float2 v = __half22float2(h);
            f[2 * i] = v.x;
            f[2 * i + 1] = v.y;
        }
    }
}

// y[row] = vec · W[row] for the block's rows of one matrix (k columns), the pieces g_base + p of
// the ring; epi(row, y) stores. Each consumer warp takes pieces warp, warp + 8, ...
template <typename T, typename Epi>
__device__ __forceinline__ void gemv(const Span& sp, int64_t k, uint32_t g_base,
                                     const unsigned char* ring, uint64_t* full, uint64_t* empty,
                                     const volatile uint32_t* issued, int n_slot, const T* vec,
                                     Epi epi) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t row_bytes = k * 2;
    for (int p = warp; p < sp.pieces; p += kConsumerWarps) {
        const uint32_t g = g_base + static_cast<uint32_t>(p), slot = g % n_slot;
        const int64_t r = sp.r0 + static_cast<int64_t>(p) * sp.rpp;
        const int rows = static_cast<int>(sp.r1 - r < sp.rpp ? sp.r1 - r : sp.rpp);
        const unsigned char* w = ring + static_cast<size_t>(slot) * kSlotBytes;
        // A parity wait is only meaningful for the slot's current or previous phase: the warp may
        // get here before the producer has even issued this fill (another warp still holding the
        // slot's previous one), and would then see the phase before as complete. So first wait
        // until this fill is issued.
        Watchdog dog;
        while (issued[slot] <= g / n_slot) dog.tick("a consumer's wait for a fill to be issued");
        mbar_wait(full + slot, (g / n_slot) & 1, "a consumer's wait for weights");
        for (int r4 = 0; r4 < rows; r4 += 4) {
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int64_t c = lane * 8; c < k; c += 256) {
                float u[8];
                unpack8<T>(*reinterpret_cast<const uint4*>(vec + c), u);
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    if (r4 + i >= rows) break;  // uniform across the warp
                    float wv[8];
                    unpack8<T>(*reinterpret_cast<const uint4*>(w + (r4 + i) * row_bytes + c * 2),
                               wv);
#pragma unroll
                    for (int j = 0; j < 8; ++j) acc[i] = fmaf(wv[j], u[j], acc[i]);
                }
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[i] = reduce::warp_sum(acc[i]);
#pragma unroll
            for (int i = 0; i < 4; ++i)
                if (lane == i && r4 + i < rows) epi(r + r4 + i, acc[i]);
        }
        __syncwarp();
        if (lane == 0) sync::mbar_arrive(empty + slot);
    }
}

// vec = act(x · rsqrt(mean(x²) + eps) · w) over d_model, x the residual stream (the embedding row
// before layer 0). Every load is issued before the first sum (d_model <= 10240: at most
// kNormVecs 4-element vectors per thread, held in registers).
constexpr int kNormVecs = 10;
// vec[4i .. 4i + 3] = act(x · r(i) · w) for this thread's vectors i < n4 (x[j]: vector
// threadIdx.x + j · kConsumers), then a barrier of the consumers: the norms' last step.
template <typename T, typename R>
__device__ __forceinline__ void store_scaled(const float4 (&x)[kNormVecs], int64_t n4, R r,
                                             const float* w, T* vec) {
#pragma unroll
    for (int j = 0; j < kNormVecs; ++j) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kConsumers;
        if (i < n4) {
            const float s = r(i);
            const float4 wv = *reinterpret_cast<const float4*>(w + 4 * i);
            const float o[4] = {x[j].x * s * wv.x, x[j].y * s * wv.y, x[j].z * s * wv.z,
                                x[j].w * s * wv.w};
            dtype::store<4>(vec + 4 * i, o);
        }
    }
    consumers_sync();
}

template <typename T>
__device__ __forceinline__ void norm_into(const DecodeStackArgs& a, const T* emb_row, bool first,
                                          const float* w, T* vec, float* red) {
    const int64_t D4 = a.d_model / 4;
    float4 x[kNormVecs];
#pragma unroll
    for (int j = 0; j < kNormVecs; ++j) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kConsumers;
        x[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < D4) {
            prefetch_l1(w + 4 * i);  // read after the sum: in L1 by then
            if (first) {
                float f[4];
                dtype::load<4>(emb_row + 4 * i, f);
                x[j] = make_float4(f[0], f[1], f[2], f[3]);
            } else {
                x[j] = __ldcg(reinterpret_cast<const float4*>(a.residual) + i);
            }
        }
    }
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < kNormVecs; ++j)
        ss += x[j].x * x[j].x + x[j].y * x[j].y + x[j].z * x[j].z + x[j].w * x[j].w;
    const float r = rsqrtf(consumers_sum(ss, red) / static_cast<float>(a.d_model) + a.eps);
    store_scaled(
        x, D4, [r](int64_t) { return r; }, w, vec);
}

// vec = act(v · r_g · w) over d_inner (the gated norm's output), r_g = rsqrt(mean(v²) + eps) of
// each norm group from the items' partial sums: warp w sums the groups w, w + 8, ... (lanes over
// the group's items), then every thread scales its 4-element vectors of v (all loaded first).
template <typename T>
__device__ __forceinline__ void gate_into(const DecodeStackArgs& a, const float* w, T* vec,
                                          float* red) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t E4 = a.d_inner / 4, group_size = a.d_inner / a.n_group;
    const int64_t items_per_group = group_size / kItemRows;
    float4 v[kNormVecs];
#pragma unroll
    for (int j = 0; j < kNormVecs; ++j) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kConsumers;
        v[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < E4) {
            v[j] = __ldcg(reinterpret_cast<const float4*>(a.v) + i);
            prefetch_l1(w + 4 * i);
        }
    }
    for (int64_t g = warp; g < a.n_group; g += kConsumerWarps) {
        float ss = 0.0f;
        for (int64_t i = lane; i < items_per_group; i += 32)
            ss += __ldcg(a.ssq + g * items_per_group + i);
        ss = reduce::warp_sum(ss);
        if (lane == 0) red[96 + g] = rsqrtf(ss / static_cast<float>(group_size) + a.eps);
    }
    consumers_sync();
    // group_size % 16 == 0: a vector lies in one group.
    store_scaled(
        v, E4, [&](int64_t i) { return red[96 + 4 * i / group_size]; }, w, vec);
}

// silu(conv1d) of conv channel c for this step: the W-1 older raw rows from the conv state
// (oldest first), the new raw row from zxbcdt (xBC starts at column d_inner); rounded to act.
template <typename T>
__device__ __forceinline__ float conv_out(const DecodeStackArgs& a, const DeviceLayer& L,
                                          const float* cst, int64_t conv_dim, const T* zx,
                                          int64_t c) {
    const int W = static_cast<int>(a.d_conv);
    float acc = L.conv_bias ? L.conv_bias[c] : 0.0f;
    for (int k = 0; k < W - 1; ++k)
        acc = fmaf(L.conv_weight[c * W + k], __ldcg(cst + k * conv_dim + c), acc);
    acc = fmaf(L.conv_weight[c * W + W - 1], ld_cg(zx + a.d_inner + c), acc);
    return dtype::to_f32(dtype::from_f32<T>(silu<T>(acc)));
}

#endif  // Hopper device code

template <typename T, int N>
__global__ void __launch_bounds__(kThreads, 1) decode_stack_kernel(DecodeStackArgs a, int n_slot) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char* ring = smem;
    T* vec = reinterpret_cast<T*>(smem + static_cast<size_t>(n_slot) * kSlotBytes);
    float* bc = reinterpret_cast<float*>(vec);  // stage B: convolved B, then C, of every group
    float* red =
        reinterpret_cast<float*>(smem + static_cast<size_t>(n_slot) * kSlotBytes + kVecBytes);
    uint64_t* full = reinterpret_cast<uint64_t*>(red + kRedFloats);
    uint64_t* empty = full + n_slot;
    volatile uint32_t* issued = reinterpret_cast<volatile uint32_t*>(empty + n_slot);
    if (threadIdx.x == 0) {
        for (int i = 0; i < n_slot; ++i) {
            sync::mbar_init(full + i);
            sync::mbar_init(empty + i);
            issued[i] = 0;  // fills issued per slot
        }
        sync::mbar_init_fence();
    }
    __syncthreads();
    const Plan plan = plan_of(a);
    if (threadIdx.x >= kConsumers) {
        if (threadIdx.x == kConsumers) produce(a, plan, ring, full, empty, issued, n_slot);
        return;
    }

    const int tid = threadIdx.x;
    const int64_t D = a.d_model, E = a.d_inner, H = a.n_head, P = a.head_dim, G = a.n_group;
    const int64_t GN = G * N, conv_dim = E + 2 * GN;
    const int W = static_cast<int>(a.d_conv);
    const int32_t token = *a.token;
    const int64_t slot = *a.slot;
    const T* emb_row = static_cast<const T*>(a.embedding) + token * D;
    T* zx = static_cast<T*>(a.zxbcdt);
    const int64_t n_item = H * P / kItemRows, items_per_head = P / kItemRows;
    // Stage B's thread layout: 16 threads per row of an item, EPT state elements each.
    constexpr int kTpr = kConsumers / kItemRows, EPT = N / kTpr;
    static_assert(EPT % 4 == 0, "16-byte state accesses");
    constexpr int kPassItems = N >= 256 ? 2 : kMaxPassItems;
    const int row = tid / kTpr, q = tid % kTpr;

    for (int64_t l = 0; l < a.n_layer; ++l) {
        const DeviceLayer& L = a.layers[l];
        float* cst = a.conv_state + slot * a.conv_slot_stride + l * (W - 1) * conv_dim;
        float* sst = a.ssm_state + slot * a.ssm_slot_stride + l * H * P * N;
        const uint32_t g_in = static_cast<uint32_t>(l) * plan.per_layer;
        const uint32_t g_out = g_in + static_cast<uint32_t>(plan.in.pieces);

        // ---- stage A: u = norm(residual); zxbcdt = u · W_inᵀ ----
        stamp(a, l, 0);
        // Stage B's state rows of this block, into L2 meanwhile (written by the previous step).
        for (int64_t it = blockIdx.x + static_cast<int64_t>(tid) * gridDim.x; it < n_item;
             it += static_cast<int64_t>(kConsumers) * gridDim.x)
            prefetch_l2_bulk(sst + it * kItemRows * N, kItemRows * N * 4);
        norm_into<T>(a, emb_row, l == 0, L.norm, vec, red);
        stamp(a, l, 1);
        gemv<T>(plan.in, D, g_in, ring, full, empty, issued, n_slot, vec, [&](int64_t r, float y) {
            if (L.in_proj_bias) y += L.in_proj_bias[r];
            zx[r] = dtype::from_f32<T>(y);
        });
        stamp(a, l, 2);
        grid_sync(a.sync);
        stamp(a, l, 3);

        // ---- stage B: conv1d, the SSM step, v = y·silu(z) and Σ v² per item ----
        // The block's items in passes of up to kPassItems, every load of a pass issued first (the
        // state rows, already in L2; the x channels' conv inputs; z; dt), then B and C of every
        // group convolved into shared memory while those are in flight.
        for (int64_t it0 = blockIdx.x; it0 < n_item; it0 += kPassItems * gridDim.x) {
            float s[kPassItems][EPT], xw[kPassItems][4], xr[kPassItems], zr[kPassItems],
                dr[kPassItems], cw[kPassItems][4], cb[kPassItems], hb[kPassItems], hA[kPassItems],
                hD[kPassItems];
#pragma unroll
            for (int i = 0; i < kPassItems; ++i) {
                const int64_t it = it0 + i * static_cast<int64_t>(gridDim.x);
                if (it >= n_item) break;
                const int64_t h = it / items_per_head;
                const int64_t c = h * P + (it % items_per_head) * kItemRows + row;
                const float* st = sst + c * N + q * EPT;
#pragma unroll
                for (int j = 0; j < EPT; j += 4) {
                    const float4 v4 = __ldcg(reinterpret_cast<const float4*>(st + j));
                    s[i][j] = v4.x;
                    s[i][j + 1] = v4.y;
                    s[i][j + 2] = v4.z;
                    s[i][j + 3] = v4.w;
                }
#pragma unroll
                for (int k = 0; k < 3; ++k)
                    xw[i][k] = k < W - 1 ? __ldcg(cst + k * conv_dim + c) : 0.0f;
                xr[i] = ld_cg(zx + E + c);
                zr[i] = ld_cg(zx + c);
                dr[i] = ld_cg(zx + E + conv_dim + h);
                // The item's weights: the x channel's taps and bias, the head's dt bias, A, D.
#pragma unroll
                for (int k = 0; k < 4; ++k) cw[i][k] = k < W ? L.conv_weight[c * W + k] : 0.0f;
                cb[i] = L.conv_bias ? L.conv_bias[c] : 0.0f;
                hb[i] = L.dt_bias[h];
                hA[i] = L.A[h];
                hD[i] = L.D ? L.D[h] : 0.0f;
            }
            for (int64_t c2 = tid; c2 < 2 * GN; c2 += kConsumers)
                bc[c2] = conv_out<T>(a, L, cst, conv_dim, zx, E + c2);
            consumers_sync();
#pragma unroll
            for (int i = 0; i < kPassItems; ++i) {
                const int64_t it = it0 + i * static_cast<int64_t>(gridDim.x);
                if (it >= n_item) break;
                const int64_t h = it / items_per_head, g = h / (H / G);
                const int64_t c = h * P + (it % items_per_head) * kItemRows + row;
                // x: silu(conv1d) of channel c from the loaded window, rounded to act.
                float acc = cb[i];
#pragma unroll
                for (int k = 0; k < 3; ++k)
                    if (k < W - 1) acc = fmaf(cw[i][k], xw[i][k], acc);
#pragma unroll
                for (int k = 1; k < 4; ++k)
                    if (k == W - 1) acc = fmaf(cw[i][k], xr[i], acc);
                const float xv = dtype::to_f32(dtype::from_f32<T>(silu<T>(acc)));
                const float dt = dt_clamped_softplus(dr[i] + hb[i], a.dt_min, a.dt_max);
                const float dA = expf(hA[i] * dt), dtx = dt * xv;
                const float* Bg = bc + g * N + q * EPT;
                const float* Cg = bc + GN + g * N + q * EPT;
                float dot = 0.0f;
#pragma unroll
                for (int j = 0; j < EPT; ++j) {
                    s[i][j] = s[i][j] * dA + dtx * Bg[j];
                    dot = fmaf(s[i][j], Cg[j], dot);
                }
                float* st = sst + c * N + q * EPT;
#pragma unroll
                for (int j = 0; j < EPT; j += 4)
                    __stcg(reinterpret_cast<float4*>(st + j),
                           make_float4(s[i][j], s[i][j + 1], s[i][j + 2], s[i][j + 3]));
#pragma unroll
                for (int o = kTpr / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
                const float y = dtype::to_f32(dtype::from_f32<T>(dot + hD[i] * xv));
                const float v = y * silu<T>(zr[i]);
                if (q == 0) {
                    a.v[c] = v;
                    red[32 + i * kItemRows + row] = v * v;
                }
            }
            consumers_sync();
            if (tid < kPassItems && it0 + tid * static_cast<int64_t>(gridDim.x) < n_item) {
                float ss = 0.0f;
#pragma unroll
                for (int r = 0; r < kItemRows; ++r) ss += red[32 + tid * kItemRows + r];
                a.ssq[it0 + tid * static_cast<int64_t>(gridDim.x)] = ss;
            }
            consumers_sync();  // red and bc stay until every thread is done with them
        }
        stamp(a, l, 4);
        grid_sync(a.sync);
        stamp(a, l, 5);

        // ---- stage C: the gated norm into vec; r += act(vec · W_outᵀ); conv state shifted ----
        // The block's out_proj rows of the residual (the embedding's before layer 0), loaded
        // with the gate's inputs so that out_proj's epilogue does not wait for them.
        for (int64_t i = tid; i < plan.out.r1 - plan.out.r0 && i < kResRows; i += kConsumers) {
            const int64_t r = plan.out.r0 + i;
            red[kResAt + i] = l == 0 ? dtype::to_f32(emb_row[r]) : __ldcg(a.residual + r);
        }
        gate_into<T>(a, L.gate_norm, vec, red);
        for (int64_t c = blockIdx.x * static_cast<int64_t>(kConsumers) + tid; c < conv_dim;
             c += static_cast<int64_t>(kConsumers) * gridDim.x) {
            for (int k = 0; k + 1 < W - 1; ++k)
                cst[k * conv_dim + c] = __ldcg(cst + (k + 1) * conv_dim + c);
            cst[(W - 2) * conv_dim + c] = ld_cg(zx + E + c);
        }
        stamp(a, l, 6);
        gemv<T>(plan.out, E, g_out, ring, full, empty, issued, n_slot, vec,
                [&](int64_t r, float y) {
                    if (L.out_proj_bias) y += L.out_proj_bias[r];
                    const float h = dtype::to_f32(dtype::from_f32<T>(y));
                    const int64_t i = r - plan.out.r0;
                    const float prev = i < kResRows ? red[kResAt + i]
                                       : l == 0     ? dtype::to_f32(emb_row[r])
                                                    : __ldcg(a.residual + r);
                    a.residual[r] = prev + h;
                });
        stamp(a, l, 7);
        grid_sync(a.sync);
    }

    // ---- stage F: logits = norm_f(residual) · W_headᵀ ----
    stamp(a, a.n_layer, 0);
    norm_into<T>(a, emb_row, a.n_layer == 0, a.norm_f, vec, red);
    stamp(a, a.n_layer, 1);
    gemv<T>(plan.head, D, static_cast<uint32_t>(a.n_layer) * plan.per_layer, ring, full, empty,
            issued, n_slot, vec, [&](int64_t r, float y) { a.logits[r] = y; });
    stamp(a, a.n_layer, 2);
#endif
}

// Ring slots that fit the device's shared memory (at most kMaxSlots), or 0.
int ring_slots() {
    int dev = 0, optin = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
    DUALITY_CUDA_CHECK(
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    for (int n = kMaxSlots; n >= 4; --n)
        if (smem_bytes(n) <= static_cast<size_t>(optin)) return n;
    return 0;
}

bool aligned16(const void* p) {
    return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

template <typename T, int N>
void launch(const DecodeStackArgs& a, cudaStream_t stream) {
    const int n_slot = ring_slots();
    const size_t smem = smem_bytes(n_slot);
    auto* kernel = decode_stack_kernel<T, N>;
    ensure_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
    kernel<<<decode_stack_grid(a.blocks), kThreads, smem, stream>>>(a, n_slot);
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace

int decode_stack_grid(int blocks) {
    int dev = 0, sms = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
    DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return blocks >= 1 && blocks < sms ? blocks : sms;
}

size_t decode_stack_sync_bytes() {
    return 2 * sizeof(uint32_t);
}

bool decode_stack_available() {
    if (!pdl::runs_sm90_code() || ring_slots() == 0) return false;
    // One block per SM must fit (the grid is at most the SM count, all resident).
    auto* kernel = decode_stack_kernel<__nv_bfloat16, 128>;
    return resident_blocks(reinterpret_cast<const void*>(kernel), kThreads,
                           smem_bytes(ring_slots())) >= 1;
}

bool decode_stack_supported(const DecodeStackArgs& a, std::span<const DeviceLayer> layers,
                            DType act, DType state_dtype) {
    if ((act != DType::kBF16 && act != DType::kF16) || state_dtype != DType::kF32) return false;
    if (!decode_stack_available()) return false;
    if (a.d_state != 64 && a.d_state != 128 && a.d_state != 256) return false;
    if (a.head_dim <= 0 || a.head_dim % kItemRows != 0 || a.n_group <= 0 ||
        a.n_head % a.n_group != 0 || a.n_group > kMaxGroups)
        return false;
    if (a.d_conv < 2 || a.d_conv > 4 || a.d_model % 8 != 0 || a.d_inner % 8 != 0) return false;
    if (a.d_model * 2 > kSlotBytes || a.d_inner * 2 > kSlotBytes) return false;
    if (2 * a.n_group * a.d_state * 4 > kVecBytes) return false;
    // The float4 accesses: norm weights, residual, v, the SSM state and its slot stride.
    if (!aligned16(a.norm_f) || !aligned16(a.residual) || !aligned16(a.v) ||
        !aligned16(a.ssm_state) || a.ssm_slot_stride % 4 != 0)
        return false;
    if (!aligned16(a.head) || !aligned16(a.embedding) ||
        static_cast<int64_t>(layers.size()) != a.n_layer)
        return false;
    for (const DeviceLayer& L : layers) {
        if (!aligned16(L.in_proj) || !aligned16(L.out_proj) || !aligned16(L.norm) ||
            !aligned16(L.gate_norm) || !L.norm || !L.conv_weight || !L.dt_bias || !L.A ||
            !L.gate_norm)
            return false;
    }
    return true;
}

void decode_stack(const DecodeStackArgs& a, DType act, cudaStream_t stream) {
    DUALITY_DISPATCH_FLOAT("decode_stack", act, T, {
        if constexpr (std::is_same_v<T, float>) {
            std::fprintf(stderr, "duality: internal error: decode_stack takes f16/bf16 only\n");
            std::abort();
        } else if (a.d_state == 64) {
            launch<T, 64>(a, stream);
        } else if (a.d_state == 128) {
            launch<T, 128>(a, stream);
        } else {
            launch<T, 256>(a, stream);
        }
    });
}

}  // namespace duality::cuda
