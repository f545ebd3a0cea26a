// ssd_fused: the whole chunked SSD prefill of a layer (spec 6.2) in ONE kernel launch over a
// packed varlen batch: chunk cumsum, chunk-local states, the state passing across chunks, C·Bᵀ,
// the intra- and inter-chunk outputs and the D skip. Same arguments and results as ssd_chunked
// (initial states from the slots, final states written back, rounded to the slot dtype).
//
// What the blocks compute, for one (chunk c, head h), g = h / (n_head / n_group), Q = chunk_size,
// i, j the chunk's tokens (0 <= j <= i < len), Scs the chunk-local inclusive cumsum of A_h·Δ:
//   local[p, n] = Σ_j x[j, p] · exp(min(Scs_last − Scs_j, 0)) · Δ_j · B[j, n]        (chunk state)
//   out         = exp(Scs_last) · prev + local        (prev = the state entering the chunk)
//   y[i, p]     = exp(Scs_i) · Σ_n C[i, n] · prev[p, n]                              (inter)
//               + Σ_{j<=i} (Σ_n C[i, n] B[j, n]) · exp(min(Scs_i − Scs_j, 0)) · Δ_j · x[j, p]
//               + D_h · x[i, p]
// Numerics (spec 9/14): Δ, Scs, every decay and every accumulator are f32. MMA operands are the
// activation dtype: x, B, C as given; x·(decay·Δ) for the chunk state, W = S·decay·Δ for the
// intra output and prev for the inter output are computed in f32 and rounded once, where S = C·Bᵀ
// has passed through the workspace as f16 scaled per 16×32 tile (11 bits relative to the
// tile's largest kept |S|: masked entries, j > i, are zeroed before the scale is taken). The
// states passed between chunks are f32 (a workspace of {entries, n_head} head_dim·d_state values,
// in fragment order: an entry per chunk, or where a batch has fewer than half as many sequences as
// chunks two per sequence in turn, so the states stay in L2; state_entries), or f16 with
// SsdArgs::passed_f16 (rounded once per chunk; |values| past 65504 become inf); the final state
// is computed in f32 and rounded once to the slot dtype.
//
// Parallelization: 8 warps a block, two kinds of block. A block takes a ticket (atomic counter)
// and works on item = ticket, chunk-major: chunk 0's n_group S blocks, then per chunk c the
// S blocks of chunk c + 1 and the n_head head blocks of chunk c (n_head / 2 with pairs of heads,
// below). So every block a block waits for took an earlier ticket and has started: the waits
// below cannot deadlock whatever order the hardware schedules blocks in; and a chunk's S is ready
// long before its head blocks need it.
//   S block (score_block, one per (chunk, group)): S = C·Bᵀ does not depend on the head, so it
//      is computed once per chunk and group: the causal 16×32 tiles of each 16-row strip, stored
//      f16 in the lane order of the MMA fragments, then a release flag.
//   Head block, one per (chunk c, head h):
//   1. cp.async x {Q, head_dim} and B {Q, d_state} (one group) of the chunk into shared memory
//      (rows past len zero-filled); meanwhile Δ and the cumsum (block scan). C {Q, d_state} (a
//      second group) is issued once x and B have landed, before step 2 (defer_c), so that the
//      load phase does not share the SM's fill bandwidth with it; it lands during steps 2 and 3.
//      With an SsdConv (ops.h; the gate's instantiation only) x arrives raw: its rows −3..len−1
//      load into the prev region (conv_x_load) and, once group 0 is in (before the cumsum), the
//      block computes silu(conv1d) of its head's channels into x's place (ConvX), so the model's
//      conv1d covers only B's and C's channels and x's conv output never goes through memory.
//      Chunks of at most 128 tokens.
//      With a RawDt (the gate's instantiation) Δ = clamp(softplus(dt_raw + dt_bias)) is computed
//      here from in_proj's raw dt columns, so the model's dt_softplus pass is saved.
//   2. Chunk state: warps split {head_dim, d_state} into 16×64 tiles, mma.sync m16n8k16 over the
//      chunk's tokens (xᵀ through ldmatrix.trans, scaled in registers), f32 accumulators kept in
//      registers.
//   3. State passing: wait (thread 0 spins with ld.acquire.gpu on flags == this launch's epoch)
//      for the chunk's S and for chunk c−1 of this head to have published its outgoing state
//      (early_s_wait, on for grids of one block per SM and at least 48 blocks per SM: warp 1
//      waits for S during step 1; measured faster only there, docs/ssd-fused-notes.md v11, v14);
//      copy the S tiles into B's region (dead now) while reading prev (the slot's state for a
//      sequence's first chunk); publish out = exp(Scs_last)·prev + local to the workspace (16-byte
//      vectors in fragment order, one round of loads where registers allow) and release a flag
//      after the barrier (or write the slot for a sequence's last chunk), keeping prev in shared
//      memory as an MMA operand. Only this step is serial across chunks: the chain from chunk to
//      chunk is one L2 round trip for the loads and one for the release.
//   4. Output: each warp owns 16-row strips of the chunk (snake order: strips w and 15−w, so the
//      causal work is balanced), holds its C rows as A fragments, computes C·prevᵀ, scales rows
//      by exp(Scs_i), then for each 32-token block j0 <= i: the S tile from shared memory,
//      W = S·decay·Δ masked (f32 → operand registers, the flash-attention P·V trick), y += W·x.
//      Adds D·x and stores y: through the strip's C rows (dead by then) as 16-byte row pieces,
//      where head_dim <= d_state and y is 16-byte aligned (y_stage). A pair of heads (below) on
//      sm_90a runs this step with warpgroup MMAs instead (wgmma.cuh): two warpgroups take 64-row
//      tiles, C·prevᵀ and W·x as m64n64k16 with C and W from registers and prev and x from shared
//      memory by descriptor (both in 128-byte swizzled rows), W of the next 32-token block built
//      while the current block's products run (docs/ssd-fused-notes.md, v24); so does the
//      two-blocks-per-SM instantiation at head_dim 64, d_state 128 (the models' chunk 128, with
//      or without the gate; C·prevᵀ in two groups of products for the 128-register cap; chunks
//      whose rows do not make 64-row tiles take one block per SM there: v26).
//      The decay exp(Scs_i − Scs_j) factors into exp(Scs_i − Scs_j0) (per row) times
//      exp(Scs_j0 − Scs_j)·Δ_j (per column, once per chunk) where the block's decay range allows
//      (at most e^32, Scs non-increasing), else one exponential per element. With an SsdGate
//      (ops.h) the store is the gated norm's first half instead: y·silu(z)·w and the row's sum of
//      squares per head (a quad shuffle). z is prefetched into L2 when the block starts and
//      copied (cp.async) into the strip's C rows, dead once the warp holds them as fragments,
//      while C·prevᵀ (z_early, DUALITY_SSD_Z_EARLY=0: not) and the intra loop run: loaded from
//      global memory in the epilogue, z cost 25% of the kernel's time (its loads waited behind
//      the y stores they might alias).
//   The last block to start resets the ticket counter and advances the epoch (every block reads
//   the epoch with its ticket, in one 64-bit atomic), so the sync buffer (ssd_fused_sync_bytes,
//   zeroed once, 8-byte aligned) needs no clearing between launches.
// Limits (else ssd_fused_supported() is false and callers use ssd_chunked): f16/bf16 activations,
// head_dim in {32, 64, 80, 128}, d_state in {64, 128, 256}, chunk_size <= 256, x/B/C 16-byte
// aligned with strides a multiple of 8 elements, and the shared memory (smem_bytes: C, x and prev
// rows, and B's rows or the S record, whichever is larger, which for d_state 64 at Q >= 128 is the
// S record: 197 KB for Q 256, head_dim 64, d_state 128; 157 KB with d_state 64) within the
// device's per-block limit — so head_dim 128 with d_state 128 needs Q <= 128 on Hopper, and
// Q 256 does not fit on A100 (nor, for d_state 64, with head_dim 80 or 128). d_state 256 runs
// one block per SM at Q <= 128 (head_dim <= 80; 185 KB at head_dim 64) or Q <= 64 (head_dim
// 128) on Hopper, the model choosing that chunk (ssd_fused_chunk).
// Chunks of at most 128 tokens run an instantiation capped at 128 registers, two blocks per SM
// where they fit (two_per_sm, two_fit; DUALITY_SSD_FUSED_2PB=0: never), and the model then
// prefers chunk 128 (ssd_fused_chunk); longer chunks run one block per SM (shared memory).
// Pairs of heads (kPair, pair_smem_bytes; DUALITY_SSD_PAIR=0: never): where a chunk is longer
// than 128 tokens and its rows (padded to 32) make 64-row tiles (chunk 192 or 256), head_dim 64,
// d_state 128, no gate and an even number of heads per group, a head block takes heads h and
// h + 1 of its chunk: both heads' x rows (unpadded, 16-byte pieces swizzled by the row) load
// beside B, both chunk states run while B is in shared memory, then head h's state passing and
// output (its y stored straight from registers: C's rows must stay intact for the second head),
// then head h + 1's. The second head thus has no load phase, and B and C cross from L2 once per
// two heads (230,688 bytes of shared memory at chunk 256). On sm_90a the output phase is the
// warpgroup form (step 4 above).
// Speed (H200, bf16, 2.7b layer, 2026-12-04, timing test, A/B in one session): chunk 256 b1×32k
// 1.362-1.367 → 1.228-1.229 ms with pairs (3.30x the five-step path), b8×4k 1.371-1.374 →
// 1.243-1.244 ms (3.24x); chunk 128 (two blocks per SM, no pairs) b1×32k 1.067 ms, b1×8k 0.286 ms
// (3.5-3.7x). On an H100 since v21 (2026-12-05, two rounds): chunk 256 b1×32k 1.093-1.099 ms
// (3.7x), b8×4k 1.107-1.113 ms, chunk 128 b1×32k 1.034-1.036 ms, b1×8k 0.272-0.273 ms; at v24
// (2026-12-07, the warpgroup output phase) chunk 256 b1×32k 1.045-1.047 ms (3.9x), b8×4k 1.061 ms;
// at v26 (the same day, another H100) chunk 128 b1×32k 0.976 ms (4.1x), b1×8k 0.258 ms.
// Phase breakdown, the history of these numbers, what was tried and next steps:
// docs/ssd-fused-notes.md.
// Files: ssd_fused_common.cuh (the parameter block, PTX wrappers, row copies, the S record's
// layout), ssd_fused_score.cuh (the S blocks), ssd_fused_conv.cuh (the SsdConv prologue),
// ssd_fused_kernel.cuh (the kernel: the head blocks' steps 1-4), ssd_fused_instances.cuh (its
// launches, instantiated per head_dim by ssd_fused_p32.cu ... ssd_fused_p128.cu, so that they
// compile in parallel), ssd_fused_launch.cuh (what this file calls of them), wgmma.cuh (the
// warpgroup MMAs of the pairs' output phase); this file holds the host side (shapes, workspace,
// dispatch).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/cuda/check.h"
#include "core/env.h"
#include "ops/cuda/ops.h"
#include "ops/cuda/ssd_fused_common.cuh"
#include "ops/cuda/ssd_fused_launch.cuh"
#include "ops/cuda/ssd_plan.h"

