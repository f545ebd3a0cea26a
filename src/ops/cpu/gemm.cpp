// GEMM on the CPU through CBLAS (OpenBLAS): y = a · wᵀ (+ bias), f32. Torch stores linear
// weights as {out, in}, so the weight is the transposed operand.
#include <cblas.h>

#include "ops/cpu/ops.h"

namespace duality::cpu {

void gemm(const float* a, int64_t lda, const float* w, const float* bias, float* y, int64_t m,
          int64_t n, int64_t k) {
    if (m == 0 || n == 0) return;
    if (m == 1) {  // decode: a matrix-vector product
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), static_cast<int>(k), 1.0f,
                    w, static_cast<int>(k), a, 1, 0.0f, y, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                    static_cast<int>(n), static_cast<int>(k), 1.0f, a, static_cast<int>(lda), w,
                    static_cast<int>(k), 0.0f,
                    y, static_cast<int>(n));
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
