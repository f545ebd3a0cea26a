// The fused SSD prefill's kernel (ssd_fused.cu says what it computes, how it is parallelized and
// its limits): the template, instantiated per head_dim by ssd_fused_p32.cu, ssd_fused_p64.cu,
// ssd_fused_p80.cu and ssd_fused_p128.cu through ssd_fused_instances.cuh, which alone include
// this, so that the instantiations compile in parallel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "core/cuda/sync.cuh"
#include "ops/cuda/activation.cuh"
#include "ops/cuda/dt_softplus.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"
#include "ops/cuda/ssd_fused_common.cuh"
#include "ops/cuda/ssd_fused_conv.cuh"
#include "ops/cuda/ssd_fused_score.cuh"
#include "ops/cuda/wgmma.cuh"

namespace duality::cuda::fused {

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
#if defined(DUALITY_WGMMA)
    constexpr bool kWgTarget = true;
#else
    constexpr bool kWgTarget = false;
#endif
    // Step 4 in the warpgroup form (outputs_wg, sm_90a): a pair's heads, and at two blocks per SM
    // head_dim 64 with d_state 128 (the model's chunk 128; the host keeps qa a multiple of 64 for
    // that instantiation: two_fit). Both need x and prev in the swizzled layouts (kSwz), which
    // pairs also take elsewhere (no room for the padding).
    constexpr bool kWg = kWgTarget && (kPair || (kP == 64 && kN == 128 && kMinBlocks == 2));
    constexpr bool kSwz = kPair || kWg;
    extern __shared__ __align__(128) unsigned char smem[];
    __shared__ uint32_t s_ticket, s_epoch;
    __shared__ float s_warp_sum[kHeads][kWarps];
    __shared__ float s_cs_last1;  // kPair: the second head's Scs_last

    // Rows are allocated and zero-filled up to a multiple of 32 (the intra loop's token block).
    const int Q = p.chunk_size, qa = (Q + 31) & ~31;
    // After the chunk state, B's region holds the chunk's S record.
    const int b_elems = max(qa * kLdC, s_record_words(qa) * 2);
    // x rows: padded (kLdX), or with kSwz rows of kP whose 16-byte pieces are swizzled by the row
    // (piece ^ (row & 7)), so that ldmatrix's 8 rows still hit distinct banks (and the warpgroup
    // MMAs' 128-byte swizzle reads them). xo(row, column) is an element's offset either way.
    constexpr int kXRow = kSwz ? kP : kLdX;
    const auto xo = [](int r, int col) {
        if constexpr (kSwz) {
            return r * kP + ((((col >> 3) ^ r) & 7) << 3) + (col & 7);
        } else {
            return r * kLdX + col;
        }
    };
    // prev's rows: padded (kLdC), or with kSwz in 64-column panels of kP rows of 128 bytes
    // swizzled like x's (the warpgroup MMAs' K-major B operand); po(row, column) is an element's
    // offset either way.
    const auto po = [](int r, int col) {
        if constexpr (kSwz) {
            return (col >> 6) * kP * 64 + r * 64 + ((((col >> 3) ^ r) & 7) << 3) + (col & 7);
        } else {
            return r * kLdC + col;
        }
    };
    constexpr int kPsElems = kSwz ? kP * kN : kP * kLdC;
    // The regions: C, B (then the S record), x, prev, then the f32 rows; with kSwz x and prev
    // first, on 1,024-byte boundaries (the swizzle pattern's), from the first such boundary of the
    // dynamic buffer (prev's panels are 1,024 bytes smaller than its padded rows, which the host's
    // size has), then for a pair C, B and the f32 rows, else the f32 rows, C and B (SsdConv's raw
    // rows, {qa + 3, kP} in prev's region, then run up to 3 rows into the f32 rows, which are
    // written only after the conv has read them: at chunk 128, 384 of their 2,048 bytes).
    T *Cs, *Bs, *Xs, *Ps;  // {qa, kLdC} C rows; {qa, kLdC} B rows, then the S record;
                           // {kHeads, qa, kXRow} x rows of head h (and h + 1); prev (kPsElems)
    float* cs_s;           // {qa}: Scs
    if constexpr (kSwz) {
        Xs = reinterpret_cast<T*>(smem + ((1024u - (sync::smem_addr(smem) & 1023u)) & 1023u));
        Ps = Xs + kHeads * qa * kXRow;
        if constexpr (kPair) {
            Cs = Ps + kPsElems;
            Bs = Cs + qa * kLdC;
            cs_s = reinterpret_cast<float*>(Bs + b_elems);
        } else {
            static_assert(!kGate || (kTwoPerSmChunk + 3) * kP <= kP * kN + 8 * kTwoPerSmChunk,
                          "SsdConv's raw rows fit in prev's region and the f32 rows");
            cs_s = reinterpret_cast<float*>(Ps + kPsElems);
            Cs = reinterpret_cast<T*>(cs_s + 4 * qa);
            Bs = Cs + qa * kLdC;
        }
    } else {
        Cs = reinterpret_cast<T*>(smem);
        Bs = Cs + qa * kLdC;
        Xs = Bs + b_elems;
        Ps = Xs + kHeads * qa * kXRow;
        cs_s = reinterpret_cast<float*>(Ps + kPsElems);
    }
    float* dt_s = cs_s + qa;  // {qa}: Δ (0 past len)
    float* f_s = dt_s + qa;   // {qa}: exp(Scs_last − Scs_j)·Δ_j
    float* g_s = f_s + qa;    // {qa}: exp(Scs_j0 − Scs_j)·Δ_j, j0 = j's 32-token block start

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
    [[maybe_unused]] ConvX<T, kP> cx;
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
            cx.run(len, first, Ps, Xs, xo);
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
#if defined(DUALITY_WGMMA)
    // (x's copies, landed, or the conv prologue's stores, before the warpgroup MMAs read them in
    // step 4)
    if constexpr (kWg) wgmma::proxy_fence();
#endif
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
                        *reinterpret_cast<uint32_t*>(Ps + po(pp, nn)) = M::pack(pv.x, pv.y);
                        *reinterpret_cast<uint32_t*>(Ps + po(pp + 8, nn)) = M::pack(pv.z, pv.w);
                    }
