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
//
// Parallelization: one block per SM (grid = the SM count, all resident), 8 consumer warps and one
// producer warp. The producer streams the block's rows of every weight matrix, in the order the
// stages use them (in_proj and out_proj of layer 0, 1, ..., then the LM head), into a ring of
// shared-memory slots with bulk copies (cp.async.bulk, completing on the slot's "full" mbarrier),
// and refills a slot once its consumer warp has arrived on its "empty" mbarrier. It runs ahead
// of the consumers by the ring's size (200 KB on Hopper) and never waits for a grid barrier, so
// HBM keeps streaming weights while the consumers sit in the latency-bound parts (the SSM step,
// the norms, the grid barriers). A matrix's rows are split evenly over the blocks; a block's rows
// are cut into pieces of as many whole rows as fit a 20 KB slot, and consumer warp w takes the
// pieces w, w + 8, ... of each matrix (a GEMV piece: lanes over k in 16-byte vectors, a warp sum
// per row). The stages are separated by grid barriers (a counter and a generation word; 3 per
// layer). Stage B: one item per (head, 16 rows of head_dim), the block's items one after another
// (16 threads per row, d_state / 16 state elements per thread); each block first convolves all
// B and C channels into shared memory. The cross-block data (zxbcdt, v, the partial sums, the
// residual, the states) is read with ld.global.cg, never from a stale L1 line.
//
// Numerics: as the kernel chain it replaces, the intermediate vectors are rounded to the
// activation dtype where that chain stores them (u, zxbcdt, the conv output, y, the gated-norm
// output, out_proj's output before it joins the f32 residual); sums are f32 in a fixed order, so
// results are deterministic. State f32 only.
//
// Limits (decode_stack_supported): Hopper code (sm_90: bulk copies, mbarriers), f16/bf16
// activations, f32 state, head_dim a multiple of 16, d_state 64/128/256, d_conv 2-4, at most 64
// norm groups, rows of at most 20 KB (d_model, d_inner <= 10240), 2·n_group·d_state <= 5120,
// 16-byte aligned matrices. One launch at a time per sync buffer.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "core/cuda/prefetch.cuh"
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
constexpr int kRedFloats = 128;       // [0, 8) sums, [32, 48) item rows, [64, 128) group scales
constexpr int kItemRows = 16;         // stage B: rows of head_dim per item
constexpr int kMaxGroups = 64;

size_t smem_bytes(int n_slot) {
    return static_cast<size_t>(n_slot) * kSlotBytes + kVecBytes + kRedFloats * 4 +
           2 * static_cast<size_t>(n_slot) * 8;
}

// The device code below is Hopper's (sm_90 and later); the compute_80 pass compiles an empty
// kernel, which decode_stack_supported never lets run.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
// ---- mbarriers and bulk copies ----------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
    uint32_t done = 0;
    while (!done)
        asm volatile(
            "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; "
            "selp.u32 %0, 1, 0, p; }"
            : "=r"(done)
            : "r"(smem_addr(bar)), "r"(parity)
            : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
// Global [src, src + bytes) into shared dst; completes `bytes` of bar's transaction count.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes,
                                          uint64_t* bar) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
                 "r"(bytes)
                 : "memory");
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
            "r"(smem_addr(dst)),
        "l"(src), "r"(bytes), "r"(smem_addr(bar))
        : "memory");
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

// All consumers of all blocks: sync[0] counts arrivals, sync[1] is the generation. The last block
// to arrive resets the count and bumps the generation, so the words are ready for the next
// barrier and the next launch. Writes before the barrier are visible after it (the fences of
// cooperative groups' grid sync: bar.sync, then one thread's fence + atomic; acquire on exit).
__device__ __forceinline__ void grid_sync(uint32_t* sync) {
    consumers_sync();
    if (threadIdx.x == 0) {
        volatile uint32_t* gen_p = sync + 1;
        const uint32_t gen = *gen_p;
        __threadfence();
        if (atomicAdd(sync, 1u) == gridDim.x - 1) {
            atomicExch(sync, 0u);
            __threadfence();
            atomicAdd(sync + 1, 1u);
        } else {
            uint32_t now = gen;
            while (now == gen)
                asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(now) : "l"(gen_p));
        }
        __threadfence();
    }
    consumers_sync();
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
    s.rpp = static_cast<int>(kSlotBytes / row_bytes);
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

