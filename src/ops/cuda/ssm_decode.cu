// The SSM decode step (spec 8.3) for a batch of single-token sequences, state in place:
//   Δ  = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max)        (threshold-20 softplus)
//   dA = exp(A_h Δ)
//   S  = dA · S + Δ · x ⊗ B_g          S {head_dim, d_state} per (sequence, head), g = h / (H/G)
//   y  = S · C_g + D_h · x             (the updated S; D may be nullptr)
// Math in f32; the state is read in state_dtype (f32, f16 or bf16), updated in f32 and written
// back rounded to nearest even; y uses the f32 update (before that rounding).
//
// Parallelization (bandwidth-bound on the state): grid (head_dim blocks, n_head, n_seq); a block
// is 4 warps and each warp owns R = 4 consecutive rows p of one head's state. A lane holds
// NPL = d_state / 32 elements of each row, as J = NPL / VEC vectors of VEC = min(NPL, 4)
// elements interleaved across the warp (element n = j·32·VEC + lane·VEC + v), so every load
// instruction of the warp reads one contiguous 32·VEC-element span of a row (16-byte f32
// accesses for d_state ≥ 128). All R·J state vectors (and the lane's B and C) are loaded before
// any math, to keep many loads in flight; the state moves with the streaming cache hint (it is
// touched once per step; measured 2% faster at batch 64 on an H200 than plain accesses, where
// R = 2 and R = 8 were 10% slower). y[p] is a warp-shuffle sum written by lane 0.
// d_state not in {64, 128, 256}, or unaligned pointers/strides, take a scalar fallback kernel
// (one warp per row, lanes strided over d_state).
// Hopper (sm_90 code on the device), f32 state, d_state 64/128, a state block of at most 40 KB and
// at least 48 sequences: ssm_decode_bulk_kernel, blocks of 4 warps per (sequence, head, part of
// the head's rows), move their rows of the state with one bulk copy (cp.async.bulk, the TMA
// engine) into shared memory and one back, updating them in place in shared memory in between
// (DUALITY_SSM_DECODE_BULK=0: never). Alone it is no faster (2.7b batch 64: 87.7 against 85.5 µs,
// 3.8 TB/s), but whole batch-64 steps are 2.3% faster with it (8.260 against 8.452 ms, H200),
// presumably from how its fewer, longer blocks share the SMs with the overlapping z GEMM and
// the PDL-launched neighbours (not profiled). A device copy of the same bytes takes 81.8 µs
// (StateStreamTiming). Each head's rows are split over kBulkParts = 4 blocks where whole rows per
// warp allow (DUALITY_SSM_DECODE_BULK_PARTS=1|2|4 overrides): a quarter of the serial copy-in,
// update, copy-out per block, and more blocks resident per SM (0.3-0.5% off a 2.7b batch-64 step).
//
// Both the vector and the bulk kernel read their first sequence's state before pdl::wait() (an
// early read, core/cuda/pdl.cuh: the caller's kernel in front, conv1d in a model or the in_proj
// product's conv form in batch-1 passes with the GEMV epilogues, must not write the state), so it
// streams in while that kernel finishes; DUALITY_PDL_EARLY=0 reads it after the wait.
//
// With an SsdGate (bf16 only, head_dim % 16 == 0, the vector and bulk kernels: template flag
// kGate) the epilogue is the gated norm's first half, as in ssd_fused: lane 0 of a row's warp
// stores v·w with v = y·silu(z) from the f32 y, and puts v² in shared memory; after a block
// barrier one thread per 16 rows adds them in row order into ssq {n_seq, n_head, head_dim / 16}.
// z and w are loaded with the other inputs, before any math. A model using it (opt-in,
// DUALITY_DECODE_GATE=1) skips the separate gated norm but must have z before the step, which
// cost more than it saved on the 2.7b (docs/architecture.md, "Decode step overlap").
//
// Limits: batch.n_tokens == batch.n_seq (sequence s reads token row s); n_head % n_group == 0;
// the slots of one batch distinct except a scratch slot nobody reads; act and state dtype f32,
// f16 or bf16; n_seq beyond 65535 is walked by a grid-stride loop.
#include <cstdlib>
#include <type_traits>

#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "core/cuda/sync.cuh"
#include "core/env.h"
#include "ops/cuda/activation.cuh"
#include "ops/cuda/dt_softplus.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"
#include "ops/cuda/reduce.cuh"