#if defined(DUALITY_WGMMA)
                    // (prev's stores before the warpgroup MMAs read them; before this thread's
                    // global stores, in case the proxy fence waits for those too)
                    if constexpr (kWg) wgmma::proxy_fence();
#endif
#pragma unroll
                    for (int t = 0; t < kT; ++t) {
                        const int pp = p0 + gr, nn = n0 + 8 * (t0 + t) + 2 * qd;
                        const float4 pv = pv_all[t];
                        const float(&lv)[4] = stv[it][t0 + t];
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
    // W = S · exp(Scs_i − Scs_j) · Δ_j of strip rows i0.. and the 32-token block j0, as two
    // m16n8k16 A fragments (columns j0.., j0 + 16..), masked above the diagonal; s_strip and s_down
    // are the strip's S tiles (the lane's words) and their factors back.
    const auto w_frags = [&](uint32_t(&a)[2][4], const uint32_t* s_strip, const float* s_down,
                             int j0, int i0, float cs0, float cs1, bool mono) {
        float sc[4][4];  // S·2^(15−E): the factor back (sf) goes into the decays below
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const uint4 u =
                *reinterpret_cast<const uint4*>(s_strip + (j0 / 32) * kTileWords + half * 128);
            const uint32_t v[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&v[q]));
                sc[2 * half + q / 2][2 * (q % 2)] = f.x;
                sc[2 * half + q / 2][2 * (q % 2) + 1] = f.y;
            }
        }
        const float sf = s_down[j0 / 32];
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
                const float2 g = *reinterpret_cast<const float2*>(g_s + j0 + 8 * t + 2 * qd);
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
    };
    // The D skip and the stores of strip rows i0.. of head hd (acc: the m16n8k16 accumulators of
    // its kP columns); with SsdGate, v = y · silu(z) stored as v · w, and Σ v² per row.
    const auto finish = [&](float(&acc)[kP / 8][4], int i0, const T* xs_c, int hd, float Dh, T* y) {
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
                if (keep[half]) *reinterpret_cast<uint32_t*>(out_row[half] + col) = M::pack(v0, v1);
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
    };
    // kGate: a strip's C rows (i0..) are dead once its warp holds their fragments (no other warp
    // reads them): the strip's z rows go there, copied while C·prevᵀ (with z_early) and the intra
    // loop run. The warp barrier orders every lane's ldmatrix of those rows before the copies
    // that overwrite them.
    [[maybe_unused]] const auto copy_z = [&](int i0) {
        __syncwarp();
        const T* zg = static_cast<const T*>(p.gate_z) + (start + i0) * p.z_stride + h * kP;
        constexpr int kZV = kP / 8;  // 16-byte vectors per row
        for (int v = lane; v < 16 * kZV; v += 32) {
            const int r = v / kZV, cv = (v % kZV) * 8;
            const bool ok = i0 + r < len;
            cp_async16(Cs + (i0 + r) * kLdC + cv, ok ? zg + r * p.z_stride + cv : zg, ok ? 16 : 0);
        }
        cp_async_commit();
    };
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
            if constexpr (kGate) {
                if (p.z_early) copy_z(i0);
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
                    ldsm_x4(b[pt], Ps + po(16 * pt + (lane & 7) + 8 * (lane >> 4),
                                           16 * kk + 8 * ((lane >> 3) & 1)));
#pragma unroll
                for (int pt = 0; pt < kP / 16; ++pt) {
                    M::mma(acc[2 * pt], cf[kk], b[pt][0], b[pt][1]);
                    M::mma(acc[2 * pt + 1], cf[kk], b[pt][2], b[pt][3]);
                }
            }
            if constexpr (kGate) {
                if (!p.z_early) copy_z(i0);
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
                uint32_t a[2][4];
                w_frags(a, s_strip, s_down, j0, i0, cs0, cs1, mono);
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
            finish(acc, i0, xs_c, hd, Dh, y);
        }
    };
