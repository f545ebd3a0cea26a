// The operands every SSD prefill kernel reads, shared by the five-step path's plan (ssd_plan.h)
// and the fused kernel's parameter block (ssd_fused_common.cuh): the shape, the chunk tables,
// x, B, C, Δ, A, D, the state slots and y, filled once from SsdArgs. Passed by value inside the
// kernels' parameter blocks, so plain data only.
#pragma once

#include <cstdint>

#include "ops/cuda/ops.h"

namespace duality::cuda::ssd {

struct Operands {
    int n_head = 0, n_group = 0, chunk_size = 0, heads_per_group = 0, head_dim = 0, d_state = 0;
    const int32_t* chunk_start = nullptr;  // {n_chunk}
    const int32_t* chunk_len = nullptr;    // {n_chunk}
    const int32_t* chunk_seq = nullptr;    // {n_chunk}
    const int32_t* cu_chunks = nullptr;    // {n_seq + 1}
    const int32_t* slots = nullptr;        // {n_seq}
    const void* x = nullptr;               // {n_tokens, n_head, head_dim} act, rows x_stride apart
    int64_t x_stride = 0;
    const void* B = nullptr;  // {n_tokens, n_group, d_state} act, rows bc_stride apart
    const void* C = nullptr;  // {n_tokens, n_group, d_state} act, rows bc_stride apart
    int64_t bc_stride = 0;
    const float* dt = nullptr;  // {n_tokens, n_head}: Δ after softplus and clamp
    const float* A = nullptr;   // {n_head}
    const float* D = nullptr;   // {n_head} or nullptr
    void* state = nullptr;      // per slot {n_head, head_dim, d_state} state dtype
    int64_t state_slot_stride = 0;
    void* y = nullptr;  // {n_tokens, n_head, head_dim} act, dense
    int64_t n_seq = 0, n_chunk = 0;
};

// The operands of `a` with Δ from `dt` (the caller checks the arguments).
inline void fill_operands(const SsdArgs& a, const float* dt, Operands* o) {
    const VarlenBatch& b = a.batch;
    o->n_head = static_cast<int>(a.n_head);
    o->head_dim = static_cast<int>(a.head_dim);
    o->d_state = static_cast<int>(a.d_state);
    o->n_group = static_cast<int>(a.n_group);
    o->chunk_size = static_cast<int>(a.chunk_size);
    o->heads_per_group = static_cast<int>(a.n_head / a.n_group);
    o->n_seq = b.n_seq;
    o->n_chunk = b.n_chunk;
    o->chunk_start = b.chunk_start;
    o->chunk_len = b.chunk_len;
    o->chunk_seq = b.chunk_seq;
    o->cu_chunks = b.cu_chunks;
    o->slots = b.slots;
    o->x = a.x;
    o->x_stride = a.x_stride;
    o->B = a.B;
    o->C = a.C;
    o->bc_stride = a.bc_stride;
    o->dt = dt;
    o->A = a.A;
    o->D = a.D;
    o->state = a.state;
    o->state_slot_stride = a.state_slot_stride;
    o->y = a.y;
}

}  // namespace duality::cuda::ssd
