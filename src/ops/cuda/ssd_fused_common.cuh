// The fused SSD kernel's shared pieces (ssd_fused_kernel.cuh, ssd_fused_launch.cuh and the host
// side, ssd_fused.cu, include this): its constants,
// its parameter block FusedParams, the PTX wrappers and the row copies it loads shared memory with,
// the activation dtype's MMA and pair conversions (Act), the slot state's loads and stores, the
// layout of the split-S record (tiles_before, s_record_words) and the S flags (device code, and
// the constants the host side sizes shared memory with); the meaning of every field and step is
// in ssd_fused.cu's header comment.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "core/cuda/sync.cuh"
#include "ops/cuda/mma.cuh"
#include "ops/cuda/ops.h"
#include "ops/cuda/ssd_operands.h"

namespace duality::cuda::fused {

using sync::cp_async16;
using sync::smem_addr;

constexpr int kWarps = 8, kThreads = kWarps * 32;
constexpr int kMaxChunk = 256;
constexpr int kSyncHeader = 64;              // u32 words before the flags: [0] ticket, [1] epoch
constexpr size_t kStaticSmemReserve = 1024;  // bytes kept for the static shared memory
constexpr float kFactorRange = 32.0f;  // largest decay exponent factored out of a 32-token block
// Chunks of at most this many tokens run two blocks per SM where they fit (two_per_sm).
constexpr int kTwoPerSmChunk = 128;

// The kernel's parameter block: the operands (ssd_operands.h; head_dim and d_state are also
// template arguments) and what only the fused kernel reads.
struct FusedParams : ssd::Operands {
    int state_dtype = 0;  // 0 f32, 1 f16, 2 bf16 (the slots)
    // {entries, n_head} × head_dim·d_state f32 or f16 (fragment order): the states leaving the
    // chunks, an entry per chunk, or with sp_ring two per sequence (state_entry).
    void* sp = nullptr;
    bool sp_f16 = false;  // (SsdArgs::passed_f16)
    bool sp_ring = false;
    const void* gate_z = nullptr;  // SsdGate: z {n_tokens, n_head · head_dim} act, or nullptr
    int64_t z_stride = 0;
    const float* gate_w = nullptr;  // SsdGate: the gated norm's weight {n_head · head_dim}
    float* gate_ssq = nullptr;      // SsdGate: {n_tokens, n_head} f32 sums of squares
    // SsdConv (with the gate only): x is raw; conv_w {n_head · head_dim, 4} f32 or nullptr (no
    // conv), conv_b {n_head · head_dim} or nullptr, conv_state per slot {3, conv_ld} f32.
    const float* conv_w = nullptr;
    const float* conv_b = nullptr;
    const float* conv_state = nullptr;
    int64_t conv_ld = 0, conv_slot_stride = 0;
    // RawDt (with the gate only): where raw_dt.dt_raw is set, Δ is computed here from it
    // ({n_tokens, n_head} act), in place of dt.
    RawDt raw_dt;
    uint32_t* s_tiles = nullptr;  // {n_chunk, n_group} records of s_record_words(qa) u32
    uint32_t* sync = nullptr;     // [kSyncHeader] counters, then flags {n_chunk, n_head} (states)
                                  // and {n_chunk, n_group} (S)
    uint64_t* prof = nullptr;     // nullptr, or {n_chunk · n_head, 8}: ssd::fused_profile
    bool early_s_wait = false;    // wait for the chunk's S during the loads (step 1), not in 3
    // C's rows issued once x and B have landed (before step 2), not beside them: the load phase
    // then waits for x and B alone, and C lands during steps 2 and 3.
    bool defer_c = false;
    // y through the strip's C rows, stored as 16-byte row pieces (y 16-byte aligned).
    bool y_stage = false;
    // SsdGate: each warp copies its strip's z rows as soon as it holds the strip's C fragments,
    // before C·prevᵀ, not after it: the copy then has C·prevᵀ and the intra loop to land in (the
    // strips' form of step 4; the warpgroup form copies after C·prevᵀ's products either way).
    bool z_early = false;
};

// The state workspace's entries for a batch: one per chunk, or with `ring` (where that is fewer)
// two per sequence, which its chunks take in turn. Two suffice: chunk k of a sequence overwrites
// the entry that chunk k − 1 read its prev from only after k − 1's flag, which it releases after
// that read; and a 32k-token sequence's states (2.7b: 128 chunks × 2.6 MB) shrink to 5.2 MB,
// which stays in L2 instead of being written back to memory.
__host__ __device__ inline int64_t state_entries(int64_t n_chunk, int64_t n_seq, bool ring) {
    return ring && 2 * n_seq < n_chunk ? 2 * n_seq : n_chunk;
}
// The entry of chunk c of sequence seq, whose first chunk is chunk0.
__device__ inline int64_t state_entry(bool ring, int64_t c, int seq, int64_t chunk0) {
    return ring ? 2 * static_cast<int64_t>(seq) + ((c - chunk0) & 1) : c;
}

// ---- PTX wrappers -----------------------------------------------------------------------------
// The shared offset of rows of kLd elements (C's and B's rows): cp_rows' `at` for them.
template <int kLd>
struct RowMajor {
    __device__ int operator()(int r, int col) const { return r * kLd + col; }
};
// cp.async of a tile's rows 0..rows−1 into shared memory by the block's threads, rows >= len
// zero-filled: row r of the global tile starts at g + r · g_stride, kV 16-byte vectors a row;
// `at(r, col)` is an element's shared offset from `dst`, for rows r and r + 8 one row stride
// (`row_elems`) apart times 8 (any swizzle depends on r & 7 only). Where kThreads is a multiple
// of kV, a thread copies one column of vectors, every kThreads / kV-th row, so its addresses are
// computed once and stepped (the per-vector division and address arithmetic cost as many
// instructions as a block's loads take cycles: docs/ssd-fused-notes.md, v18).
template <int kV, typename T, typename At>
__device__ __forceinline__ void cp_rows(T* dst, int row_elems, const At& at, const T* g,
                                        int64_t g_stride, int rows, int len) {
    const int tid = static_cast<int>(threadIdx.x);
    if constexpr (kThreads % kV == 0 && (kThreads / kV) % 8 == 0) {
        constexpr int kStep = kThreads / kV;  // rows between a thread's vectors
        const int r0 = tid / kV, cv = (tid % kV) * 8;
        T* d = dst + at(r0, cv);
        const T* src = g + r0 * g_stride + cv;
        for (int r = r0; r < rows; r += kStep) {
            const bool ok = r < len;
            cp_async16(d, ok ? src : g, ok ? 16 : 0);
            d += kStep * row_elems;
            src += kStep * g_stride;
        }
    } else {
        for (int v = tid; v < rows * kV; v += kThreads) {
            const int r = v / kV, cv = (v % kV) * 8;
            const bool ok = r < len;
            cp_async16(dst + at(r, cv), ok ? g + r * g_stride + cv : g, ok ? 16 : 0);
        }
    }
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ uint32_t sm_id() {
    uint32_t v;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(v));
    return v;
}

// The activation dtype's MMA and pair conversions (T: __half or __nv_bfloat16).
template <typename T>
struct Act {
    static constexpr bool kHalf = std::is_same_v<T, __half>;
    __device__ static __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
        mma_m16n8k16<T>(d, a, b0, b1);
    }
    __device__ static __forceinline__ uint32_t pack(float lo, float hi) {
        if constexpr (kHalf) {
            const __half2 v = __floats2half2_rn(lo, hi);
            return *reinterpret_cast<const uint32_t*>(&v);
        } else {
            const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
            return *reinterpret_cast<const uint32_t*>(&v);
        }
    }
    __device__ static __forceinline__ float2 unpack(uint32_t u) {
        if constexpr (kHalf) {
            return __half22float2(*reinterpret_cast<const __half2*>(&u));
        } else {
            return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u));
        }
    }
};

