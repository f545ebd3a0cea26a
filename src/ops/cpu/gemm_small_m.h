// The CPU GEMM for a few rows (a decode step's batch): y {m, n} = a {m, k} (rows lda apart) · wᵀ,
// w {n, k}, f32, w streamed from memory once. Each y element is summed in one fixed order, the
// same for any m and thread count, so a row's result does not depend on the batch around it.
// n_threads <= 0: OpenMP's default. cpu::gemm takes it for m <= kGemmSmallM.
#pragma once

#include <cstdint>

namespace duality::cpu {

// Up to this many rows cpu::gemm takes gemm_small_m; above, sgemm (its packing of w pays off).
inline constexpr int64_t kGemmSmallM = 8;

void gemm_small_m(const float* a, int64_t lda, const float* w, float* y, int64_t m, int64_t n,
                  int64_t k, int n_threads);

}  // namespace duality::cpu
