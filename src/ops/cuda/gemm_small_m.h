// The skinny (decode) GEMM kernel behind Gemm::run for m ≤ kSmallM; see gemm_small_m.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/check.h"
#include "duality/types.h"

namespace duality::cuda {

constexpr int64_t kSmallM = 1;  // rows routed to the skinny kernel (see gemm_small_m.cu)

// Of a product's w, the bytes its blocks ask for (L2 prefetch) before waiting for the kernel in
// front of them. H200, decode at batch 1 (DUALITY_GEMM_PREFETCH_MB=0/4/8/16/all): the 130m's
// step 0.400 ms without, 0.359 with 4 MB, 0.357 with all (its products are 2-5 MB); the 2.7b's
// 2.221 ms without, 2.197 with 8 MB, 2.264 with 16 MB and 2.365 with all (26-28 MB products;
// why more costs more was not profiled: presumably L2 evicting prefetched lines before use).
constexpr int64_t kSmallMPrefetchBytes = int64_t{8} << 20;

// Whether gemm_small_m handles these operands (m, dtypes, alignment, vector width).
bool gemm_small_m_supports(const void* a, int64_t lda, const void* w, DType y_dtype, int64_t m,
                           int64_t k, DType act);

// y {m, n} (y_dtype: act or f32, rows ldy apart) = a {m, k} · w {n, k}ᵀ, f32 accumulation.
// prefetch_bytes: of w, asked for before pdl::wait() (spread over the blocks); -1: all of it.
void gemm_small_m(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
                  int64_t m, int64_t n, int64_t k, DType act, int64_t prefetch_bytes,
                  cudaStream_t stream);

}  // namespace duality::cuda