__device__ __forceinline__ float slot_load(const void* base, int64_t i, int dt) {
    if (dt == 0) return static_cast<const float*>(base)[i];
    if (dt == 1) return __half2float(static_cast<const __half*>(base)[i]);
    return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
}
__device__ __forceinline__ void slot_store(void* base, int64_t i, int dt, float v) {
    if (dt == 0) {
        static_cast<float*>(base)[i] = v;
    } else if (dt == 1) {
        static_cast<__half*>(base)[i] = __float2half_rn(v);
    } else {
        static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v);
    }
}

// Split S: the causal 16×32 tiles of S = C·Bᵀ of a chunk, strip s (rows 16·s..) times
// the 32-token blocks jb <= s / 2, numbered strip by strip: tiles_before(s) tiles precede strip s.
__host__ __device__ constexpr int tiles_before(int s) {
    return s % 2 == 0 ? (s / 2) * (s / 2 + 1) : ((s + 1) / 2) * ((s + 1) / 2);
}
// One tile is 256 u32 (1 KiB of f16 pairs): [half][lane][4], half 0 holding the lane's
// accumulator fragments of columns 0-15 (n-tiles 0, 1), half 1 of columns 16-31, each pair
// (row gr, columns 2qd, 2qd+1) then (row gr + 8, ..) packed in one u32: the order in which a lane
// holds them after the MMAs, so a lane stores and loads its 32 bytes as two 16-byte vectors
// (consecutive lanes, no bank conflicts). A tile is stored as S·2^(15−E), E the exponent of its
// largest |S| (so in [2^14, 2^15): f16 keeps 11 bits of S relative to the tile's largest value
// at any magnitude, bf16 would keep 8 and lose the split's accuracy), and its factor back 2^(E−15)
// after the chunk's tiles: a record {tiles, 256} u32 then {tiles rounded up to 4} f32.
constexpr int kTileWords = 256;
__host__ __device__ constexpr int s_record_words(int qa) {
    return tiles_before(qa / 16) * kTileWords + (tiles_before(qa / 16) + 3) / 4 * 4;
}

// Shared-memory layout of one block (rows padded by 8 elements: 16-byte aligned rows whose
// ldmatrix accesses hit distinct banks).
template <typename T, int kP, int kN>
struct Smem {
    static constexpr int kLdC = kN + 8;  // C, B and prev rows
    static constexpr int kLdX = kP + 8;  // x rows
};

// The S flag of (chunk c, group g): set to the launch's epoch once its S tiles are stored.
__device__ __forceinline__ uint32_t* s_flag(const FusedParams& p, int64_t c, int g) {
    return p.sync + kSyncHeader + p.n_chunk * p.n_head + c * p.n_group + g;
}

}  // namespace duality::cuda::fused
