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
//      where head_dim <= d_state and y is 16-byte aligned (y_stage). The decay exp(Scs_i − Scs_j)
//      factors into exp(Scs_i − Scs_j0) (per row) times exp(Scs_j0 − Scs_j)·Δ_j (per column, once
//      per chunk) where the block's decay range allows (at most e^32, Scs non-increasing), else one
//      exponential per element. With an SsdGate (ops.h) the store is the gated norm's first half
//      instead: y·silu(z)·w and the row's sum of squares per head (a quad shuffle). z is prefetched
//      into L2 when the block starts and copied (cp.async) into the strip's C rows, dead once the
//      warp holds them as fragments, while C·prevᵀ (z_early, DUALITY_SSD_Z_EARLY=0: not) and the
//      intra loop run: loaded from global memory in the epilogue, z cost 25% of the kernel's time
//      (its loads waited behind the y stores they might alias).
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
// than 128 tokens, head_dim 64, d_state 128, no gate and an even number of heads per group, a head
// block takes heads h and h + 1 of its chunk: both heads' x rows (unpadded, 16-byte pieces
// swizzled by the row) load beside B, both chunk states run while B is in shared memory, then
// head h's state passing and output (its y stored straight from registers: C's rows must stay
// intact for the second head), then head h + 1's. The second head thus has no load phase,
// and B and C cross from L2 once per two heads (230,688 bytes of shared memory at chunk 256).
// Speed (H200, bf16, 2.7b layer, 2026-12-04, timing test, A/B in one session): chunk 256 b1×32k
// 1.362-1.367 → 1.228-1.229 ms with pairs (3.30x the five-step path), b8×4k 1.371-1.374 →
// 1.243-1.244 ms (3.24x); chunk 128 (two blocks per SM, no pairs) b1×32k 1.067 ms, b1×8k 0.286 ms
// (3.5-3.7x). On an H100 since v21 (2026-12-05, two rounds): chunk 256 b1×32k 1.093-1.099 ms
// (3.7x), b8×4k 1.107-1.113 ms, chunk 128 b1×32k 1.034-1.036 ms, b1×8k 0.272-0.273 ms. Phase
// breakdown, the history of these numbers, what was tried and next steps: docs/ssd-fused-notes.md.
// Files: ssd_fused_common.cuh (the parameter block, PTX wrappers, row copies, the S record's
// layout), ssd_fused_score.cuh (the S blocks), ssd_fused_conv.cuh (the SsdConv prologue); this
// file holds the kernel (the head blocks' steps 1-4) and the host side (shapes, dispatch, launch).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/cuda/check.h"
#include "core/cuda/sync.cuh"
#include "core/env.h"
#include "ops/cuda/activation.cuh"
#include "ops/cuda/dt_softplus.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"
#include "ops/cuda/ssd_fused_common.cuh"
#include "ops/cuda/ssd_fused_conv.cuh"
#include "ops/cuda/ssd_fused_score.cuh"
#include "ops/cuda/ssd_plan.h"

