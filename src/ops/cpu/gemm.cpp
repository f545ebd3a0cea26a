// GEMM on the CPU: y = a · wᵀ (+ bias), f32. Torch stores linear weights as {out, in}, so the
// weight is the transposed operand. One row (a batch-1 decode step): OpenBLAS's sgemv. 2 to
// kGemmSmallM (14) rows (batched decode steps): our gemm_small_m, which streams w once where
// sgemm first packs it (1.3-4.8x faster than sgemm there; at one row 0.77-1.19x of sgemv's speed,
// gemm_small_m.h). More rows: OpenBLAS's sgemm.
#include <cblas.h>

#include "ops/cpu/gemm_small_m.h"
#include "ops/cpu/ops.h"

namespace duality::cpu {

void gemm(const float* a, int64_t lda, const float* w, const float* bias, float* y, int64_t m,
          int64_t n, int64_t k, int n_threads) {
    if (m == 0 || n == 0) return;
    if (m == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), static_cast<int>(k), 1.0f, w,
                    static_cast<int>(k), a, 1, 0.0f, y, 1);
    } else if (m <= kGemmSmallM) {
        gemm_small_m(a, lda, w, y, m, n, k, n_threads);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                    static_cast<int>(n), static_cast<int>(k), 1.0f, a, static_cast<int>(lda), w,
                    static_cast<int>(k), 0.0f, y, static_cast<int>(n));
    }
    if (bias) {
        for (int64_t r = 0; r < m; ++r)
            for (int64_t c = 0; c < n; ++c) y[r * n + c] += bias[c];
    }
}

void embedding(const int32_t* ids, int64_t rows, const float* table, int64_t dim, float* out) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* src = table + static_cast<int64_t>(ids[r]) * dim;
        for (int64_t c = 0; c < dim; ++c) out[r * dim + c] = src[c];
    }
}

}  // namespace duality::cpu