#if defined(DUALITY_WGMMA)
    // Step 4 with warpgroup MMAs (sm_90a, kWg: a pair's heads, or one head at two blocks per SM;
    // qa a multiple of 64): warpgroup wg takes the 64-row tiles {0, 3} or {1, 2} (five 32-token
    // blocks each at chunk 256; at chunk 128 tile 0 or 1), its warp wl the strip 4·tile + wl.
    // C·prevᵀ is eight m64n64k16 (C's fragments from registers, in two groups of four at two
    // blocks per SM, prev's panels by descriptor) into acc, scaled by exp(Scs_i) once done; then
    // per 32-token block the warps build W (w_frags; zero above the strip's diagonal or past len)
    // and issue two m64n64k16 with x by descriptor into acc, leaving the block's products in flight
    // while the next W is built (wait for all groups but the newest). One accumulator, not one for
    // each product: the pair's kernel holds the second head's chunk state in registers meanwhile,
    // and at 32 registers more ptxas serializes the products (C7513). Timed in isolation first:
    // bench/proto/ssd_outputs_wgmma.cu.
    static_assert(kMaxChunk <= 256, "outputs_wg's tiles {0, 3} and {1, 2}: at most four");
    constexpr int kCParts = kMinBlocks == 1 ? 1 : 2;
    const auto outputs_wg = [&](const T* xs_c, int hd, bool mono) {
        const float Dh = p.D ? p.D[hd] : 0.0f;
        T* y = static_cast<T*>(p.y) + start * static_cast<int64_t>(H) * kP + hd * kP;  // {len, ..}
        const int wg = warp / 4, wl = warp % 4, n_live = (len + 63) / 64;
        for (int ti = 0; ti < 2; ++ti) {
            const int tile = wg == 0 ? 3 * ti : 1 + ti;
            if (tile >= n_live) continue;  // (uniform in the warpgroup)
            const int s = 4 * tile + wl, i0 = 16 * s;
            float acc[32];  // C · prevᵀ, then the tile's y (wgmma.cuh's layout)
            // C · prevᵀ in kCParts groups of products over d_state, each with C's fragments of its
            // columns loaded just before it (the 128-register cap: two parts, the first retired
            // before the second's fragments take its registers).
#pragma unroll
            for (int part = 0; part < kCParts; ++part) {
                if (part > 0) wgmma::wg_wait<0>();
                constexpr int kKK = kN / 16 / kCParts;
                uint32_t cf[kKK][4];
#pragma unroll
                for (int k = 0; k < kKK; ++k)
                    ldsm_x4(cf[k], Cs + (i0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * kLdC +
                                       16 * (part * kKK + k) + 8 * (lane >> 4));
                // (Every input of the products defined before the fence: zeros, descriptors.)
                if (part == 0) {
#pragma unroll
                    for (int e = 0; e < 32; ++e) {
                        acc[e] = 0.0f;
                        wgmma::pin(acc[e]);
                    }
                }
                // prev {p, n} K-major: a k16 step is 32 bytes into a panel's rows, 8 rows 1,024
                // apart.
                uint64_t dp[kKK];
#pragma unroll
                for (int k = 0; k < kKK; ++k) {
                    dp[k] = wgmma::smem_desc(Ps + po(0, 16 * (part * kKK + k)), 16, 1024);
                    wgmma::pin(dp[k]);
                }
                wgmma::wg_fence();
#pragma unroll
                for (int k = 0; k < kKK; ++k) wgmma::m64n64k16<T, 0>(acc, cf[k], dp[k]);
                wgmma::wg_commit();
            }
            // (kGate: the strip's C rows are dead now; the z copy lands during the products and
            // the W blocks.)
            if constexpr (kGate) copy_z(i0);
            const float cs0 = cs_s[i0 + gr], cs1 = cs_s[i0 + gr + 8];
            const uint32_t* s_strip =
                reinterpret_cast<const uint32_t*>(Bs) + tiles_before(s) * kTileWords + lane * 4;
            const float* s_down = reinterpret_cast<const float*>(Bs) +
                                  tiles_before(qa / 16) * kTileWords + tiles_before(s);
            const bool live = s < n_strip;
            const auto build = [&](int jb, uint32_t(&a)[2][4]) {
                const int j0 = 32 * jb;
                if (live && j0 <= i0) {
                    w_frags(a, s_strip, s_down, j0, i0, cs0, cs1, mono);
                } else {
#pragma unroll
                    for (int k = 0; k < 2; ++k)
#pragma unroll
                        for (int e = 0; e < 4; ++e) a[k][e] = 0u;
                }
            };
            // Block jb's two products (x {j, p} N-major: 8 rows of j 1,024 bytes apart, a k16
            // step 16 rows), left in flight.
            const auto issue = [&](int jb, uint32_t(&a)[2][4]) {
                uint64_t dx[2];
#pragma unroll
                for (int k = 0; k < 2; ++k) {
                    dx[k] = wgmma::smem_desc(xs_c + (32 * jb + 16 * k) * kXRow, 8192, 1024);
                    wgmma::pin(dx[k]);
#pragma unroll
                    for (int e = 0; e < 4; ++e) wgmma::pin(a[k][e]);
                }
                wgmma::wg_fence();
#pragma unroll
                for (int k = 0; k < 2; ++k) wgmma::m64n64k16<T, 1>(acc, a[k], dx[k]);
                wgmma::wg_commit();
            };
            // Block 0's W while C · prevᵀ runs; then the rows scaled by exp(Scs_i) and the blocks
            // in turn, each W built while the block before it is in flight (two register sets:
            // the wait retires the products that read the set to be rebuilt).
            uint32_t a[2][2][4];
            build(0, a[0]);
            wgmma::wg_wait<0>();
            {
                const float e0 = expf(cs0), e1 = expf(cs1);
#pragma unroll
                for (int e = 0; e < 32; ++e) {
                    wgmma::pin(acc[e]);
                    acc[e] *= (e & 2) ? e1 : e0;
                }
            }
            issue(0, a[0]);
            const int n_block = 2 * tile + 2;
            for (int jb = 1; jb < n_block; jb += 2) {
                build(jb, a[1]);
                issue(jb, a[1]);
                wgmma::wg_wait<1>();
                if (jb + 1 < n_block) {
                    build(jb + 1, a[0]);
                    issue(jb + 1, a[0]);
                    wgmma::wg_wait<1>();
                }
            }
            wgmma::wg_wait<0>();
            float out[kP / 8][4];
#pragma unroll
            for (int t = 0; t < kP / 8; ++t)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    wgmma::pin(acc[4 * t + e]);
                    out[t][e] = acc[4 * t + e];
                }
            finish(out, i0, xs_c, hd, Dh, y);
        }
    };
#endif
    // Step 4 of head hd: in the warpgroup form where kWg (alone: with the strips' form beside it as
    // a fallback the pairs' kernel ran 4% slower, its code twice the size), else the strips'.
    const auto output_head = [&](const T* xs_c, int hd, bool mono) {
#if defined(DUALITY_WGMMA)
        if constexpr (kWg) {
            outputs_wg(xs_c, hd, mono);
            return;
        }
#endif
        outputs(xs_c, hd, mono);
    };
    output_head(Xs, h, monotone[0]);
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
        output_head(Xs + qa * kXRow, h + 1, monotone[1]);
        if (p.prof) {
            __syncthreads();
            if (prof1) prof1[5] = global_ns();
        }
    } else if (p.prof) {
        __syncthreads();
        if (prof) prof[5] = global_ns();
    }
}

}  // namespace duality::cuda::fused