namespace duality::cuda {
namespace {

using namespace fused;  // NOLINT: this file's own pieces (ssd_fused_*.cuh)

using sync::atom_add_acq_rel;
using sync::global_ns;
using sync::ld_acquire;
using sync::st_release;

// kGate: the SsdGate epilogue (instantiated for head_dim 64, d_state 128 only: ssd_gate_supported),
// and where p.conv_w is set the SsdConv prologue (conv_x_load, ConvX), where p.raw_dt.dt_raw is
// set Δ from the raw dt columns (RawDt).
// kPair: a head block works on two heads of its chunk, h and h + 1 (of one group), one after the
// other, over one load of the chunk's B and C (instantiated for head_dim 64 at one block per SM,
// without the gate: pair_smem_bytes).
template <typename T, int kP, int kN, int kMinBlocks, bool kGate, bool kPair>
__global__ void __launch_bounds__(kThreads, kMinBlocks) ssd_fused_kernel(FusedParams p) {
    using M = Act<T>;
    using L = Smem<T, kP, kN>;
    constexpr int kLdC = L::kLdC, kLdX = L::kLdX;
    static_assert(kP % 16 == 0 && kN % 64 == 0, "head_dim multiple of 16, d_state of 64");
    static_assert(!kPair || (kP == 64 && kMinBlocks == 1 && !kGate),
                  "pairs of heads: head_dim 64, one block per SM, no gate");
    constexpr int kHeads = kPair ? 2 : 1;
    extern __shared__ __align__(128) unsigned char smem[];
    __shared__ uint32_t s_ticket, s_epoch;
    __shared__ float s_warp_sum[kHeads][kWarps];
    __shared__ float s_cs_last1;  // kPair: the second head's Scs_last

    // Rows are allocated and zero-filled up to a multiple of 32 (the intra loop's token block).
    const int Q = p.chunk_size, qa = (Q + 31) & ~31;
    // After the chunk state, B's region holds the chunk's S record.
    const int b_elems = max(qa * kLdC, s_record_words(qa) * 2);
    T* Cs = reinterpret_cast<T*>(smem);  // {qa, kLdC}: C rows of the chunk
    T* Bs = Cs + qa * kLdC;              // {qa, kLdC}: B rows, then the S record
    // x rows: padded (kLdX), or for a pair (two heads' rows: no room for the padding) rows of kP
    // whose 16-byte pieces are swizzled by the row (piece ^ (row & 7)), so that ldmatrix's 8 rows
    // still hit distinct banks. xo(row, column) is an element's offset either way.
    constexpr int kXRow = kPair ? kP : kLdX;
    const auto xo = [](int r, int col) {
        if constexpr (kPair) {
            return r * kP + ((((col >> 3) ^ r) & 7) << 3) + (col & 7);
        } else {
            return r * kLdX + col;
        }
    };
    T* Xs = Bs + b_elems;              // {kHeads, qa, kXRow}: x rows of head h (and h + 1)
    T* Ps = Xs + kHeads * qa * kXRow;  // {kP, kLdC}: prev, the state entering the chunk
    float* cs_s = reinterpret_cast<float*>(Ps + kP * kLdC);  // {qa}: Scs
    float* dt_s = cs_s + qa;                                 // {qa}: Δ (0 past len)
    float* f_s = dt_s + qa;                                  // {qa}: exp(Scs_last − Scs_j)·Δ_j
    float* g_s = f_s + qa;  // {qa}: exp(Scs_j0 − Scs_j)·Δ_j, j0 = j's 32-token block start

    const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
    const int gr = lane / 4, qd = lane % 4;  // accumulator row (and row + 8), column pair

    if (tid == 0) {
        // The ticket (word 0) and the epoch (word 1) of one 64-bit word, taken in one atomic
        // (one L2 round trip): the last block to start adds 2^32 − gridDim.x, which resets the
        // ticket to 0 and advances the epoch, after every block has read it.
        uint64_t* const word = reinterpret_cast<uint64_t*>(p.sync);
        const uint64_t old = atom_add_acq_rel(word, uint64_t{1});
        const uint32_t t = static_cast<uint32_t>(old), e = static_cast<uint32_t>(old >> 32) + 1u;
        if (t == gridDim.x - 1) atom_add_acq_rel(word, (uint64_t{1} << 32) - gridDim.x);
        s_ticket = t;
        s_epoch = e;
    }
    __syncthreads();
    const uint32_t epoch = s_epoch;
    const int H = p.n_head;
    // Items chunk-major, S one chunk ahead: chunk 0's n_group S blocks, then for each chunk c
    // the S blocks of chunk c + 1 (past the last chunk: blocks that do nothing) and the n_head
    // head blocks of chunk c (n_head / 2 pairs), so that a chunk's S is done long before its head
    // blocks need it.
    const uint32_t G = static_cast<uint32_t>(p.n_group),
                   per_chunk = static_cast<uint32_t>(H / kHeads) + G;
    if (s_ticket < G) {
        score_block<T, kN>(p, 0, static_cast<int>(s_ticket), epoch, Cs, Bs);
        return;
    }
    const int64_t c = (s_ticket - G) / per_chunk;
    int h = static_cast<int>((s_ticket - G) % per_chunk);
    if (h < p.n_group) {
        if (c + 1 < p.n_chunk) score_block<T, kN>(p, c + 1, h, epoch, Cs, Bs);
        return;
    }
    h = (h - p.n_group) * kHeads;  // (the first of a pair)
    uint64_t* const prof = p.prof && tid == 0 ? p.prof + (c * H + h) * 8 : nullptr;
    if (prof) {
        prof[0] = global_ns();
        prof[6] = sm_id();
    }
    const int grp = h / p.heads_per_group;
    const int64_t start = p.chunk_start[c];
    const int len = p.chunk_len[c];

    // 1. Async loads: x and B (group 0), C (group 1, here or with defer_c before step 2); rows >=
    // len are zero-filled.
    const T* const Cg = static_cast<const T*>(p.C) + start * p.bc_stride + grp * kN;  // {len, kN}
    const auto load_c = [&] {
        cp_rows<kN / 8>(Cs, kLdC, RowMajor<kLdC>{}, Cg, p.bc_stride, qa, len);
        cp_async_commit();
    };
    // Until group 0 (x and B) has landed: with C issued beside it, every group but the last.
    const auto wait_group0 = [&] {
        if (p.defer_c) {
            cp_async_wait<0>();
        } else {
            cp_async_wait<1>();
        }
    };
    bool conv = false;  // SsdConv: group 0 holds x's raw rows instead (conv_x_load)
    if constexpr (kGate) conv = p.conv_w != nullptr;
    {
        const T* xg = static_cast<const T*>(p.x) + start * p.x_stride + h * kP;     // {len, kP}
        const T* Bg = static_cast<const T*>(p.B) + start * p.bc_stride + grp * kN;  // {len, kN}
        if constexpr (kGate) {
            if (conv) conv_x_load<T, kP>(p, h, start, len, Ps);  // (x computed before step 2)
        }
        if (!conv) {
#pragma unroll
            for (int hh = 0; hh < kHeads; ++hh)
                cp_rows<kP / 8>(Xs + hh * qa * kXRow, kXRow, xo, xg + hh * kP, p.x_stride, qa, len);
        }
        cp_rows<kN / 8>(Bs, kLdC, RowMajor<kLdC>{}, Bg, p.bc_stride, qa, len);
        cp_async_commit();
        if (!p.defer_c) load_c();
        // SsdGate: the chunk's z rows of head h into L2 for the output phase (a row's kP
        // elements span at most kP·2 / 64 + 1 64-byte pieces).
        if constexpr (kGate) {
            const T* zg = static_cast<const T*>(p.gate_z) + start * p.z_stride + h * kP;
            constexpr int kPieces = kP * 2 / 64 + 1;
            for (int v = tid; v < len * kPieces; v += kThreads) {
                const int r = v / kPieces, piece = v % kPieces;
                const int e = piece * 32 < kP ? piece * 32 : kP - 1;  // 32 elements: 64 bytes
                asm volatile("prefetch.global.L2 [%0];" ::"l"(zg + r * p.z_stride + e));
            }
        }
        // With early_s_wait (early_s_wait_for): the chunk's S flag now, by warp 1's first lane
        // while the loads are in flight (S is normally done a chunk ahead), so that step 3 waits
        // for one flag, not for two L2 round trips one after the other. The block barriers that
        // follow order this acquire before every thread's reads of S, as thread 0's in step 3
        // otherwise.
        if (p.early_s_wait && tid == 32) {
            const uint32_t* s_ready = s_flag(p, c, grp);
            while (ld_acquire(s_ready) != epoch) __nanosleep(40);
        }
    }

    // (The sequence tables are read after the loads are in flight.)
    const int seq = p.chunk_seq[c];
    const int64_t chunk0 = p.cu_chunks[seq];  // the sequence's first chunk
    const bool first = c == chunk0, last = c == p.cu_chunks[seq + 1] - 1;
    [[maybe_unused]] ConvX<T, kP, kLdX> cx;
    if constexpr (kGate) {
        if (conv) cx.load(p, c, h, qa, first);
    }

    // Δ and the inclusive cumsum of A·Δ (one token per thread: qa <= kThreads). With a RawDt, d
    // holds the raw value until after the conv prologue, so that its load's latency hides there.
    float d[kHeads], dt_bias = 0.0f;  // (a pair: heads h and h + 1)
#pragma unroll
    for (int hh = 0; hh < kHeads; ++hh) d[hh] = 0.0f;
    if (tid < len) {
        if constexpr (kGate) {
            if (p.raw_dt.dt_raw) {
                const T* raw = static_cast<const T*>(p.raw_dt.dt_raw);
                d[0] = dtype::to_f32(raw[(start + tid) * p.raw_dt.raw_stride + h]);
                dt_bias = p.raw_dt.dt_bias[h];
            } else {
                d[0] = p.dt[(start + tid) * H + h];
            }
        } else {
#pragma unroll
            for (int hh = 0; hh < kHeads; ++hh) d[hh] = p.dt[(start + tid) * H + h + hh];
        }
    }
    if constexpr (kGate) {
        // SsdConv: x = silu(conv1d(raw rows)) once group 0 (raw x, B) has landed; the cumsum's
        // barriers below order these writes of Xs before step 2 reads them.
        if (conv) {
            wait_group0();
            __syncthreads();
            cx.run(len, first, Ps, Xs);
        }
        if (p.raw_dt.dt_raw && tid < len)
            d[0] = dt_clamped_softplus(d[0] + dt_bias, p.raw_dt.dt_min, p.raw_dt.dt_max);
    }
    bool monotone[kHeads];
    float scs[kHeads];  // the thread's token's Scs (of each head)
    {
#pragma unroll
        for (int hh = 0; hh < kHeads; ++hh) {
            scs[hh] = p.A[h + hh] * d[hh];
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const float n = __shfl_up_sync(0xffffffffu, scs[hh], o);
                if (lane >= o) scs[hh] += n;
            }
            if (lane == 31) s_warp_sum[hh][warp] = scs[hh];
        }
        __syncthreads();
        for (int w = 0; w < warp; ++w)
#pragma unroll
            for (int hh = 0; hh < kHeads; ++hh) scs[hh] += s_warp_sum[hh][w];
        if (tid < qa) {
            cs_s[tid] = scs[0];
            dt_s[tid] = d[0];
        }
        if constexpr (kPair) {
            if (tid == len - 1) s_cs_last1 = scs[1];
        }
        // Whether Scs never increases in the chunk (A·Δ <= 0 for every token: always so for a
        // model, whose A = −exp(A_log) and Δ = softplus(..) >= 0), which the factorized intra
        // decays below need.
#pragma unroll
        for (int hh = 0; hh < kHeads; ++hh)
            monotone[hh] = __syncthreads_and(p.A[h + hh] * d[hh] <= 0.0f);
    }
    const float cs_last = cs_s[len - 1];  // = the whole chunk's sum (flat past len)
    [[maybe_unused]] float cs_last1 = 0.0f;
    if constexpr (kPair) cs_last1 = s_cs_last1;
    // g_s from the thread's Scs: cs_s[tid & ~31] is lane 0's (every lane takes part in the
    // shuffle).
    const auto put_g = [&](float vv, float dd) {
        const float v0 = __shfl_sync(0xffffffffu, vv, 0);
        if (tid < qa) g_s[tid] = __expf(fminf(v0 - vv, kFactorRange)) * dd;
    };
    if (tid < qa) f_s[tid] = expf(fminf(cs_last - scs[0], 0.0f)) * d[0];
    put_g(scs[0], d[0]);
    wait_group0();
    __syncthreads();
    if (p.defer_c) load_c();
    if (prof) prof[1] = global_ns();