namespace duality::cuda {
namespace {

constexpr int kWarps = 4;             // warps per block
constexpr int kRowsPerWarp = 4;       // R
constexpr int64_t kBulkMinSeqs = 48;  // the bulk kernel from this batch size up (see below)
// The bulk kernel's default blocks per head (a quarter of the rows each). H200, 2026-12-02, A/B in
// one run, two runs each: 2.7b batch 64 8.223-8.224 ms against 8.249-8.262 ms with whole heads
// (2 blocks: 8.235-8.248), the 130m 1.148-1.190 against 1.197-1.207 ms.
constexpr int kBulkParts = 4;
constexpr int kGateRows = 16;  // rows (channels of a head) per partial sum of the gate

// The per-(sequence, head) scalars of the step.
struct HeadStep {
    float dt, dA, D;
};

template <typename T>
__device__ __forceinline__ HeadStep head_step(const SsdArgs& a, const RawDt& d, int64_t s,
                                              int64_t h) {
    const T* raw = static_cast<const T*>(d.dt_raw);
    HeadStep r;
    r.dt = dt_clamped_softplus(dtype::to_f32(raw[s * d.raw_stride + h]) + d.dt_bias[h], d.dt_min,
                               d.dt_max);
    r.dA = expf(a.A[h] * r.dt);
    r.D = a.D ? a.D[h] : 0.0f;
    return r;
}

template <typename T, typename S, int NPL, bool kGate>
__global__ void __launch_bounds__(kWarps * 32)
    ssm_decode_kernel(SsdArgs a, RawDt d, SsdGate gate, bool early) {
    static_assert(!kGate || kWarps * kRowsPerWarp == kGateRows, "a block's rows are one part");
    [[maybe_unused]] __shared__ float s_sq[kGate ? kGateRows : 1];  // v² of the block's rows
    constexpr int VEC = NPL < 4 ? NPL : 4, J = NPL / VEC, R = kRowsPerWarp;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t H = a.n_head, P = a.head_dim, N = a.d_state;
    const int64_t h = blockIdx.y, g = h / (H / a.n_group);
    const int64_t p0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * R;
    const int64_t s0 = blockIdx.z;
    // The warp's R rows of sequence s's state.
    const auto rows_of = [&](int64_t s) {
        return static_cast<S*>(a.state) +
               static_cast<int64_t>(a.batch.slots[s]) * a.state_slot_stride + (h * P + p0) * N;
    };
    float sv[R][J][VEC];
    const auto load_rows = [&](const S* st) {
#pragma unroll
        for (int r = 0; r < R; ++r)
            if (p0 + r < P)
#pragma unroll
                for (int j = 0; j < J; ++j)
                    dtype::load<VEC, dtype::Cache::kStream>(st + r * N + j * 32 * VEC + lane * VEC,
                                                            sv[r][j]);
    };
    // The first sequence's state streams in while the kernel in front finishes (an early read,
    // core/cuda/pdl.cuh: the kernel in front does not write the state).
    if (early && p0 < P && s0 < a.batch.n_seq) load_rows(rows_of(s0));
    pdl::wait();  // before any other global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    if (p0 >= P) return;  // whole warps only
    const T* x = static_cast<const T*>(a.x);
    const T* B = static_cast<const T*>(a.B);
    const T* C = static_cast<const T*>(a.C);
    T* y = static_cast<T*>(a.y);

    for (int64_t s = s0; s < a.batch.n_seq; s += gridDim.z) {
        S* st = rows_of(s);
        // Issue every load first: the R rows of state (unless read early), then B, C and x.
        if (!early || s != s0) load_rows(st);
        float bv[J][VEC], cv[J][VEC];
        const int64_t bc = s * a.bc_stride + g * N;
#pragma unroll
        for (int j = 0; j < J; ++j) {
            dtype::load<VEC>(B + bc + j * 32 * VEC + lane * VEC, bv[j]);
            dtype::load<VEC>(C + bc + j * 32 * VEC + lane * VEC, cv[j]);
        }
        float xv[R];
#pragma unroll
        for (int r = 0; r < R; ++r)
            xv[r] = p0 + r < P ? dtype::to_f32(x[s * a.x_stride + h * P + p0 + r]) : 0.0f;
        [[maybe_unused]] float zv[R], wv[R];  // kGate: z and the norm weight of the rows
        if constexpr (kGate) {
            const T* z = static_cast<const T*>(gate.z) + s * gate.z_stride + h * P + p0;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                zv[r] = dtype::to_f32(z[r]);
                wv[r] = gate.w[h * P + p0 + r];
            }
        }
        const HeadStep k = head_step<T>(a, d, s, h);

#pragma unroll
        for (int r = 0; r < R; ++r) {
            if (p0 + r >= P) break;  // uniform across the warp
            const float dtx = k.dt * xv[r];
            float dot = 0.0f;
#pragma unroll
            for (int j = 0; j < J; ++j) {
#pragma unroll
                for (int v = 0; v < VEC; ++v) {
                    const float nv = sv[r][j][v] * k.dA + dtx * bv[j][v];
                    sv[r][j][v] = nv;
                    dot += nv * cv[j][v];
                }
                dtype::store<VEC, dtype::Cache::kStream>(st + r * N + j * 32 * VEC + lane * VEC,
                                                         sv[r][j]);
            }
            dot = reduce::warp_sum(dot);
            if (lane == 0) {
                float v = dot + k.D * xv[r];
                if constexpr (kGate) {
                    v *= silu<T>(zv[r]);
                    s_sq[warp * R + r] = v * v;
                    v *= wv[r];
                }
                y[s * H * P + h * P + p0 + r] = dtype::from_f32<T>(v);
            }
        }
        if constexpr (kGate) {  // every warp of the block is here: head_dim % 16 == 0
            __syncthreads();
            if (threadIdx.x == 0) {
                float ss = 0.0f;
#pragma unroll
                for (int i = 0; i < kGateRows; ++i) ss += s_sq[i];
                gate.ssq[(s * H + h) * (P / kGateRows) + blockIdx.x] = ss;
            }
            __syncthreads();  // s_sq is free for the next sequence
        }
    }
}

// One (sequence, head) per block, or with parts > 1 one (sequence, head, part): the block's rows
// of the state {head_dim / parts, N} f32 come in by one bulk copy completing on an mbarrier, each
// warp updates rows w, w + 4, ... in shared memory (a lane holds VEC = N / 32 consecutive
// elements of a row, so a warp reads one row per access, conflict-free), and one bulk copy writes
// them back; the block waits until the copy has read shared memory before it exits. More parts:
// smaller, shorter blocks, more of them per SM (kBulkParts).
template <typename T, int N, bool kGate>
__global__ void __launch_bounds__(kWarps * 32)
    ssm_decode_bulk_kernel(SsdArgs a, RawDt d, SsdGate gate, int parts, bool early) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ < 900
    pdl::wait();  // (no bulk copies before sm_90: the host never launches this there)
#else
    constexpr int VEC = N / 32;
    extern __shared__ __align__(128) unsigned char smem_raw[];
    __shared__ __align__(8) uint64_t full;  // the mbarrier of the incoming copy
    __shared__ float xs[128];               // x of this head (head_dim <= 128)
    // kGate: silu(z) and the norm weight of the head's rows, then v² per row.
    [[maybe_unused]] __shared__ float gz[kGate ? 128 : 1], gw[kGate ? 128 : 1],
        s_sq[kGate ? 128 : 1];
    float* st_s = reinterpret_cast<float*>(smem_raw);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    // This block's rows of head h: [p0, p0 + P), P = head_dim / parts.
    const int64_t H = a.n_head, P = a.head_dim / parts;
    const int64_t h = blockIdx.x / parts, g = h / (H / a.n_group);
    const int64_t part = blockIdx.x % parts, p0 = part * P;
    const uint32_t bytes = static_cast<uint32_t>(P * N * 4);
    const uint32_t dst = sync::smem_addr(st_s);
    const T* x = static_cast<const T*>(a.x);
    const T* B = static_cast<const T*>(a.B);
    const T* C = static_cast<const T*>(a.C);
    T* y = static_cast<T*>(a.y);
    const int64_t s0 = blockIdx.y;
    // The block's rows of sequence s's state.
    const auto rows_of = [&](int64_t s) {
        return static_cast<float*>(a.state) +
               static_cast<int64_t>(a.batch.slots[s]) * a.state_slot_stride +
               (h * a.head_dim + p0) * N;
    };
    if (threadIdx.x == 0) {
        sync::mbar_init(&full);
        sync::mbar_init_fence();
        // The first sequence's state streams in while the kernel in front finishes (an early
        // read, core/cuda/pdl.cuh: the kernel in front does not write the state).
        if (early && s0 < a.batch.n_seq) sync::bulk_load(st_s, rows_of(s0), bytes, &full);
    }
    pdl::wait();  // before any other global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    uint32_t phase = 0;
    for (int64_t s = s0; s < a.batch.n_seq; s += gridDim.y) {
        float* st = rows_of(s);
        if (threadIdx.x == 0 && (!early || s != s0)) sync::bulk_load(st_s, st, bytes, &full);
        // Meanwhile: this sequence's B, C, x and step scalars.
        float bv[VEC], cv[VEC];
        const int64_t bc = s * a.bc_stride + g * N + lane * VEC;
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
            bv[v] = dtype::to_f32(B[bc + v]);
            cv[v] = dtype::to_f32(C[bc + v]);
        }
        const int64_t c0 = h * a.head_dim + p0;  // the block's first channel of d_inner
        for (int64_t p = threadIdx.x; p < P; p += blockDim.x) {
            xs[p] = dtype::to_f32(x[s * a.x_stride + c0 + p]);
            if constexpr (kGate) {
                gz[p] = silu<T>(
                    dtype::to_f32(static_cast<const T*>(gate.z)[s * gate.z_stride + c0 + p]));
                gw[p] = gate.w[c0 + p];
            }
        }
        const HeadStep k = head_step<T>(a, d, s, h);
        __syncthreads();  // xs (and the mbarrier's init) for every thread
        sync::mbar_wait(&full, phase);
        phase ^= 1;
        for (int64_t p = warp; p < P; p += kWarps) {
            float* row = st_s + p * N + lane * VEC;
            float sv[VEC];
#pragma unroll
            for (int v = 0; v < VEC; ++v) sv[v] = row[v];
            const float dtx = k.dt * xs[p];
            float dot = 0.0f;
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
                sv[v] = sv[v] * k.dA + dtx * bv[v];
                dot += sv[v] * cv[v];
            }
#pragma unroll
            for (int v = 0; v < VEC; ++v) row[v] = sv[v];
            dot = reduce::warp_sum(dot);
            if (lane == 0) {
                float v = dot + k.D * xs[p];
                if constexpr (kGate) {
                    v *= gz[p];
                    s_sq[p] = v * v;
                    v *= gw[p];
                }
                y[s * H * a.head_dim + c0 + p] = dtype::from_f32<T>(v);
            }
        }
        // The generic-proxy writes must be visible to the bulk copy (the async proxy).
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        __syncthreads();
        if constexpr (kGate) {  // one thread per 16 rows, in row order (as the vector kernel)
            if (threadIdx.x < P / kGateRows) {
                float ss = 0.0f;
#pragma unroll
                for (int i = 0; i < kGateRows; ++i) ss += s_sq[threadIdx.x * kGateRows + i];
                gate.ssq[(s * H + h) * (a.head_dim / kGateRows) + p0 / kGateRows + threadIdx.x] =
                    ss;
            }
        }
        if (threadIdx.x == 0) {
            asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(st),
                         "r"(dst), "r"(bytes)
                         : "memory");
            asm volatile("cp.async.bulk.commit_group;" ::: "memory");
            asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
        }
        __syncthreads();  // shared memory is free for the next sequence's copy
    }
