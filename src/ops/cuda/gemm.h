// GEMMs on the GPU through cuBLASLt, always with fp32 accumulation:
//   y {m, n} = a {m, k} · w {n, k}ᵀ   (row-major; w is a weight in torch's [out, in] layout)
// a and w are `act` (f32, f16 or bf16); y is `act` or f32 (logits). f32 runs in strict fp32
// (no TF32), so the f32 model can be compared with the CPU reference at 1e-5.
// For m = 1 (batch-1 decode) a bandwidth-bound skinny kernel (gemm_small_m.cu) replaces cuBLASLt.
// Matmul descriptors are cached per shape, dtype and pointer alignment, and the heuristic's
// algorithm per the same key with m rounded up to a power of two (a prefill piece of a new length
// reuses its bucket's algorithm when cuBLASLt accepts it for that m), so steady-state calls (and
// CUDA-graph capture) do no host-side search and new lengths do not load new kernels. tune()
// replaces a bucket's heuristic choice by the fastest candidate timed on real weights (the CUDA
// model does so for its decode buckets at load).
// For 2 <= m <= 64 the decode GEMM (gemm_decode.cu) replaces cuBLASLt on the shapes where it was
// measured faster (decode_kernel_pays in gemm.cpp); DUALITY_DECODE_GEMM=0 at create() turns it
// off, =1 sends every product it supports to it.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <tuple>
#include <vector>

#include "core/cuda/device_buffer.h"
#include "duality/status.h"
#include "duality/types.h"

namespace duality::cuda {

// The m = 1 kernel's prefetch budget per product in bytes: DUALITY_GEMM_PREFETCH_MB (MiB, 0: none,
// or "all": -1), else `fallback`; anything else keeps `fallback` with a warning. Gemm::create
// falls back to kSmallMPrefetchBytes.
int64_t prefetch_budget_from_env(int64_t fallback);

class Gemm {
  public:
    // candidates: how many algorithms the heuristic proposes per shape (1 in the model; more for
    // benchmarks that compare them with set_algo_index).
    static Result<Gemm> create(size_t workspace_bytes = size_t{32} << 20, int candidates = 1);
    Gemm();  // empty: assign from create() before use
    Gemm(Gemm&&) noexcept;
    Gemm& operator=(Gemm&&) noexcept;
    ~Gemm();

    // Off: every product goes to cuBLASLt (benchmarks compare the two).
    void set_small_m_kernel(bool on) { small_m_ = on; }
    // The m = 1 kernel's L2 prefetch budget per product in bytes (-1: all of w; tests and
    // benchmarks; see kSmallMPrefetchBytes).
    void set_prefetch_bytes(int64_t bytes) { prefetch_bytes_ = bytes; }
    int64_t prefetch_bytes() const { return prefetch_bytes_; }
    // The decode GEMM (gemm_decode.cu) for products with 2 ≤ m ≤ 64 that gemm_decode_workspace()
    // takes (f16/bf16, k % 64 == 0, 16-byte aligned a and w): kAuto (the default) where it was
    // measured faster than cuBLASLt, kOn for all of them, kOff for none. DUALITY_DECODE_GEMM=0 or
    // 1 at create() selects kOff or kOn.
    enum class DecodeKernel { kOff, kAuto, kOn };
    void set_decode_kernel(DecodeKernel mode) { decode_ = mode; }
    void set_decode_kernel(bool on) { decode_ = on ? DecodeKernel::kOn : DecodeKernel::kOff; }
    DecodeKernel decode_kernel() const { return decode_; }
    // Whether run() would send this product to the decode GEMM (tests and benchmarks).
    bool uses_decode_kernel(const void* a, int64_t lda, const void* w, DType y_dtype, int64_t m,
                            int64_t n, int64_t k, DType act) const;

    // For benchmarks: run the i-th algorithm cuBLASLt's heuristic proposes (0, the default, is
    // its first choice, or tune()'s) instead of the first; an index past the candidates means
    // the last one. The candidates are those of the product's m bucket that cuBLASLt accepts for
    // this m, so an index may name different algorithms for different m.
    void set_algo_index(int i) { algo_index_ = i < 0 ? 0 : i; }
    // The number of those candidates for this product (at most `candidates`, or kMaxAlgos
    // after tune()).
    int algo_count(const void* a, int64_t lda, const void* w, const void* y, int64_t ldy,
                   DType y_dtype, int64_t m, int64_t n, int64_t k, DType act);
    static constexpr int kMaxAlgos = 8;