    // 2. Chunk-local state: items of 16 (p) × 64 (n), warp w takes items w, w + 8, ...
    constexpr int kNC = kN / 64, kItems = (kP / 16) * kNC, kMaxIt = (kItems + kWarps - 1) / kWarps;
    using State = float[kMaxIt][8][4];
    // Two 16-token steps per iteration, their 10 fragment loads issued before any MMA (rows past
    // len are zero up to qa, and f_s is 0 there).
    const int j_end = (len + 31) & ~31;
    const auto chunk_state = [&](const T* xs, State& st) {
#pragma unroll
        for (int it = 0; it < kMaxIt; ++it)
#pragma unroll
            for (int t = 0; t < 8; ++t)
#pragma unroll
                for (int e = 0; e < 4; ++e) st[it][t][e] = 0.0f;
#pragma unroll
        for (int it = 0; it < kMaxIt; ++it) {
            const int item = warp + kWarps * it;
            if (item >= kItems) continue;
            const int p0 = (item / kNC) * 16, n0 = (item % kNC) * 64;
            // A = xᵀ {16 p, 16 j}: x is stored [j][p], so ldmatrix.trans; lane's address in rows
            // jj.. is xa + jj · kXRow (jj a multiple of 16).
            const T* const xa = xs + xo((lane & 7) + 8 * (lane >> 4), p0 + 8 * ((lane >> 3) & 1));
            for (int j0 = 0; j0 < j_end; j0 += 32) {
                uint32_t a[2][4], b[2][4][4];
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const int jj = j0 + 16 * hh;
                    ldsm_x4_t(a[hh], xa + jj * kXRow);
#pragma unroll
                    for (int t2 = 0; t2 < 4; ++t2)  // B {16 j, 16 n}: stored [j][n], ldmatrix.trans
                        ldsm_x4_t(b[hh][t2], Bs + (jj + (lane & 7) + 8 * ((lane >> 3) & 1)) * kLdC +
                                                 n0 + 16 * t2 + 8 * (lane >> 4));
                }
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const int jj = j0 + 16 * hh;
                    const float f0 = f_s[jj + 2 * qd], f1 = f_s[jj + 2 * qd + 1];
                    const float f8 = f_s[jj + 8 + 2 * qd], f9 = f_s[jj + 9 + 2 * qd];
                    float2 u;
                    u = M::unpack(a[hh][0]);
                    a[hh][0] = M::pack(u.x * f0, u.y * f1);
                    u = M::unpack(a[hh][1]);
                    a[hh][1] = M::pack(u.x * f0, u.y * f1);
                    u = M::unpack(a[hh][2]);
                    a[hh][2] = M::pack(u.x * f8, u.y * f9);
                    u = M::unpack(a[hh][3]);
                    a[hh][3] = M::pack(u.x * f8, u.y * f9);
#pragma unroll
                    for (int t2 = 0; t2 < 4; ++t2) {
                        M::mma(st[it][2 * t2], a[hh], b[hh][t2][0], b[hh][t2][1]);
                        M::mma(st[it][2 * t2 + 1], a[hh], b[hh][t2][2], b[hh][t2][3]);
                    }
                }
            }
        }
    };
    State st;
    chunk_state(Xs, st);
    // A pair: the second head's chunk state too, while B is in shared memory (its f_s replaces
    // the first head's; its Scs and Δ stay in scs[1] and d[1] until its output).
    [[maybe_unused]] State st1;
    if constexpr (kPair) {
        __syncthreads();
        if (tid < qa) f_s[tid] = expf(fminf(cs_last1 - scs[1], 0.0f)) * d[1];
        __syncthreads();
        chunk_state(Xs + qa * kXRow, st1);
    }

    // 3. State passing: wait for the chunk's S and for chunk c−1 of this head (a sequence's
    // first chunk starts from its slot), publish the state leaving this chunk, keep prev as an
    // operand. For head hd with its chunk state stv and Scs_last csl; with_s: also wait for the
    // chunk's S and copy it into B's region (the first head of a block); pf: its time stamps.
    if (prof) prof[2] = global_ns();
    const int64_t PN = static_cast<int64_t>(kP) * kN;
    const auto pass_state = [&](int hd, const State& stv, float csl, bool with_s, uint64_t* pf) {
        const int64_t slot_off = first || last ? p.slots[seq] * p.state_slot_stride + hd * PN : 0;
        if (tid == 0) {
            if (with_s && !p.early_s_wait) {  // (else done in step 1)
                const uint32_t* s_ready = s_flag(p, c, grp);
                while (ld_acquire(s_ready) != epoch) __nanosleep(40);
            }
            if (!first) {
                const uint32_t* flag = p.sync + kSyncHeader + (c - 1) * H + hd;
                while (ld_acquire(flag) != epoch) __nanosleep(40);
            }
        }
        __syncthreads();
        if (with_s) {
            // Every warp is done with B: the chunk's S tiles go there, in flight during the
            // publish.
            const int n_word = s_record_words(qa);  // (the tiles past len too: one copy)
            const uint32_t* src = p.s_tiles + (c * p.n_group + grp) * n_word;
            uint32_t* dst = reinterpret_cast<uint32_t*>(Bs);
            for (int v = 4 * tid; v < n_word; v += 4 * kThreads) cp_async16(dst + v, src + v, 16);
            cp_async_commit();
        }
        if (pf) pf[3] = global_ns();
        {
            const float decay = expf(csl);
            // (Used when !first and !last; f16 where p.sp_f16: the same offsets in elements.)
            const int64_t prev_off = (state_entry(p.sp_ring, c - 1, seq, chunk0) * H + hd) * PN,
                          out_off = (state_entry(p.sp_ring, c, seq, chunk0) * H + hd) * PN;
            const float* prev_g = static_cast<const float*>(p.sp) + prev_off;
            float* out_g = static_cast<float*>(p.sp) + out_off;
            const __half* prev_h = static_cast<const __half*>(p.sp) + prev_off;
            __half* out_h = static_cast<__half*>(p.sp) + out_off;
#pragma unroll
            for (int it = 0; it < kMaxIt; ++it) {
                const int item = warp + kWarps * it;
                if (item >= kItems) continue;
                const int p0 = (item / kNC) * 16, n0 = (item % kNC) * 64;
                // prev and out in the workspace are in fragment order (item, n-tile t, lane: the
                // lane's four accumulator values of the tile, one 16-byte vector at frag).
                // All of an item's prev values are loaded before any store: the stores may alias
                // them as far as the compiler knows, so a load left between stores would be another
                // L2 round trip on the chain from chunk to chunk. (Two blocks per SM with head_dim
                // above 64: two rounds of four n-tiles, for registers.)
                constexpr int kT = kMinBlocks == 1 || kP <= 64 ? 8 : 4;
                const int64_t frag = static_cast<int64_t>(item) * 1024 + lane * 4;
#pragma unroll
                for (int t0 = 0; t0 < 8; t0 += kT) {
                    float4 pv_all[kT];
#pragma unroll
                    for (int t = 0; t < kT; ++t) {
                        if (first) {
                            const int nn = n0 + 8 * (t0 + t) + 2 * qd;
                            const int64_t e0 = static_cast<int64_t>(p0 + gr) * kN + nn + slot_off;
                            const int64_t e1 = e0 + 8 * kN;
                            pv_all[t] = make_float4(slot_load(p.state, e0, p.state_dtype),
                                                    slot_load(p.state, e0 + 1, p.state_dtype),
                                                    slot_load(p.state, e1, p.state_dtype),
                                                    slot_load(p.state, e1 + 1, p.state_dtype));
                        } else if (p.sp_f16) {
                            const uint2 u = __ldcg(
                                reinterpret_cast<const uint2*>(prev_h + frag + (t0 + t) * 128));
                            const float2 lo =
                                __half22float2(*reinterpret_cast<const __half2*>(&u.x));
                            const float2 hi =
                                __half22float2(*reinterpret_cast<const __half2*>(&u.y));
                            pv_all[t] = make_float4(lo.x, lo.y, hi.x, hi.y);
                        } else {
                            pv_all[t] = __ldcg(
                                reinterpret_cast<const float4*>(prev_g + frag + (t0 + t) * 128));
                        }
                    }
#pragma unroll
                    for (int t = 0; t < kT; ++t) {
                        const int pp = p0 + gr, nn = n0 + 8 * (t0 + t) + 2 * qd;
                        const float4 pv = pv_all[t];
                        const float(&lv)[4] = stv[it][t0 + t];
                        *reinterpret_cast<uint32_t*>(Ps + pp * kLdC + nn) = M::pack(pv.x, pv.y);
                        *reinterpret_cast<uint32_t*>(Ps + (pp + 8) * kLdC + nn) =
                            M::pack(pv.z, pv.w);
                        const float4 o =
                            make_float4(fmaf(decay, pv.x, lv[0]), fmaf(decay, pv.y, lv[1]),
                                        fmaf(decay, pv.z, lv[2]), fmaf(decay, pv.w, lv[3]));
                        if (last) {
                            const int64_t e0 = static_cast<int64_t>(pp) * kN + nn + slot_off;
                            const int64_t e1 = e0 + 8 * kN;
                            slot_store(p.state, e0, p.state_dtype, o.x);
                            slot_store(p.state, e0 + 1, p.state_dtype, o.y);
                            slot_store(p.state, e1, p.state_dtype, o.z);
                            slot_store(p.state, e1 + 1, p.state_dtype, o.w);
                        } else if (p.sp_f16) {
                            const __half2 lo = __floats2half2_rn(o.x, o.y),
                                          hi = __floats2half2_rn(o.z, o.w);
                            __stcg(reinterpret_cast<uint2*>(out_h + frag + (t0 + t) * 128),
                                   make_uint2(*reinterpret_cast<const uint32_t*>(&lo),
                                              *reinterpret_cast<const uint32_t*>(&hi)));
                        } else {
                            __stcg(reinterpret_cast<float4*>(out_g + frag + (t0 + t) * 128), o);
                        }
                    }
                }
            }
        }
        // Release after the barrier (cumulative: it orders every thread's stores before the flag).
        // The same barrier makes prev (Ps) and, with_s, the S tiles (each thread's copies waited
        // for first) visible to every warp, so the other warps start the output phase while
        // thread 0's release (a fence: the block's stores acknowledged by L2) is in flight.
        if (with_s) cp_async_wait<0>();
        __syncthreads();
        if (!last && tid == 0) st_release(p.sync + kSyncHeader + c * H + hd, epoch);
        if (pf) pf[4] = global_ns();
    };
    pass_state(h, st, cs_last, true, prof);

    // 4. Output, 16-row strips, of head hd from its x rows xs_c (mono: its Scs never increases).
    // y_stage goes through C's rows, so a pair's first head stores y directly (C is read again).
    const int n_strip = (len + 15) / 16;
    // The intra loop's ldmatrix.trans of x rows j0 + 16·hb..: lane's row and column offsets,
    // the same for every j0 (xo(r + 8k, col) = xo(r, col) + 8k · kXRow).
    int x_lane[kP / 16];