// The producer: one lane issues every piece of the block in stage order (global piece index g:
// slot g % n_slot, its (g / n_slot)-th fill).
__device__ void produce(const DecodeStackArgs& a, const Plan& plan, unsigned char* ring,
                        uint64_t* full, uint64_t* empty, int n_slot) {
    uint32_t g = 0;
    auto issue = [&](const void* w, int64_t k, const Span& sp) {
        const int64_t row_bytes = k * 2;
        for (int p = 0; p < sp.pieces; ++p, ++g) {
            const uint32_t slot = g % n_slot, round = g / n_slot;
            if (round > 0) mbar_wait(empty + slot, (round - 1) & 1);
            const int64_t r = sp.r0 + static_cast<int64_t>(p) * sp.rpp;
            const int64_t rows = sp.r1 - r < sp.rpp ? sp.r1 - r : sp.rpp;
            bulk_load(ring + static_cast<size_t>(slot) * kSlotBytes,
                      static_cast<const char*>(w) + r * row_bytes,
                      static_cast<uint32_t>(rows * row_bytes), full + slot);
        }
    };
    for (int64_t l = 0; l < a.n_layer; ++l) {
        issue(a.layers[l].in_proj, a.d_model, plan.in);
        issue(a.layers[l].out_proj, a.d_inner, plan.out);
    }
    issue(a.head, a.d_model, plan.head);
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
                                     int n_slot, const T* vec, Epi epi) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t row_bytes = k * 2;
    for (int p = warp; p < sp.pieces; p += kConsumerWarps) {
        const uint32_t g = g_base + static_cast<uint32_t>(p), slot = g % n_slot;
        const int64_t r = sp.r0 + static_cast<int64_t>(p) * sp.rpp;
        const int rows = static_cast<int>(sp.r1 - r < sp.rpp ? sp.r1 - r : sp.rpp);
        const unsigned char* w = ring + static_cast<size_t>(slot) * kSlotBytes;
        mbar_wait(full + slot, (g / n_slot) & 1);
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
        if (lane == 0) mbar_arrive(empty + slot);
    }
}

// vec = act(x · rsqrt(mean(x²) + eps) · w) over d_model, x the residual stream (the embedding row
// before layer 0).
template <typename T>
__device__ __forceinline__ void norm_into(const DecodeStackArgs& a, const T* emb_row, bool first,
                                          const float* w, T* vec, float* red) {
    const int64_t D = a.d_model;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < D; i += kConsumers) {
        const float x = first ? dtype::to_f32(emb_row[i]) : __ldcg(a.residual + i);
        ss += x * x;
    }
    const float r = rsqrtf(consumers_sum(ss, red) / static_cast<float>(D) + a.eps);
    for (int64_t i = threadIdx.x; i < D; i += kConsumers) {
        const float x = first ? dtype::to_f32(emb_row[i]) : __ldcg(a.residual + i);
        vec[i] = dtype::from_f32<T>(x * r * w[i]);
    }
    consumers_sync();
}