namespace duality::cuda {
namespace {

using namespace fused;  // NOLINT: this file's own pieces (ssd_fused_*.cuh)

bool aligned16(const void* ptr) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
}

// The dynamic shared memory of one block, for the kernel's carve-up at its top: C, B {qa, kLdC},
// x {qa, kLdX}, prev {head_dim, kLdC} in the activation dtype, then cs, Δ, f, g {qa} f32.
// B's region also holds the S record (s_record_words) after the chunk state. A pair (kPair) has
// two heads' x rows, unpadded, and prev in head_dim·d_state (panels): the 1,024 bytes that saves
// are what its carve-up may skip to put x on a 1,024-byte boundary.
size_t smem_bytes(const SsdArgs& a, DType act, bool pair = false) {
    const size_t q32 = static_cast<size_t>((a.chunk_size + 31) / 32 * 32);
    const size_t el = dtype_size(act);
    const size_t ldc = static_cast<size_t>(a.d_state) + 8,
                 x_row = pair ? static_cast<size_t>(2 * a.head_dim)
                              : static_cast<size_t>(a.head_dim) + 8;
    const size_t b_elems =
        std::max(q32 * ldc,
                 static_cast<size_t>(s_record_words(static_cast<int>(q32))) * sizeof(uint32_t) / 2);
    return (q32 * (ldc + x_row) + b_elems + static_cast<size_t>(a.head_dim) * ldc) * el +
           4 * sizeof(float) * q32;
}

// The split-S record of one (chunk, group) in bytes.
size_t s_record_bytes(int64_t chunk_size) {
    return static_cast<size_t>(s_record_words(static_cast<int>((chunk_size + 31) / 32 * 32))) *
           sizeof(uint32_t);
}

// FusedParams::sp_ring (two state entries per sequence where that is fewer than one per chunk):
// on by default, DUALITY_SSD_RING=0 turns it off.
bool ring_enabled() {
    static const bool on = !env_is("DUALITY_SSD_RING", "0");
    return on;
}

size_t state_ws_bytes(const SsdArgs& a) {
    return static_cast<size_t>(state_entries(a.batch.n_chunk, a.batch.n_seq, ring_enabled())) *
           a.n_head * a.head_dim * a.d_state * (a.passed_f16 ? sizeof(__half) : sizeof(float));
}

int max_smem_optin() {
    int dev = 0, v = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
    DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return v;
}

int max_smem_per_sm() {
    int dev = 0, v = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
    DUALITY_CUDA_CHECK(
        cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
    return v;
}

// Two blocks per SM (registers capped at 128 a thread) where chunks are at most kTwoPerSmChunk
// tokens and two blocks' shared memory fits in an SM; DUALITY_SSD_FUSED_2PB=0 keeps one block per
// SM (with more registers) everywhere.
bool two_per_sm_enabled() {
    static const bool on = !env_is("DUALITY_SSD_FUSED_2PB", "0");
    return on;
}

// FusedParams::y_stage (y through shared memory, 16-byte stores; docs/ssd-fused-notes.md, v13):
// on by default, DUALITY_SSD_Y_STAGE=0 turns it off.
// FusedParams::defer_c (docs/ssd-fused-notes.md, v14): on by default, DUALITY_SSD_DEFER_C=0 turns
// it off.
bool defer_c_enabled() {
    static const bool on = !env_is("DUALITY_SSD_DEFER_C", "0");
    return on;
}

bool y_stage_enabled() {
    static const bool on = !env_is("DUALITY_SSD_Y_STAGE", "0");
    return on;
}

// FusedParams::z_early (the gate's z copy before C·prevᵀ in the strips' form; the warpgroup form
// copies after C·prevᵀ's products are issued either way): on by default, DUALITY_SSD_Z_EARLY=0
// turns it off.
bool z_early_enabled() {
    static const bool on = !env_is("DUALITY_SSD_Z_EARLY", "0");
    return on;
}

// FusedParams::early_s_wait for a launch: DUALITY_SSD_EARLY_S_WAIT=1 or 0 forces it; by default
// it is on where it measured faster (docs/ssd-fused-notes.md, v11 and v14): one block per SM and a
// grid of at least kEarlySWaitBlocksPerSm blocks per SM (long runs of chunks, where each block's
// second L2 round trip on the wait is exposed); off for short grids, two blocks per SM and pairs of
// heads (one_per_sm false), where warp 1's spin costs more than it hides.
constexpr int kEarlySWaitBlocksPerSm = 48;
int sm_count() {
    int dev = 0, v = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
    DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
    return v;
}
}  // namespace

namespace fused {

bool early_s_wait_for(int64_t blocks, bool one_per_sm) {
    static const int forced = env_is("DUALITY_SSD_EARLY_S_WAIT", "1")   ? 1
                              : env_is("DUALITY_SSD_EARLY_S_WAIT", "0") ? 0
                                                                        : -1;
    if (forced >= 0) return forced == 1;
    static const int sms = sm_count();
    return one_per_sm && blocks >= int64_t{kEarlySWaitBlocksPerSm} * sms;
}

bool two_per_sm(int64_t chunk_size, size_t smem) {
    if (!two_per_sm_enabled() || chunk_size > kTwoPerSmChunk) return false;
    static const int per_sm = max_smem_per_sm();
    // Each block also takes its static shared memory and the driver's reserve (1 KiB).
    return 2 * (smem + kStaticSmemReserve + 1024) <= static_cast<size_t>(per_sm);
}

}  // namespace fused

namespace {

// Pairs of heads per block (kPair; DUALITY_SSD_PAIR=0 turns them off): where a chunk is longer
// than kTwoPerSmChunk (one block per SM), head_dim 64 and d_state 128 (the instantiation), an
// even number of heads per group, and both heads' x rows fit beside B, C and prev. Each block
// then loads B and C once for two heads, and the second head's chunk state and output run
// without a load phase of their own (docs/ssd-fused-notes.md, v15). Its shared memory, or 0.
size_t pair_smem_bytes(const SsdArgs& a, DType act) {
    static const bool on = !env_is("DUALITY_SSD_PAIR", "0");
    // (Rows in 64-row tiles: the warpgroup form of the output phase, v24.)
    const int64_t qa = (a.chunk_size + 31) / 32 * 32;
    if (!on || a.chunk_size <= kTwoPerSmChunk || qa % 64 != 0 || a.head_dim != 64 ||
        a.d_state != 128 || (a.n_head / a.n_group) % 2 != 0)
        return 0;
    static const int limit = max_smem_optin();
    const size_t smem = smem_bytes(a, act, true);
    return smem + kStaticSmemReserve <= static_cast<size_t>(limit) ? smem : 0;
}

bool shape_ok(int64_t P, int64_t N) {
    return (P == 32 || P == 64 || P == 80 || P == 128) && (N == 64 || N == 128 || N == 256);
}

template <typename T>
void launch_pn(const FusedParams& fp, int64_t P, int64_t N, int64_t n_chunk, size_t smem,
               size_t pair_smem, cudaStream_t s) {
    switch (P) {
        case 32:
            launch_n<T, 32>(fp, N, n_chunk, smem, pair_smem, s);
            break;
        case 64:
            launch_n<T, 64>(fp, N, n_chunk, smem, pair_smem, s);
            break;
        case 80:
            launch_n<T, 80>(fp, N, n_chunk, smem, pair_smem, s);
            break;
        default:
            launch_n<T, 128>(fp, N, n_chunk, smem, pair_smem, s);
            break;
    }
}

}  // namespace

bool ssd_fused_supported(const SsdArgs& a, DType act) {
    if (act != DType::kF16 && act != DType::kBF16) return false;
    if (!shape_ok(a.head_dim, a.d_state)) return false;
    if (a.n_group <= 0 || a.n_head % a.n_group != 0) return false;
    if (a.chunk_size < 1 || a.chunk_size > kMaxChunk) return false;
    if (!aligned16(a.x) || !aligned16(a.B) || !aligned16(a.C)) return false;
    if (a.x_stride % 8 != 0 || a.bc_stride % 8 != 0) return false;
    if ((a.batch.n_chunk + 1) * (a.n_head + a.n_group) >= (int64_t{1} << 31)) return false;
    // The kernel's static shared memory (counters, warp sums) comes out of the same limit.
    static const int limit = max_smem_optin();
    return smem_bytes(a, act) + kStaticSmemReserve <= static_cast<size_t>(limit);
}

int64_t ssd_fused_chunk(const SsdArgs& a, DType act) {
    if (a.d_state == 256) {
        // The largest chunk (halving from the model's) whose shared memory fits one block:
        // chunk 128 for head_dim up to 80, 64 for 128 (Hopper). None: the five-step path.
        SsdArgs c = a;
        while (c.chunk_size > 32 && shape_ok(c.head_dim, c.d_state) && !ssd_fused_supported(c, act))
            c.chunk_size /= 2;
        return ssd_fused_supported(c, act) ? c.chunk_size : a.chunk_size;
    }
    if (a.chunk_size <= kTwoPerSmChunk) return a.chunk_size;
    SsdArgs half = a;
    half.chunk_size = kTwoPerSmChunk;
    const size_t smem = smem_bytes(half, act);
    if (!ssd_fused_supported(half, act) || !two_per_sm(half.chunk_size, smem)) return a.chunk_size;
    auto fit = [&]<typename T>() {
        switch (a.head_dim) {
            case 32:
                return two_fit_n<T, 32>(a.d_state, smem, half.chunk_size);
            case 64:
                return two_fit_n<T, 64>(a.d_state, smem, half.chunk_size);
            case 80:
                return two_fit_n<T, 80>(a.d_state, smem, half.chunk_size);
            default:
                return two_fit_n<T, 128>(a.d_state, smem, half.chunk_size);
        }
    };
    const bool fits = act == DType::kBF16 ? fit.template operator()<__nv_bfloat16>()
                                          : fit.template operator()<__half>();
    return fits ? half.chunk_size : a.chunk_size;
}

size_t ssd_fused_workspace_bytes(const SsdArgs& a) {
    return state_ws_bytes(a) +
           static_cast<size_t>(a.batch.n_chunk) * a.n_group * s_record_bytes(a.chunk_size);
}

size_t ssd_fused_sync_bytes(const SsdArgs& a) {
    return (kSyncHeader + static_cast<size_t>(a.batch.n_chunk) * (a.n_head + a.n_group)) *
           sizeof(uint32_t);
}

bool ssd_gate_supported(const SsdArgs& a, const SsdGate& gate) {
    return gate.z && gate.w && gate.ssq && reinterpret_cast<uintptr_t>(gate.z) % 16 == 0 &&
           gate.z_stride % 8 == 0 && reinterpret_cast<uintptr_t>(gate.w) % 8 == 0 &&
           a.head_dim == 64 && a.d_state == 128;
}

bool ssd_conv_supported(const SsdArgs& a, const SsdConv& conv) {
    const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
    // The raw rows {qa + 3, head_dim} go where prev {head_dim, d_state + 8} goes later (in the
    // swizzled layout of sm_90a, prev {head_dim, d_state} and the f32 rows after it).
    const int64_t qa = (a.chunk_size + 31) / 32 * 32;
    return conv.weight && conv.state && conv.width == 4 && aligned(conv.weight) &&
           aligned(conv.state) && conv.state_ld % 4 == 0 && conv.state_slot_stride % 4 == 0 &&
           conv.state_ld >= a.n_head * a.head_dim && a.head_dim == 64 && a.d_state == 128 &&
           qa + 3 <= a.d_state + 8;
}

namespace {
void fused_impl(const SsdArgs& a, const float* dt, void* workspace, void* sync, DType act,
                cudaStream_t stream, uint64_t* prof, const SsdGate* gate, const SsdConv* conv,
                const RawDt* raw_dt) {
    const VarlenBatch& b = a.batch;
    if (b.n_chunk == 0 || b.n_tokens == 0) return;
    if (!ssd_fused_supported(a, act) || !a.y || !a.state || !(dt || raw_dt) || !a.A || !workspace ||
        !sync || !b.chunk_start || !b.chunk_len || !b.chunk_seq || !b.cu_chunks || !b.slots) {
        std::fprintf(stderr,
                     "duality: ssd_fused: unsupported arguments (see ssd_fused_supported)\n");
        std::abort();
    }
    FusedParams fp;
    ssd::fill_operands(a, dt, &fp);
    switch (a.state_dtype) {
        case DType::kF32:
            fp.state_dtype = 0;
            break;
        case DType::kF16:
            fp.state_dtype = 1;
            break;
        case DType::kBF16:
            fp.state_dtype = 2;
            break;
        default:
            std::fprintf(stderr, "duality: ssd_fused: state_dtype must be f32, f16 or bf16\n");
            std::abort();
    }
    fp.y_stage = y_stage_enabled() && aligned16(a.y);
    fp.defer_c = defer_c_enabled();
    fp.z_early = z_early_enabled();
    fp.sp = workspace;
    fp.sp_f16 = a.passed_f16;
    fp.sp_ring = state_entries(b.n_chunk, b.n_seq, ring_enabled()) < b.n_chunk;
    fp.s_tiles = reinterpret_cast<uint32_t*>(static_cast<char*>(workspace) + state_ws_bytes(a));
    fp.sync = static_cast<uint32_t*>(sync);
    fp.prof = prof;
    // Arguments the caller should have checked: an internal error.
    const auto require = [](bool ok, const char* what) {
        if (ok) return;
        std::fprintf(stderr, "duality: ssd_fused: %s\n", what);
        std::abort();
    };
    require(reinterpret_cast<uintptr_t>(sync) % alignof(uint64_t) == 0,
            "the sync buffer must be 8-byte aligned (its ticket and epoch are one 64-bit word)");
    if (gate) {
        require(ssd_gate_supported(a, *gate), "unsupported gate (see ssd_gate_supported)");
        fp.gate_z = gate->z;
        fp.z_stride = gate->z_stride;
        fp.gate_w = gate->w;
        fp.gate_ssq = gate->ssq;
    }
    if (conv) {
        require(gate && ssd_conv_supported(a, *conv),
                "unsupported conv (a gate is required; see ssd_conv_supported)");
        fp.conv_w = conv->weight;
        fp.conv_b = conv->bias;
        fp.conv_state = conv->state;
        fp.conv_ld = conv->state_ld;
        fp.conv_slot_stride = conv->state_slot_stride;
    }
    if (raw_dt) {
        require(gate && raw_dt->dt_raw && raw_dt->dt_bias,
                "raw Δ needs a gate, dt_raw and dt_bias");
        fp.raw_dt = *raw_dt;
    }
    const size_t smem = smem_bytes(a, act);
    const size_t pair_smem = pair_smem_bytes(a, act);  // (launch_blocks takes the gate first)
    if (act == DType::kBF16) {
        launch_pn<__nv_bfloat16>(fp, a.head_dim, a.d_state, b.n_chunk, smem, pair_smem, stream);
    } else {
        launch_pn<__half>(fp, a.head_dim, a.d_state, b.n_chunk, smem, pair_smem, stream);
    }
}

}  // namespace

void ssd_fused(const SsdArgs& a, const float* dt, void* workspace, void* sync, DType act,
               cudaStream_t stream, const SsdGate* gate, const SsdConv* conv, const RawDt* raw_dt) {
    fused_impl(a, dt, workspace, sync, act, stream, nullptr, gate, conv, raw_dt);
}

void ssd::fused_profile(const SsdArgs& a, const float* dt, void* workspace, void* sync, DType act,
                        uint64_t* stamps, cudaStream_t stream) {
    fused_impl(a, dt, workspace, sync, act, stream, stamps, nullptr, nullptr, nullptr);
}

}  // namespace duality::cuda
