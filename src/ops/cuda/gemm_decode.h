// The decode GEMM behind Gemm::run for products of 2 ≤ m ≤ 64 rows: used where it was measured
// faster than cuBLASLt (Gemm::DecodeKernel::kAuto, gemm.cpp), for all supported products with
// DUALITY_DECODE_GEMM=1, never with DUALITY_DECODE_GEMM=0; see gemm_decode.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <optional>

#include "duality/types.h"

namespace duality::cuda {

constexpr int64_t kDecodeMaxM = 64;  // the most rows gemm_decode takes
// Bytes of gemm_decode's counters (a u32 per group of rows, at most 4096). The caller zeroes
// them once; every call leaves them zero again.
constexpr size_t kGemmDecodeSyncBytes = size_t{4096} * sizeof(uint32_t);

// The bytes of scratch gemm_decode needs for these operands, or nullopt when it does not take
// them. It takes act f16 or bf16, y_dtype act or f32, 1 ≤ m ≤ kDecodeMaxM, k a positive multiple
// of 64, lda ≥ k a multiple of 8, a and w 16-byte aligned, n · k and m · lda below 2^31, at most
// 4096 groups of rows; y: any ldy ≥ n with m · ldy < 2^31, aligned to its element (scalar
// stores). The scratch holds the f32 partial tiles of the groups whose k is split across CTAs
// (m × rows floats per CTA, at most 16 MiB; 0 when k is not split). Stream-ordered: it may be
// shared with other kernels of the same stream (the cuBLASLt workspace), not with a concurrent
// gemm_decode.
std::optional<size_t> gemm_decode_workspace(const void* a, int64_t lda, const void* w,
                                            DType y_dtype, int64_t m, int64_t n, int64_t k,
                                            DType act);

// y {m, n} (y_dtype: act or f32, rows ldy apart) = a {m, k} · w {n, k}ᵀ with f32 accumulation,
// deterministic (the summation order depends only on the shape and the device's SM count).
// workspace: at least gemm_decode_workspace(...) bytes of scratch. sync:
// kGemmDecodeSyncBytes, zeroed before the first call and not touched by anything else (each
// call leaves it zero), used by one stream at a time. No allocation, no host synchronization:
// capturable in CUDA graphs. Launched as a programmatic dependent launch (core/cuda/pdl.cuh).
void gemm_decode(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
                 int64_t m, int64_t n, int64_t k, DType act, void* workspace,
                 size_t workspace_bytes, uint32_t* sync, cudaStream_t stream);

}  // namespace duality::cuda