#pragma unroll
    for (int pt = 0; pt < kP / 16; ++pt)
        x_lane[pt] = xo((lane & 7) + 8 * ((lane >> 3) & 1), 16 * pt + 8 * (lane >> 4));
    const auto outputs = [&](const T* xs_c, int hd, bool mono) {
        const float Dh = p.D ? p.D[hd] : 0.0f;
        T* y = static_cast<T*>(p.y) + start * static_cast<int64_t>(H) * kP + hd * kP;  // {len, ..}
        for (int k = 0; kWarps * k < n_strip; ++k) {
            const int s = (k & 1) ? kWarps * k + kWarps - 1 - warp : kWarps * k + warp;
            if (s >= n_strip) continue;
            const int i0 = 16 * s;
            // C rows i0.. as A fragments over d_state.
            uint32_t cf[kN / 16][4];
#pragma unroll
            for (int kk = 0; kk < kN / 16; ++kk)
                ldsm_x4(cf[kk], Cs + (i0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * kLdC + 16 * kk +
                                    8 * (lane >> 4));
            // kGate: the strip's C rows are dead once its fragments are in cf (no other warp reads
            // them): the strip's z rows go there, copied while C·prevᵀ (with z_early) and the intra
            // loop run. The warp barrier orders every lane's ldmatrix of those rows before the
            // copies that overwrite them.
            [[maybe_unused]] const auto copy_z = [&] {
                __syncwarp();
                const T* zg = static_cast<const T*>(p.gate_z) + (start + i0) * p.z_stride + h * kP;
                constexpr int kZV = kP / 8;  // 16-byte vectors per row
                for (int v = lane; v < 16 * kZV; v += 32) {
                    const int r = v / kZV, cv = (v % kZV) * 8;
                    const bool ok = i0 + r < len;
                    cp_async16(Cs + (i0 + r) * kLdC + cv, ok ? zg + r * p.z_stride + cv : zg,
                               ok ? 16 : 0);
                }
                cp_async_commit();
            };
            if constexpr (kGate) {
                if (p.z_early) copy_z();
            }
            float acc[kP / 8][4];
#pragma unroll
            for (int t = 0; t < kP / 8; ++t)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[t][e] = 0.0f;
                    // Inter-chunk: C · prevᵀ (prev stored [p][n]: a col-major B operand, plain
                    // ldmatrix).
#pragma unroll
            for (int kk = 0; kk < kN / 16; ++kk) {
                uint32_t b[kP / 16][4];
#pragma unroll
                for (int pt = 0; pt < kP / 16; ++pt)
                    ldsm_x4(b[pt], Ps + (16 * pt + (lane & 7) + 8 * (lane >> 4)) * kLdC + 16 * kk +
                                       8 * ((lane >> 3) & 1));
#pragma unroll
                for (int pt = 0; pt < kP / 16; ++pt) {
                    M::mma(acc[2 * pt], cf[kk], b[pt][0], b[pt][1]);
                    M::mma(acc[2 * pt + 1], cf[kk], b[pt][2], b[pt][3]);
                }
            }
            if constexpr (kGate) {
                if (!p.z_early) copy_z();
            }
            const float cs0 = cs_s[i0 + gr], cs1 = cs_s[i0 + gr + 8];
            {
                const float e0 = expf(cs0), e1 = expf(cs1);
#pragma unroll
                for (int t = 0; t < kP / 8; ++t) {
                    acc[t][0] *= e0;
                    acc[t][1] *= e0;
                    acc[t][2] *= e1;
                    acc[t][3] *= e1;
                }
            }
            // Intra-chunk, 32-token blocks j0 <= i0 (the block past the diagonal is masked to 0,
            // and its rows exist and are zero: rows go up to qa). Strip s's tiles of S, from the S
            // block (in B's region), and their factors back.
            const uint32_t* s_strip =
                reinterpret_cast<const uint32_t*>(Bs) + tiles_before(s) * kTileWords + lane * 4;
            const float* s_down = reinterpret_cast<const float*>(Bs) +
                                  tiles_before(qa / 16) * kTileWords + tiles_before(s);
            // (Two blocks an iteration at one block per SM, where registers allow: their W and MMAs
            // interleave, for a warp that has only one other on its scheduler to hide latency.)
#pragma unroll(kMinBlocks == 1 ? 2 : 1)
            for (int j0 = 0; j0 <= i0; j0 += 32) {
                float sc[4][4];  // S·2^(15−E): the factor back (sf) goes into the decays below
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const uint4 u = *reinterpret_cast<const uint4*>(
                        s_strip + (j0 / 32) * kTileWords + half * 128);
                    const uint32_t v[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
                    for (int q = 0; q < 4; ++q) {
                        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&v[q]));
                        sc[2 * half + q / 2][2 * (q % 2)] = f.x;
                        sc[2 * half + q / 2][2 * (q % 2) + 1] = f.y;
                    }
                }
                const float sf = s_down[j0 / 32];
                // x rows j0 + 16·hb.. (stored [j][p]: ldmatrix.trans), loaded while W is computed
                // (both halves when they fit in registers).
                constexpr int kXB = kP <= (kMinBlocks == 1 ? 80 : 64) ? 2 : 1;
                uint32_t xb[kXB][kP / 16][4];
                auto load_x = [&](int hb, uint32_t(&dst)[kP / 16][4]) {
                    const T* rows = xs_c + (j0 + 16 * hb) * kXRow;
#pragma unroll
                    for (int pt = 0; pt < kP / 16; ++pt) ldsm_x4_t(dst[pt], rows + x_lane[pt]);
                };
#pragma unroll
                for (int hb = 0; hb < kXB; ++hb) load_x(hb, xb[hb]);
                // W = S · exp(Scs_i − Scs_j) · Δ_j. Where the decay within the 32-token block is
                // at most e^kFactorRange and Scs never increases, the decay factors into a row
                // part exp(Scs_i − Scs_j0) <= 1 (two exponentials a thread) and the column part
                // g_s (once per chunk): two multiplies an element instead of an exponential.
                // Products it flushes to zero are below 1e-38 · e^kFactorRange ≈ 1e-24.
                float w[4][4];
                const float cs_j0 = cs_s[j0];
                if (mono && cs_j0 - cs_s[j0 + 31] <= kFactorRange) {
                    const float r0 = __expf(cs0 - cs_j0) * sf, r1 = __expf(cs1 - cs_j0) * sf;
#pragma unroll
                    for (int t = 0; t < 4; ++t) {
                        const float2 g =
                            *reinterpret_cast<const float2*>(g_s + j0 + 8 * t + 2 * qd);
                        w[t][0] = sc[t][0] * r0 * g.x;
                        w[t][1] = sc[t][1] * r0 * g.y;
                        w[t][2] = sc[t][2] * r1 * g.x;
                        w[t][3] = sc[t][3] * r1 * g.y;
                    }
                } else {
#pragma unroll
                    for (int t = 0; t < 4; ++t) {
                        const int ja = j0 + 8 * t + 2 * qd;
                        const float csa = cs_s[ja], csb = cs_s[ja + 1];
                        const float da = dt_s[ja] * sf, db = dt_s[ja + 1] * sf;
                        w[t][0] = sc[t][0] * __expf(fminf(cs0 - csa, 0.0f)) * da;
                        w[t][1] = sc[t][1] * __expf(fminf(cs0 - csb, 0.0f)) * db;
                        w[t][2] = sc[t][2] * __expf(fminf(cs1 - csa, 0.0f)) * da;
                        w[t][3] = sc[t][3] * __expf(fminf(cs1 - csb, 0.0f)) * db;
                    }
                }
                uint32_t a[2][4];
                const bool diag = j0 + 31 > i0;
                const int ia = i0 + gr, ib = ia + 8;
#pragma unroll
                for (int t = 0; t < 4; ++t) {
                    const int ja = j0 + 8 * t + 2 * qd;
                    if (diag) {
                        if (ja > ia) w[t][0] = 0.0f;
                        if (ja + 1 > ia) w[t][1] = 0.0f;
                        if (ja > ib) w[t][2] = 0.0f;
                        if (ja + 1 > ib) w[t][3] = 0.0f;
                    }
                    a[t / 2][2 * (t % 2)] = M::pack(w[t][0], w[t][1]);
                    a[t / 2][2 * (t % 2) + 1] = M::pack(w[t][2], w[t][3]);
                }
#pragma unroll
                for (int hb = 0; hb < 2; ++hb) {
                    if (kXB == 1 && hb == 1) load_x(1, xb[0]);
                    const int xi = kXB == 2 ? hb : 0;
#pragma unroll
                    for (int pt = 0; pt < kP / 16; ++pt) {
                        M::mma(acc[2 * pt], a[hb], xb[xi][pt][0], xb[xi][pt][1]);
                        M::mma(acc[2 * pt + 1], a[hb], xb[xi][pt][2], xb[xi][pt][3]);
                    }
                }
            }
            // D skip and store; with SsdGate, v = y · silu(z) stored as v · w, and Σ v² per row.
            // With y_stage the values go to the strip's C rows first (dead: their fragments are in
            // cf; with the gate each lane overwrites the z values it has just read) and leave as
            // 16-byte row pieces, where a lane's 4-byte stores would fill half of 8 rows' sectors.
            // (a row of y fits in a C row)
            const bool stage = kP <= kN && p.y_stage && (!kPair || hd != h);
            if constexpr (kGate) {
                cp_async_wait<0>();
                __syncwarp();  // the strip's z rows (in Cs) from every lane's copies
            } else {
                if (stage) __syncwarp();  // every lane's ldmatrix of the strip's C rows is done
            }
            [[maybe_unused]] float ss[2] = {0.0f, 0.0f};
            // The lane's two rows go to the strip's C rows (stage) or to y. Rows past len are
            // computed too (their x, z and C rows are zero-filled; their values reach only
            // staged rows that are not copied out, y stores that are skipped and row sums that
            // are not stored): one predicate a store instead of a branch around each element.
            T* out_row[2];
            bool keep[2];
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int i = i0 + gr + 8 * half;
                out_row[half] = stage ? Cs + i * kLdC : y + static_cast<int64_t>(i) * H * kP;
                keep[half] = stage || i < len;
            }