    void run(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
             int64_t m, int64_t n, int64_t k, DType act, cudaStream_t stream);

    // Split-k for decode batches: y_parts {splits, m, n} f32 (parts m·n apart, rows n apart)
    // receives the products of the k / splits slices of a and w, which sum to a · wᵀ, from ONE
    // strided-batched cuBLASLt call: splits times the CTAs of the whole product and no reduction
    // kernel (the consumer adds the parts, e.g. add_rms_norm's HParts). For the 2.7b out_proj at
    // 32-64 rows it runs at ~10.3 against ~12.3 µs for the whole product (H200, best of
    // cuBLASLt's candidates each). Needs split_k_supported().
    static bool split_k_supported(const void* a, int64_t lda, const void* w, int64_t k, int splits,
                                  DType act);
    void run_split_k(const void* a, int64_t lda, const void* w, float* y_parts, int64_t m,
                     int64_t n, int64_t k, int splits, DType act, cudaStream_t stream);
    // tune() for run_split_k's product.
    int tune_split_k(const void* a, int64_t lda, std::span<const void* const> weights,
                     float* y_parts, int64_t m, int64_t n, int64_t k, int splits, DType act,
                     cudaStream_t stream);

    // For f16/bf16 products of at most 256 rows (decode batches; f32, the reference mode, is
    // never tuned): times cuBLASLt's candidates (up to kMaxAlgos) and makes the fastest the
    // first choice of this product's plan and of plans made later for other m of its bucket
    // (m rounded up to a power of two), if it is at least 3% faster than cuBLASLt's first choice.
    // Each timed pass runs the product once on every weight of `weights` in turn (a model's
    // layers: their total should exceed the L2 cache, so each call reads its weight from HBM as
    // in a real step); the best of three passes counts, candidates interleaved. Synchronizes
    // `stream`; does nothing during graph capture. Products that run() sends to the m = 1 or
    // decode kernel are left alone. Returns the heuristic rank of the algorithm chosen (0:
    // cuBLASLt's own first choice), or -1 when nothing was tuned.
    int tune(const void* a, int64_t lda, std::span<const void* const> weights, void* y, int64_t ldy,
             DType y_dtype, int64_t m, int64_t n, int64_t k, DType act, cudaStream_t stream);

  private:
    struct Plan;
    // m, n, k, lda, ldy, act, y dtype, alignments of a, w and y, k splits.
    using Key =
        std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int, int>;
    Plan& plan(const Key& key);
    std::vector<cublasLtMatmulAlgo_t> search(cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t w,
                                             cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t y,
                                             int align_a, int align_w, int align_y);
    static Key key(const void* a, int64_t lda, const void* w, const void* y, int64_t ldy,
                   DType y_dtype, int64_t m, int64_t n, int64_t k, DType act, int splits = 1);
    int tune_key(const Key& kk, const void* a, std::span<const void* const> weights, void* y,
                 cudaStream_t stream);

    cublasLtHandle_t handle_ = nullptr;
    DeviceBuffer workspace_;    // cuBLASLt's, and the decode GEMM's partial tiles
    DeviceBuffer decode_sync_;  // the decode GEMM's counters (zeroed once, left zero by each call)
    std::map<Key, std::unique_ptr<Plan>> plans_;
    std::map<Key, std::vector<cublasLtMatmulAlgo_t>> algos_;  // by bucket (m a power of two)
    bool small_m_ = true;
    DecodeKernel decode_ = DecodeKernel::kAuto;
    // Of w, asked for before pdl::wait() by the m = 1 kernel per product; -1: all of it. create()
    // sets kSmallMPrefetchBytes, or DUALITY_GEMM_PREFETCH_MB.
    int64_t prefetch_bytes_ = 0;
    int algo_index_ = 0;
    int candidates_ = 1;
    bool log_ = false;  // tune() prints every candidate's time (DUALITY_GEMM_TUNE_LOG=1)
};

}  // namespace duality::cuda
