// The skinny (decode) GEMM kernel behind Gemm::run for m ≤ kSmallM; see gemm_small_m.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/check.h"
#include "duality/types.h"

namespace duality::cuda {

constexpr int64_t kSmallM = 1;  // rows routed to the skinny kernel (see gemm_small_m.cu)

// Whether gemm_small_m handles these operands (m, dtypes, alignment, vector width).
bool gemm_small_m_supports(const void* a, int64_t lda, const void* w, DType y_dtype, int64_t m,
                           int64_t k, DType act);

// y {m, n} (y_dtype: act or f32, rows ldy apart) = a {m, k} · w {n, k}ᵀ, f32 accumulation.
void gemm_small_m(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
                  int64_t m, int64_t n, int64_t k, DType act, cudaStream_t stream);

}  // namespace duality::cuda