#pragma unroll
            for (int t = 0; t < kP / 8; ++t) {
                [[maybe_unused]] float2 w2;  // kGate: the norm weights of the lane's two columns
                if constexpr (kGate)
                    w2 = *reinterpret_cast<const float2*>(p.gate_w + hd * kP + 8 * t + 2 * qd);
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const int col = 8 * t + 2 * qd;
                    const float2 xv = M::unpack(*reinterpret_cast<const uint32_t*>(
                        xs_c + (i0 + 8 * half) * kXRow + xo(gr, col)));
                    float v0 = fmaf(Dh, xv.x, acc[t][2 * half]);
                    float v1 = fmaf(Dh, xv.y, acc[t][2 * half + 1]);
                    if constexpr (kGate) {
                        const int i = i0 + gr + 8 * half;
                        const float2 z2 =
                            M::unpack(*reinterpret_cast<const uint32_t*>(Cs + i * kLdC + col));
                        v0 *= silu<T>(z2.x);
                        v1 *= silu<T>(z2.y);
                        ss[half] = fmaf(v1, v1, fmaf(v0, v0, ss[half]));
                        v0 *= w2.x;
                        v1 *= w2.y;
                    }
                    if (keep[half])
                        *reinterpret_cast<uint32_t*>(out_row[half] + col) = M::pack(v0, v1);
                }
            }
            if (stage) {
                __syncwarp();
                constexpr int kYV = kP / 8;  // 16-byte pieces per row
                for (int v = lane; v < 16 * kYV; v += 32) {
                    const int i = i0 + v / kYV, cv = (v % kYV) * 8;
                    if (i < len)
                        *reinterpret_cast<uint4*>(y + static_cast<int64_t>(i) * H * kP + cv) =
                            *reinterpret_cast<const uint4*>(Cs + i * kLdC + cv);
                }
            }
            if constexpr (kGate) {
                // A row's kP channels are spread over the 4 lanes of a quad (qd).
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    float v = ss[half];
                    v += __shfl_xor_sync(0xffffffffu, v, 1);
                    v += __shfl_xor_sync(0xffffffffu, v, 2);
                    const int i = i0 + gr + 8 * half;
                    if (qd == 0 && i < len) p.gate_ssq[(start + i) * H + hd] = v;
                }
            }
        }
    };
    outputs(Xs, h, monotone[0]);
    if constexpr (kPair) {
        // The second head: its Scs, Δ and g (every warp is done with the first's), its state
        // passing (prev into Ps), its output.
        __syncthreads();
        uint64_t* const prof1 = prof ? prof + 8 : nullptr;  // its own (chunk, head) stamps
        if (prof1) {
            prof[5] = global_ns();
            prof1[0] = prof1[1] = prof1[2] = prof[5];
        }
        if (tid < qa) {
            cs_s[tid] = scs[1];
            dt_s[tid] = d[1];
        }
        put_g(scs[1], d[1]);
        pass_state(h + 1, st1, cs_last1, false, prof1);
        outputs(Xs + qa * kXRow, h + 1, monotone[1]);
        if (p.prof) {
            __syncthreads();
            if (prof1) prof1[5] = global_ns();
        }
    } else if (p.prof) {
        __syncthreads();
        if (prof) prof[5] = global_ns();
    }
}