#endif
}

// Whether the device runs this library's sm_90 code and DUALITY_SSM_DECODE_BULK is not "0".
bool bulk_enabled() {
    static const bool on = !env_is("DUALITY_SSM_DECODE_BULK", "0") && pdl::runs_sm90_code();
    return on;
}

// Any d_state and alignment: one warp per row, lanes strided over d_state, scalar accesses.
template <typename T, typename S>
__global__ void __launch_bounds__(kWarps * 32) ssm_decode_generic_kernel(SsdArgs a, RawDt d) {
    pdl::wait();  // before any global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t H = a.n_head, P = a.head_dim, N = a.d_state;
    const int64_t h = blockIdx.y, g = h / (H / a.n_group);
    const int64_t p = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
    if (p >= P) return;
    const T* x = static_cast<const T*>(a.x);
    const T* B = static_cast<const T*>(a.B);
    const T* C = static_cast<const T*>(a.C);
    T* y = static_cast<T*>(a.y);
    for (int64_t s = blockIdx.z; s < a.batch.n_seq; s += gridDim.z) {
        S* st = static_cast<S*>(a.state) +
                static_cast<int64_t>(a.batch.slots[s]) * a.state_slot_stride + (h * P + p) * N;
        const HeadStep k = head_step<T>(a, d, s, h);
        const float xv = dtype::to_f32(x[s * a.x_stride + h * P + p]);
        const float dtx = k.dt * xv;
        const int64_t bc = s * a.bc_stride + g * N;
        float dot = 0.0f;
        for (int64_t n = lane; n < N; n += 32) {
            const float nv = dtype::to_f32(st[n]) * k.dA + dtx * dtype::to_f32(B[bc + n]);
            st[n] = dtype::from_f32<S>(nv);
            dot += nv * dtype::to_f32(C[bc + n]);
        }
        dot = reduce::warp_sum(dot);
        if (lane == 0) y[s * H * P + h * P + p] = dtype::from_f32<T>(dot + k.D * xv);
    }
}

