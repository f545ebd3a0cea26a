// Internal to the chunked SSD prefill (ssd_chunked.cu and the ssd_*.cu step kernels): the plan
// every step reads, the workspace layout and the launchers of the five steps (spec 6.2).
//
// Workspace (f32, each region 256-byte aligned), n_chunk = batch.n_chunk, Q = chunk_size:
//   dtc {n_chunk, n_head, Q}            Δ per chunk position (0 past the chunk's length)     K1
//   cs  {n_chunk, n_head, Q}            Scs: chunk-local inclusive cumsum of A·Δ (flat past
//                                       the chunk's length, so cs[Q-1] = the whole-chunk sum) K1
//   cb  {n_chunk, n_group, Q, q_ld}     CB = C·Bᵀ (only i, j < chunk_len with j <= i is valid)   K2
//   st  {n_chunk, n_head, head_dim, n_ld}  K3 writes the chunk-local states; K4 overwrites each
//                                       with `prev`, the state entering the chunk (in place)
// with q_ld = round_up(Q, 4) and n_ld = round_up(d_state, 4) (16-byte aligned rows).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "ops/cuda/ops.h"
#include "ops/cuda/ssd_operands.h"

namespace duality::cuda::ssd {

struct WorkspaceLayout {
    size_t dtc = 0, cs = 0, cb = 0, st = 0, total = 0;  // byte offsets, total size
    int64_t q_ld = 0, n_ld = 0;
};

inline WorkspaceLayout workspace_layout(int64_t n_chunk, int64_t n_head, int64_t head_dim,
                                        int64_t d_state, int64_t n_group, int64_t chunk_size) {
    auto align = [](size_t b) { return (b + 255) / 256 * 256; };
    WorkspaceLayout l;
    l.q_ld = (chunk_size + 3) / 4 * 4;
    l.n_ld = (d_state + 3) / 4 * 4;
    const size_t f = sizeof(float), nc = static_cast<size_t>(n_chunk);
    size_t at = 0;
    l.dtc = at;
    at = align(at + nc * n_head * chunk_size * f);
    l.cs = at;
    at = align(at + nc * n_head * chunk_size * f);
    l.cb = at;
    at = align(at + nc * n_group * chunk_size * l.q_ld * f);
    l.st = at;
    at = align(at + nc * n_head * head_dim * l.n_ld * f);
    l.total = at;
    return l;
}

// Everything the step kernels read (the operands and the workspace regions); passed by value as
// a kernel parameter.
struct Plan : Operands {
    // x, B and C may be read with 16-byte vector loads (aligned bases, strides and offsets).
    bool vec = false;
    // Workspace regions (see the top of this file).
    float* dtc = nullptr;
    float* cs = nullptr;
    float* cb = nullptr;
    float* st = nullptr;
    int64_t q_ld = 0, n_ld = 0;
};

// Checks the arguments (aborts with a message on misuse) and fills *plan, choosing vector or
// scalar loads. Returns false when there is nothing to do (no tokens).
bool make_plan(const SsdArgs& a, const float* dt, void* workspace, DType act, Plan* plan);

// K1: dtc and cs. Independent of the activation dtype.
void launch_chunk_cumsum(const Plan& p, cudaStream_t stream);
// K2: cb. T = float, __half or __nv_bfloat16 (the activation dtype).
template <typename T>
void launch_bmm(const Plan& p, cudaStream_t stream);
// K3: st = chunk-local states.
template <typename T>
void launch_chunk_state(const Plan& p, cudaStream_t stream);
// K4: st = prev (in place) and the final state to each sequence's slot. S = the slot dtype.
template <typename S>
void launch_state_passing(const Plan& p, cudaStream_t stream);
// K5: y.
template <typename T>
void launch_chunk_scan(const Plan& p, cudaStream_t stream);

// ssd_fused with phase timestamps (the timing test's breakdown): stamps {n_chunk · n_head, 8}
// u64, per head block (chunk-major: c · n_head + h; the S blocks record nothing): globaltimer ns
// at [0] start, [1] x/B loaded and cumsum done, [2] chunk state done (warp 0), [3] the chunk's S
// and the predecessor's state available, [4] state published, [5] outputs done; [6] the SM id.
// A block of two heads (ssd_fused.cu, kPair) stamps both entries: the first head's [2] covers both
// chunk states; the second head's [0]-[2] are the first head's [5] (it has no load or chunk-state
// phase of its own), and its [6] is not written. So each entry's span is that head's share of
// its block's time, and the spans add up to the blocks' lifetimes.
void fused_profile(const SsdArgs& a, const float* dt, void* workspace, void* sync, DType act,
                   uint64_t* stamps, cudaStream_t stream);

}  // namespace duality::cuda::ssd