bool aligned16(const void* ptr) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
}

// The dynamic shared memory of one block, for the kernel's carve-up at its top: C, B {qa, kLdC},
// x {qa, kLdX}, prev {head_dim, kLdC} in the activation dtype, then cs, Δ, f, g {qa} f32.
// B's region also holds the S record (s_record_words) after the chunk state. A pair (kPair) has
// two heads' x rows, unpadded.
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

// FusedParams::z_early (the gate's z copy before C·prevᵀ): on by default, DUALITY_SSD_Z_EARLY=0
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

// Pairs of heads per block (kPair; DUALITY_SSD_PAIR=0 turns them off): where a chunk is longer
// than kTwoPerSmChunk (one block per SM), head_dim 64 and d_state 128 (the instantiation), an
// even number of heads per group, and both heads' x rows fit beside B, C and prev. Each block
// then loads B and C once for two heads, and the second head's chunk state and output run
// without a load phase of their own (docs/ssd-fused-notes.md, v15). Its shared memory, or 0.
size_t pair_smem_bytes(const SsdArgs& a, DType act) {
    static const bool on = !env_is("DUALITY_SSD_PAIR", "0");
    if (!on || a.chunk_size <= kTwoPerSmChunk || a.head_dim != 64 || a.d_state != 128 ||
        (a.n_head / a.n_group) % 2 != 0)
        return 0;
    static const int limit = max_smem_optin();
    const size_t smem = smem_bytes(a, act, true);
    return smem + kStaticSmemReserve <= static_cast<size_t>(limit) ? smem : 0;
}