// The vector kernels' alignment: state, B and C in VEC-element vectors.
template <typename T, typename S>
bool vector_aligned(const SsdArgs& a) {
    const int64_t vec = a.d_state >= 128 ? 4 : 2;  // VEC of the vector kernels (N = 64: 2)
    return a.state_slot_stride % vec == 0 && a.bc_stride % vec == 0 &&
           dtype::is_aligned(a.state, vec * sizeof(S)) && dtype::is_aligned(a.B, vec * sizeof(T)) &&
           dtype::is_aligned(a.C, vec * sizeof(T));
}

// The bulk kernel's blocks per head: `asked` if 1, 2 or 4, else DUALITY_SSM_DECODE_BULK_PARTS (1,
// 2 or 4; default kBulkParts), where each part keeps whole rows per warp (and, with a gate, whole
// 16-row partial sums); 1 otherwise.
int choose_bulk_parts(int asked, int64_t head_dim, bool gate) {
    static const int from_env = [] {
        const long long n = env_int("DUALITY_SSM_DECODE_BULK_PARTS", kBulkParts);
        return n == 1 || n == 2 || n == 4 ? static_cast<int>(n) : kBulkParts;
    }();
    const int parts = asked == 1 || asked == 2 || asked == 4 ? asked : from_env;
    const int64_t rows = head_dim / parts;
    const bool whole =
        head_dim % parts == 0 && rows % kWarps == 0 && (!gate || rows % kGateRows == 0);
    return whole ? parts : 1;
}

