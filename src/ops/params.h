// Plain parameter structs for the model's ops, shared by every backend (CPU now, CUDA later).
// Pointers are non-owning; `*_stride` values count elements between consecutive rows (tokens),
// so ops can read x, B and C straight out of the conv output without copies.
#pragma once

#include <cstdint>

namespace duality {

// A per-row factor on h that a gated norm left to its consumer (ssd_fused's SsdGate): row r of
// h is multiplied by rsqrt(Σ_k ssq[r, k] / count + eps) before it is added. Since out_proj is
// linear, r · (g · W_outᵀ) equals (r · g) · W_outᵀ: the normalization commutes with it.
struct RowScale {
    const float* ssq = nullptr;  // {rows, n_part} f32: partial sums of squares; nullptr: none
    int64_t n_part = 0;
    float count = 0.0f;  // the number of squares summed (the norm group's size)
    float eps = 0.0f;
};

// Depthwise causal conv1d over `seqlen` new rows, continuing from `state`, then SiLU.
struct Conv1dParams {
    int64_t seqlen = 0, channels = 0, width = 0;
    const float* x = nullptr;  // {seqlen, channels}, rows x_stride apart: raw (pre-conv) input
    int64_t x_stride = 0;
    // {channels, width}; weight[:, width-1] multiplies the newest row
    const float* weight = nullptr;
    const float* bias = nullptr;  // {channels} or nullptr
    float* state = nullptr;       // {width-1, channels}: previous raw rows, oldest first; updated
    float* out = nullptr;         // {seqlen, channels}, dense
};

// The SSD recurrence of spec 6.1 for one sequence, from `state` (updated in place):
//   S_t = exp(A_h Δ_t) S_{t-1} + Δ_t x_t ⊗ B_t,   y_t = S_t C_t + D_h x_t
struct SsdParams {
    int64_t seqlen = 0, n_head = 0, head_dim = 0, d_state = 0, n_group = 1, chunk_size = 256;
    const float* x = nullptr;  // {seqlen, n_head, head_dim}, rows x_stride apart
    int64_t x_stride = 0;
    const float* B = nullptr;  // {seqlen, n_group, d_state}, rows bc_stride apart
    const float* C = nullptr;  // {seqlen, n_group, d_state}, rows bc_stride apart
    int64_t bc_stride = 0;
    const float* dt = nullptr;  // {seqlen, n_head}: Δ after softplus and clamp, dense
    const float* A = nullptr;   // {n_head}: A = -exp(A_log)
    const float* D = nullptr;   // {n_head} or nullptr
    float* state = nullptr;     // {n_head, head_dim, d_state}, fp32: initial in, final out
    float* y = nullptr;         // {seqlen, n_head, head_dim}, dense
    // ssd_chunked: round the state passed from each chunk to the next to f16 (the CUDA fused
    // SSD's SsdArgs::passed_f16); the final state stays f32.
    bool passed_f16 = false;
};

}  // namespace duality
