// ssd_chunked: the chunked SSD prefill (spec 6.2) over a packed varlen batch, as five kernels on
// `stream` (see ssd_plan.h for the workspace):
//   K1 ssd_cumsum.cu        Δ and Scs per chunk and head
//   K2 ssd_bmm.cu           CB = C·Bᵀ per chunk and group
//   K3 ssd_chunk_state.cu   chunk-local states per chunk and head
//   K4 ssd_state_passing.cu states entering each chunk; sequences start from their slot's state
//                           and end by writing it back
//   K5 ssd_chunk_scan.cu    y = inter-chunk + intra-chunk + D·x
// Chunks never cross sequences (VarlenBatch), so no kernel needs a sequence mask. f16/bf16 run the
// GEMMs on tensor cores (f32 accumulation); f32 runs them as plain FMAs (no TF32).
// Limits: chunk_size <= 1024; n_head a multiple of n_group. x, B and C are read with 16-byte
// vector loads when their bases are 16-byte aligned and x_stride, bc_stride, head_dim and d_state
// are multiples of 8 elements (4 for f32); otherwise with scalar loads (slower, same results).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/cuda/check.h"
#include "ops/cuda/ops.h"
#include "ops/cuda/ssd_plan.h"

namespace duality::cuda {
namespace {

void require(bool ok, const char* what) {
    if (ok) return;
    std::fprintf(stderr, "duality: ssd_chunked: %s\n", what);
    std::abort();
}

bool aligned16(const void* ptr) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
}

ssd::WorkspaceLayout layout_of(const SsdArgs& a) {
    return ssd::workspace_layout(a.batch.n_chunk, a.n_head, a.head_dim, a.d_state, a.n_group,
                                 a.chunk_size);
}

template <typename T>
void run(const ssd::Plan& p, DType state_dtype, cudaStream_t stream) {
    ssd::launch_chunk_cumsum(p, stream);
    ssd::launch_bmm<T>(p, stream);
    ssd::launch_chunk_state<T>(p, stream);
    switch (state_dtype) {
        case DType::kF32:
            ssd::launch_state_passing<float>(p, stream);
            break;
        case DType::kF16:
            ssd::launch_state_passing<__half>(p, stream);
            break;
        case DType::kBF16:
            ssd::launch_state_passing<__nv_bfloat16>(p, stream);
            break;
        default:
            require(false, "state_dtype must be f32, f16 or bf16");
    }
    ssd::launch_chunk_scan<T>(p, stream);
}

}  // namespace

size_t ssd_chunked_workspace_bytes(const SsdArgs& a) {
    return layout_of(a).total;
}

bool ssd::make_plan(const SsdArgs& a, const float* dt, void* workspace, DType act,
                    ssd::Plan* plan) {
    const VarlenBatch& b = a.batch;
    require(a.n_head > 0 && a.head_dim > 0 && a.d_state > 0 && a.n_group > 0,
            "n_head, head_dim, d_state and n_group must be positive");
    require(a.n_head % a.n_group == 0, "n_head must be a multiple of n_group");
    require(a.chunk_size >= 1 && a.chunk_size <= 1024, "chunk_size must be in [1, 1024]");
    require(act == DType::kF32 || act == DType::kF16 || act == DType::kBF16,
            "act must be f32, f16 or bf16");
    require(a.state_dtype == DType::kF32 || a.state_dtype == DType::kF16 ||
                a.state_dtype == DType::kBF16,
            "state_dtype must be f32, f16 or bf16");
    if (b.n_chunk == 0 || b.n_tokens == 0) return false;  // no tokens: states stay as they are
    require(a.x && a.B && a.C && dt && a.A && a.y && a.state && workspace,
            "null input, output, state or workspace pointer");
    require(b.chunk_start && b.chunk_len && b.cu_chunks && b.slots && b.n_seq > 0,
            "missing chunk tables");
    require(aligned16(workspace), "workspace must be 16-byte aligned");
    // Every grid is 1-D (tiles × heads × chunks, or slices × heads × sequences).
    const int64_t q_tiles = (a.chunk_size + 63) / 64;
    const int64_t per_chunk =
        std::max({q_tiles * ((a.head_dim + 31) / 32) * a.n_head,                // K5
                  (a.head_dim + 63) / 64 * ((a.d_state + 63) / 64) * a.n_head,  // K3
                  q_tiles * (q_tiles + 1) / 2 * a.n_group});                    // K2
    const int64_t k4 = (a.head_dim * a.d_state + 1023) / 1024 * a.n_head * b.n_seq;
    require(per_chunk * b.n_chunk < (int64_t{1} << 31) && k4 < (int64_t{1} << 31),
            "batch too large for one call");

    const ssd::WorkspaceLayout l = layout_of(a);
    ssd::Plan& p = *plan;
    ssd::fill_operands(a, dt, &p);
    const int64_t ve = 16 / static_cast<int64_t>(dtype_size(act));
    p.vec = aligned16(a.x) && aligned16(a.B) && aligned16(a.C) && a.x_stride % ve == 0 &&
            a.bc_stride % ve == 0 && a.head_dim % ve == 0 && a.d_state % ve == 0;
    auto* ws = static_cast<unsigned char*>(workspace);
    p.dtc = reinterpret_cast<float*>(ws + l.dtc);
    p.cs = reinterpret_cast<float*>(ws + l.cs);
    p.cb = reinterpret_cast<float*>(ws + l.cb);
    p.st = reinterpret_cast<float*>(ws + l.st);
    p.q_ld = l.q_ld;
    p.n_ld = l.n_ld;
    return true;
}

void ssd_chunked(const SsdArgs& a, const float* dt, void* workspace, DType act,
                 cudaStream_t stream) {
    ssd::Plan p;
    if (!ssd::make_plan(a, dt, workspace, act, &p)) return;
    switch (act) {
        case DType::kF32:
            run<float>(p, a.state_dtype, stream);
            break;
        case DType::kF16:
            run<__half>(p, a.state_dtype, stream);
            break;
        case DType::kBF16:
            run<__nv_bfloat16>(p, a.state_dtype, stream);
            break;
        default:
            require(false, "act must be f32, f16 or bf16");
    }
}

}  // namespace duality::cuda