// The bulk kernel's blocks per head for this step, or 0 where it does not run: Hopper code, f32
// state, d_state 64/128, whole rows per warp, a head's state (with the kernel's static shared
// memory) within the 48 KB a block gets without opting in, 16-byte aligned state, at least
// kBulkMinSeqs sequences: with one block per (sequence, head) smaller batches leave too few
// blocks to hide a block's serial copy-in, update, copy-out (H200, 2.7b steps: batch 1 2.649
// against 2.223 ms, batch 8 3.307 against 3.016, batch 32 5.539 against 5.531, batch 64 8.260
// against 8.452). Measured with whole heads; with 4 blocks a head smaller batches may now gain:
// DUALITY_SSM_DECODE_BULK_MIN=N moves the threshold (to measure it).
int64_t bulk_min_seqs() {
    static const int64_t n = [] {
        const long long x = env_int("DUALITY_SSM_DECODE_BULK_MIN", 0);
        return x >= 1 ? static_cast<int64_t>(x) : kBulkMinSeqs;
    }();
    return n;
}

template <typename T>
int bulk_blocks_per_head(const SsdArgs& a, bool gate, int parts_asked) {
    const int64_t N = a.d_state, P = a.head_dim;
    const bool runs = a.state_dtype == DType::kF32 && (N == 64 || N == 128) && P <= 128 &&
                      P % kWarps == 0 && P * N * 4 <= 40 * 1024 &&
                      a.batch.n_seq >= bulk_min_seqs() && a.state_slot_stride % 4 == 0 &&
                      dtype::is_aligned(a.state, 16) && vector_aligned<T, float>(a) &&
                      bulk_enabled();
    return runs ? choose_bulk_parts(parts_asked, P, gate) : 0;
}