bool shape_ok(int64_t P, int64_t N) {
    return (P == 32 || P == 64 || P == 80 || P == 128) && (N == 64 || N == 128 || N == 256);
}

template <typename T, int kP, int kN, int kMinBlocks, bool kGate, bool kPair = false>
void launch_kernel(const FusedParams& fp, int64_t n_chunk, size_t smem, cudaStream_t stream) {
    static size_t configured = 0;  // per instantiation: the dynamic limit set so far
    auto* kernel = ssd_fused_kernel<T, kP, kN, kMinBlocks, kGate, kPair>;
    if (smem > configured) {
        DUALITY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(smem)));
        configured = smem;
    }
    // The S and head blocks (the kernel's item order), G S blocks ahead.
    const int64_t blocks = (n_chunk + 1) * fp.n_group + n_chunk * fp.n_head / (kPair ? 2 : 1);
    FusedParams q = fp;
    // (Pairs: never by default; forced on it measured slower at every length, v15.)
    q.early_s_wait = early_s_wait_for(blocks, kMinBlocks == 1 && !kPair);
    kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(q);
    DUALITY_CUDA_LAUNCH_CHECK();
}

// The gate epilogue's instantiation where asked (fp.gate_z; head_dim 64, d_state 128 only), the
// pairs' where pair_smem is set (pair_smem_bytes: only for head_dim 64, d_state 128 and chunks over
// 128 tokens, so only ever seen here with one block per SM).
template <typename T, int kP, int kN, int kMinBlocks>
void launch_blocks(const FusedParams& fp, int64_t n_chunk, size_t smem, size_t pair_smem,
                   cudaStream_t stream) {
    if constexpr (kP == 64 && kN == 128) {
        if (fp.gate_z) {
            launch_kernel<T, kP, kN, kMinBlocks, true>(fp, n_chunk, smem, stream);
            return;
        }
        if constexpr (kMinBlocks == 1) {
            if (pair_smem) {
                launch_kernel<T, kP, kN, 1, false, true>(fp, n_chunk, pair_smem, stream);
                return;
            }
        }
    }
    launch_kernel<T, kP, kN, kMinBlocks, false>(fp, n_chunk, smem, stream);
}

