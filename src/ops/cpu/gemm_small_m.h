// The CPU GEMM for a few rows (a decode step's batch): y {m, n} = a {m, k} (rows lda apart) · wᵀ,
// w {n, k}, f32, w streamed from memory once. Each y element is summed in one fixed order, the
// same for any m and thread count, so a row's result does not depend on the other rows (of a pass
// that takes this path).
// n_threads <= 0: OpenMP's default. cpu::gemm takes it for 2 <= m <= kGemmSmallM. Measured on a
// 2-vCPU AMD EPYC VM with AVX-512 (2026-12-04, best of 5 × 3 calls, gemm_small_m against
// OpenBLAS 0.3.21):
//   m = 2..8: 1.9-4.8x faster than sgemm on the 17M, 130m and 2.7b shapes (sgemm packs all of w
//   first), e.g. the 130m LM head (50288 × 768) at m = 4: 4.31 ms against 11.53;
//   m = 1: 0.77-1.19x of sgemv's speed, so cpu::gemm keeps sgemv for one row.
#pragma once

#include <cstdint>

namespace duality::cpu {

// Up to this many rows cpu::gemm takes gemm_small_m; above, sgemm (its packing of w pays off):
// against OpenBLAS 0.3.21's sgemm on the VM above, gemm_small_m took 1.3-2.3x less time at 9-14
// rows, as long at 15 and 1.2-1.4x longer at 16 (the 17M and 130m LM heads, the 2.7b out_proj).
inline constexpr int64_t kGemmSmallM = 14;

void gemm_small_m(const float* a, int64_t lda, const float* w, float* y, int64_t m, int64_t n,
                  int64_t k, int n_threads);

}  // namespace duality::cpu
