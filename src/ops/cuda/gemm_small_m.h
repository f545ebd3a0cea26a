// The skinny (decode) GEMM kernel behind Gemm::run for m ≤ kSmallM; see gemm_small_m.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/check.h"
#include "duality/types.h"
#include "ops/cuda/ops.h"
#include "ops/params.h"

namespace duality::cuda {

constexpr int64_t kSmallM = 1;  // rows routed to the skinny kernel (see gemm_small_m.cu)

// Of a product's w, the bytes its blocks ask for (L2 prefetch) before waiting for the kernel in
// front of them. H200, decode at batch 1 (DUALITY_GEMM_PREFETCH_MB=0/4/8/16/all): the 130m's
// step 0.400 ms without, 0.359 with 4 MB, 0.357 with all (its products are 2-5 MB); the 2.7b's
// 2.221 ms without, 2.197 with 8 MB, 2.264 with 16 MB and 2.365 with all (26-28 MB products;
// why more costs more was not profiled: presumably L2 evicting prefetched lines before use).
// Models whose batch-1 z product forks early give their products less
// (CudaModel::kEarlyForkPrefetchBytes).
constexpr int64_t kSmallMPrefetchBytes = int64_t{8} << 20;

// Whether gemm_small_m handles these operands (m, dtypes, alignment, vector width).
bool gemm_small_m_supports(const void* a, int64_t lda, const void* w, DType y_dtype, int64_t m,
                           int64_t k, DType act);

// y {m, n} (y_dtype: act or f32, rows ldy apart) = a {m, k} · w {n, k}ᵀ, f32 accumulation.
// prefetch_bytes: of w, asked for before pdl::wait() (spread over the blocks); -1: all of it.
void gemm_small_m(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
                  int64_t m, int64_t n, int64_t k, DType act, int64_t prefetch_bytes,
                  cudaStream_t stream);

// The batch-1 product with the neighbouring per-row ops of a decode step folded in, so that the
// add + RMSNorm and conv1d kernels leave a batch-1 step's chain (docs/architecture.md, "Batch-1
// GEMV epilogues"). y_col = s · (a · w_colᵀ) for each column col of w {n, k}, and then one
// epilogue. f16/bf16 only (act), a and w as for gemm_small_m with m = 1.
//
// Input scale (`in_scale`, a RowScale of one row; optional): a is a row whose RMSNorm was left
// undone, a = act(r ⊙ w_norm) for a residual row r, and s = rsqrt(Σ ssq / count + eps) with ssq
// the sums of r² that the residual epilogue below left, or the decode step's gate partials
// (ssm_decode's SsdGate: a = v ⊙ w, ssq the sums of v², count d_inner). Without it s = 1.
//
// Epilogues:
// - kStore: y[col] = act, or f32 with `y_f32` (the LM head's logits). Requires in_scale.
// - kConv: the columns [conv_begin, conv_begin + conv.channels) are raw xBC channels
//   c = col - conv_begin of the width-4 causal conv1d `conv` (conv1d's arguments for the one
//   sequence; its x and x_stride are unused): x = act(y) joins the window of the slot's conv state
//   (f32 {3, channels}, slot conv.batch.slots[0]), conv.out[c] = act(silu(bias + taps · window))
//   and the state shifts by one row; other columns are stored as in kStore.
// - kResidual: r = residual[col] + y (f32); residual[col] = r; u[col] = act(r · w_next[col]); and
//   out_parts[b] = Σ r² over columns 8b..8b+7 (the fixed order of a block), ceil(n / 8) of them:
//   the next product's input scale (gemv_fused_parts).
struct GemvFused {
    enum Epilogue { kStore, kConv, kResidual };
    Epilogue epilogue = kStore;
    RowScale in_scale;
    void* y = nullptr;  // kStore, kConv (columns outside the conv range): {n}
    bool y_f32 = false;
    // kConv
    int64_t conv_begin = 0;
    Conv1dArgs conv;
    // kResidual
    float* residual = nullptr;      // {n} f32, in and out
    const float* w_next = nullptr;  // {n} f32: the next RMSNorm's weight
    void* u = nullptr;              // {n} act
    float* out_parts = nullptr;     // {gemv_fused_parts(n)} f32
    // kStore with y_f32 (the LM head of a greedy batch-1 step): also fold the argmax of the
    // columns below argmax_vocab into *argmax_key, which must be 0 before the kernel (each block
    // atomicMax's the largest key of its columns; argmax_from_key reads and resets it). The same
    // id as argmax_rows over the stored logits, ties to the lowest id.
    unsigned long long* argmax_key = nullptr;
    int64_t argmax_vocab = 0;
    // Each warp's row of w comes into shared memory as one bulk copy issued at the start, instead
    // of groups of loads into registers (gemv_fused_bulk_supported; 8 rows of k a block).
    bool bulk = false;
};
// Whether gemv_fused takes `bulk` for rows of k elements of act here (Hopper, rows of at most
// 26 KiB). Where to use it: the model's gemv_bulk_ (docs/architecture.md, "Batch-1 GEMV
// epilogues").
bool gemv_fused_bulk_supported(int64_t k, DType act);
// The number of partial sums of squares the kResidual epilogue leaves for n columns.
constexpr int64_t gemv_fused_parts(int64_t n) {
    return (n + 7) / 8;
}
// Whether gemv_fused takes these operands (f16/bf16, alignment, vector width).
bool gemv_fused_supports(const void* a, const void* w, int64_t k, DType act);
void gemv_fused(const void* a, const void* w, int64_t n, int64_t k, DType act,
                int64_t prefetch_bytes, const GemvFused& f, cudaStream_t stream);
// The columns one wave of gemv_fused's conv form (with an input scale) holds on the current
// device: its blocks resident at once on every SM, times the columns of a block.
int64_t gemv_fused_wave_columns(DType act);

}  // namespace duality::cuda