// Whether two blocks of the two-per-SM instantiation are resident at once with `smem` bytes of
// dynamic shared memory (registers and the shared-memory carve-out as the device has them).
template <typename T, int kP, int kN>
bool two_fit(size_t smem) {
    static size_t checked = 0;  // per instantiation: the smem last asked about, and the answer
    static bool fits = false;
    if (smem != checked) {
        auto* kernel = ssd_fused_kernel<T, kP, kN, 2, false, false>;  // (the gate's: the same)
        DUALITY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(smem)));
        int blocks = 0;
        DUALITY_CUDA_CHECK(
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, smem));
        fits = blocks >= 2;
        checked = smem;
    }
    return fits;
}

template <typename T, int kP, int kN>
void launch(const FusedParams& fp, int64_t n_chunk, size_t smem, size_t pair_smem,
            cudaStream_t stream) {
    if constexpr (kN == 256) {  // one block per SM: two never fit (over 100 KB at chunk 64)
        launch_blocks<T, kP, kN, 1>(fp, n_chunk, smem, pair_smem, stream);
    } else if (two_per_sm(fp.chunk_size, smem) && two_fit<T, kP, kN>(smem)) {
        launch_blocks<T, kP, kN, 2>(fp, n_chunk, smem, pair_smem, stream);
    } else {
        launch_blocks<T, kP, kN, 1>(fp, n_chunk, smem, pair_smem, stream);
    }
}

template <typename T, int kP>
void launch_n(const FusedParams& fp, int64_t N, int64_t n_chunk, size_t smem, size_t pair_smem,
              cudaStream_t s) {
    if (N == 64) {
        launch<T, kP, 64>(fp, n_chunk, smem, pair_smem, s);
    } else if (N == 128) {
        launch<T, kP, 128>(fp, n_chunk, smem, pair_smem, s);
    } else {
        launch<T, kP, 256>(fp, n_chunk, smem, pair_smem, s);
    }
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
    auto fit_n = [&]<typename T, int kP>() {
        return a.d_state == 64 ? two_fit<T, kP, 64>(smem) : two_fit<T, kP, 128>(smem);
    };
    auto fit = [&]<typename T>() {
        switch (a.head_dim) {
            case 32:
                return fit_n.template operator()<T, 32>();
            case 64:
                return fit_n.template operator()<T, 64>();
            case 80:
                return fit_n.template operator()<T, 80>();
            default:
                return fit_n.template operator()<T, 128>();
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
    // The raw rows {qa + 3, head_dim} go where prev {head_dim, d_state + 8} goes later.
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