template <typename T, typename S, bool kGate>
void launch_ssm_decode(const SsdArgs& a, const RawDt& d, const SsdGate& gate, int parts_asked,
                       cudaStream_t stream) {
    const int64_t N = a.d_state;
    const unsigned seqs = static_cast<unsigned>(a.batch.n_seq < 65535 ? a.batch.n_seq : 65535);
    const unsigned heads = static_cast<unsigned>(a.n_head);
    const bool aligned = vector_aligned<T, S>(a);
    const bool early = pdl::early_reads();
    if constexpr (std::is_same_v<S, float>) {
        if (const int parts = bulk_blocks_per_head<T>(a, kGate, parts_asked); parts > 0) {
            const dim3 g(heads * static_cast<unsigned>(parts), seqs);
            const size_t smem = static_cast<size_t>(a.head_dim / parts * N * 4);
            if (N == 64)
                pdl::launch(ssm_decode_bulk_kernel<T, 64, kGate>, g, kWarps * 32, smem, stream, a,
                            d, gate, parts, early);
            else
                pdl::launch(ssm_decode_bulk_kernel<T, 128, kGate>, g, kWarps * 32, smem, stream, a,
                            d, gate, parts, early);
            DUALITY_CUDA_LAUNCH_CHECK();
            return;
        }
    }
    const int64_t rows_per_block = kWarps * kRowsPerWarp;
    const dim3 grid(static_cast<unsigned>((a.head_dim + rows_per_block - 1) / rows_per_block),
                    heads, seqs);
    if (aligned && N == 64)
        pdl::launch(ssm_decode_kernel<T, S, 2, kGate>, grid, kWarps * 32, 0, stream, a, d, gate,
                    early);
    else if (aligned && N == 128)
        pdl::launch(ssm_decode_kernel<T, S, 4, kGate>, grid, kWarps * 32, 0, stream, a, d, gate,
                    early);
    else if (aligned && N == 256)
        pdl::launch(ssm_decode_kernel<T, S, 8, kGate>, grid, kWarps * 32, 0, stream, a, d, gate,
                    early);
    else if constexpr (!kGate) {
        const dim3 g(static_cast<unsigned>((a.head_dim + kWarps - 1) / kWarps), heads, seqs);
        pdl::launch(ssm_decode_generic_kernel<T, S>, g, kWarps * 32, 0, stream, a, d);
    }
    DUALITY_CUDA_LAUNCH_CHECK();
}

[[noreturn]] void bad_args(const char* what) {
    std::fprintf(stderr, "duality: internal error: cuda::ssm_decode: %s\n", what);
    std::abort();
}

}  // namespace

int64_t ssm_decode_gate_parts(int64_t head_dim) {
    return head_dim / kGateRows;
}

bool ssm_decode_gate_supported(const SsdArgs& a, const SsdGate& gate, DType act) {
    if (act != DType::kBF16 || !gate.z || !gate.w || !gate.ssq) return false;
    if (a.head_dim % kGateRows != 0 || a.head_dim > 128) return false;
    if (a.d_state != 64 && a.d_state != 128 && a.d_state != 256) return false;
    bool aligned = false;
    DUALITY_DISPATCH_FLOAT("ssm_decode (state)", a.state_dtype, S,
                           { aligned = vector_aligned<__nv_bfloat16, S>(a); });
    return aligned;
}

int ssm_decode_bulk_parts(const SsdArgs& a, DType act, bool gate, int bulk_parts) {
    int parts = 0;
    DUALITY_DISPATCH_FLOAT("ssm_decode", act, T,
                           { parts = bulk_blocks_per_head<T>(a, gate, bulk_parts); });
    return parts;
}

void ssm_decode(const SsdArgs& a, const RawDt& dt, DType act, cudaStream_t stream,
                const SsdGate* gate, int bulk_parts) {
    if (a.batch.n_seq <= 0) return;
    if (a.batch.n_tokens != a.batch.n_seq) bad_args("needs one token per sequence");
    if (a.n_group <= 0 || a.n_head % a.n_group != 0) bad_args("n_head % n_group != 0");
    if (a.n_head > 65535) bad_args("n_head > 65535");
    if (gate) {
        if (!ssm_decode_gate_supported(a, *gate, act))
            bad_args("unsupported gate (see ssm_decode_gate_supported)");
        DUALITY_DISPATCH_FLOAT("ssm_decode (state)", a.state_dtype, S, {
            launch_ssm_decode<__nv_bfloat16, S, true>(a, dt, *gate, bulk_parts, stream);
        });
        return;
    }
    DUALITY_DISPATCH_FLOAT("ssm_decode", act, T, {
        DUALITY_DISPATCH_FLOAT("ssm_decode (state)", a.state_dtype, S, {
            launch_ssm_decode<T, S, false>(a, dt, SsdGate{}, bulk_parts, stream);
        });
    });
}

}  // namespace duality::cuda