// silu(conv1d) of conv channel c for this step: the W-1 older raw rows from the conv state
// (oldest first), the new raw row from zxbcdt (xBC starts at column d_inner); rounded to act.
template <typename T>
__device__ __forceinline__ float conv_out(const DecodeStackArgs& a, const StackLayer& L,
                                          const float* cst, int64_t conv_dim, const T* zx,
                                          int64_t c) {
    const int W = static_cast<int>(a.d_conv);
    float acc = L.conv_bias ? L.conv_bias[c] : 0.0f;
    for (int k = 0; k < W - 1; ++k)
        acc = fmaf(L.conv_weight[c * W + k], __ldcg(cst + k * conv_dim + c), acc);
    acc = fmaf(L.conv_weight[c * W + W - 1], dtype::to_f32(__ldcg(zx + a.d_inner + c)), acc);
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
    if (threadIdx.x == 0) {
        for (int i = 0; i < n_slot; ++i) {
            mbar_init(full + i, 1);
            mbar_init(empty + i, 1);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    const Plan plan = plan_of(a);
    if (threadIdx.x >= kConsumers) {
        if (threadIdx.x == kConsumers) produce(a, plan, ring, full, empty, n_slot);
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
    const int64_t group_size = E / G, items_per_group = group_size / kItemRows;
    // Stage B's thread layout: 16 threads per row of an item, EPT state elements each.
    constexpr int kTpr = kConsumers / kItemRows, EPT = N / kTpr;
    static_assert(EPT % 4 == 0, "16-byte state accesses");
    const int row = tid / kTpr, q = tid % kTpr;

    for (int64_t l = 0; l < a.n_layer; ++l) {
        const StackLayer& L = a.layers[l];
        float* cst = a.conv_state + slot * a.conv_slot_stride + l * (W - 1) * conv_dim;
        float* sst = a.ssm_state + slot * a.ssm_slot_stride + l * H * P * N;
        const uint32_t g_in = static_cast<uint32_t>(l) * plan.per_layer;
        const uint32_t g_out = g_in + static_cast<uint32_t>(plan.in.pieces);

        // ---- stage A: u = norm(residual); zxbcdt = u · W_inᵀ ----
        // Stage B's state rows of this block, into L2 meanwhile (written by the previous step).
        for (int64_t it = blockIdx.x + static_cast<int64_t>(tid) * gridDim.x; it < n_item;
             it += static_cast<int64_t>(kConsumers) * gridDim.x)
            prefetch_l2_bulk(sst + it * kItemRows * N, kItemRows * N * 4);
        norm_into<T>(a, emb_row, l == 0, L.norm, vec, red);
        gemv<T>(plan.in, D, g_in, ring, full, empty, n_slot, vec, [&](int64_t r, float y) {
            if (L.in_proj_bias) y += L.in_proj_bias[r];
            zx[r] = dtype::from_f32<T>(y);
        });
        grid_sync(a.sync);

        // ---- stage B: conv1d, the SSM step, v = y·silu(z) and Σ v² per item ----
        if (blockIdx.x < n_item) {
            for (int64_t c2 = tid; c2 < 2 * GN; c2 += kConsumers)
                bc[c2] = conv_out<T>(a, L, cst, conv_dim, zx, E + c2);
            consumers_sync();
        }
        for (int64_t it = blockIdx.x; it < n_item; it += gridDim.x) {
            const int64_t h = it / items_per_head, g = h / (H / G);
            const int64_t p = (it % items_per_head) * kItemRows + row, c = h * P + p;
            float* st = sst + (h * P + p) * N + q * EPT;
            float s[EPT];
#pragma unroll
            for (int j = 0; j < EPT; j += 4) {
                const float4 v4 = __ldcg(reinterpret_cast<const float4*>(st + j));
                s[j] = v4.x;
                s[j + 1] = v4.y;
                s[j + 2] = v4.z;
                s[j + 3] = v4.w;
            }
            const float xv = conv_out<T>(a, L, cst, conv_dim, zx, c);
            const float zv = dtype::to_f32(__ldcg(zx + c));
            const float dt = dt_clamped_softplus(
                dtype::to_f32(__ldcg(zx + E + conv_dim + h)) + L.dt_bias[h], a.dt_min, a.dt_max);
            const float dA = expf(L.A[h] * dt), dtx = dt * xv;
            const float* Bg = bc + g * N + q * EPT;
            const float* Cg = bc + GN + g * N + q * EPT;
            float dot = 0.0f;
#pragma unroll
            for (int j = 0; j < EPT; ++j) {
                s[j] = s[j] * dA + dtx * Bg[j];
                dot = fmaf(s[j], Cg[j], dot);
            }
#pragma unroll
            for (int j = 0; j < EPT; j += 4)
                __stcg(reinterpret_cast<float4*>(st + j),
                       make_float4(s[j], s[j + 1], s[j + 2], s[j + 3]));
#pragma unroll
            for (int o = kTpr / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
            const float y = dtype::to_f32(dtype::from_f32<T>(dot + (L.D ? L.D[h] : 0.0f) * xv));
            const float v = y * silu<T>(zv);
            if (q == 0) {
                a.v[c] = v;
                red[32 + row] = v * v;
            }
            consumers_sync();
            if (tid == 0) {
                float ss = 0.0f;
#pragma unroll
                for (int i = 0; i < kItemRows; ++i) ss += red[32 + i];
                a.ssq[it] = ss;
            }
            consumers_sync();  // red and bc stay until every thread is done with them
        }
        grid_sync(a.sync);

        // ---- stage C: the gated norm into vec; r += act(vec · W_outᵀ); conv state shifted ----
        if (tid < G) {
            float ss = 0.0f;
            for (int64_t i = 0; i < items_per_group; ++i)
                ss += __ldcg(a.ssq + tid * items_per_group + i);
            red[64 + tid] = rsqrtf(ss / static_cast<float>(group_size) + a.eps);
        }
        consumers_sync();
        for (int64_t c = tid; c < E; c += kConsumers)
            vec[c] =
                dtype::from_f32<T>(__ldcg(a.v + c) * red[64 + c / group_size] * L.gate_norm[c]);
        consumers_sync();
        for (int64_t c = blockIdx.x * static_cast<int64_t>(kConsumers) + tid; c < conv_dim;
             c += static_cast<int64_t>(kConsumers) * gridDim.x) {
            for (int k = 0; k + 1 < W - 1; ++k)
                cst[k * conv_dim + c] = __ldcg(cst + (k + 1) * conv_dim + c);
            cst[(W - 2) * conv_dim + c] = dtype::to_f32(__ldcg(zx + E + c));
        }
        gemv<T>(plan.out, E, g_out, ring, full, empty, n_slot, vec, [&](int64_t r, float y) {
            if (L.out_proj_bias) y += L.out_proj_bias[r];
            const float h = dtype::to_f32(dtype::from_f32<T>(y));
            const float prev = l == 0 ? dtype::to_f32(emb_row[r]) : __ldcg(a.residual + r);
            a.residual[r] = prev + h;
        });
        grid_sync(a.sync);
    }

    // ---- stage F: logits = norm_f(residual) · W_headᵀ ----
    norm_into<T>(a, emb_row, a.n_layer == 0, a.norm_f, vec, red);
    gemv<T>(plan.head, D, static_cast<uint32_t>(a.n_layer) * plan.per_layer, ring, full, empty,
            n_slot, vec, [&](int64_t r, float y) { a.logits[r] = y; });
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
    DUALITY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem)));
    int dev = 0, sms = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
    DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    kernel<<<sms, kThreads, smem, stream>>>(a, n_slot);
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace

size_t decode_stack_sync_bytes() {
    return 2 * sizeof(uint32_t);
}

bool decode_stack_available() {
    if (const char* env = std::getenv("DUALITY_DECODE_STACK"); env && std::strcmp(env, "0") == 0)
        return false;
    return pdl::runs_sm90_code() && ring_slots() > 0;
}

bool decode_stack_supported(const DecodeStackArgs& a, std::span<const StackLayer> layers, DType act,
                            DType state_dtype) {
    if ((act != DType::kBF16 && act != DType::kF16) || state_dtype != DType::kF32) return false;
    if (!decode_stack_available()) return false;
    if (a.d_state != 64 && a.d_state != 128 && a.d_state != 256) return false;
    if (a.head_dim <= 0 || a.head_dim % kItemRows != 0 || a.n_group <= 0 ||
        a.n_head % a.n_group != 0 || a.n_group > kMaxGroups)
        return false;
    if (a.d_conv < 2 || a.d_conv > 4 || a.d_model % 8 != 0 || a.d_inner % 8 != 0) return false;
    if (a.d_model * 2 > kSlotBytes || a.d_inner * 2 > kSlotBytes) return false;
    if (2 * a.n_group * a.d_state * 4 > kVecBytes) return false;
    if (!aligned16(a.head) || !aligned16(a.embedding) ||
        static_cast<int64_t>(layers.size()) != a.n_layer)
        return false;
    for (const StackLayer& L : layers) {
        if (!aligned16(L.in_proj) || !aligned16(L.out_proj) || !L.norm || !L.conv_weight ||
            !L.dt_bias || !L.A || !L.gate_norm)
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
