// RAII owners of the cuBLASLt objects the GEMM timing tests create themselves (timing_gemm_*.cpp;
// the model's products go through cuda::Gemm), so that an early return or a failed assertion
// leaks nothing.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <memory>
#include <type_traits>

#include "core/cuda/check.h"

namespace duality::optest::lt {

template <typename H, cublasStatus_t (*kDestroy)(H)>
struct Destroy {
    void operator()(H h) const {
        if (h) kDestroy(h);
    }
};
template <typename H, cublasStatus_t (*kDestroy)(H)>
using Owner = std::unique_ptr<std::remove_pointer_t<H>, Destroy<H, kDestroy>>;

using Handle = Owner<cublasLtHandle_t, cublasLtDestroy>;
using Desc = Owner<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using Layout = Owner<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using Pref = Owner<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

inline Handle handle() {
    cublasLtHandle_t h = nullptr;
    DUALITY_CUBLAS_CHECK(cublasLtCreate(&h));
    return Handle(h);
}

// A matmul descriptor with fp32 compute and scale and the operands' transposes (gemm.cpp's
// column-major view, yᵀ = w · aᵀ, is A transposed and B not).
inline Desc desc(cublasOperation_t a_op = CUBLAS_OP_T, cublasOperation_t b_op = CUBLAS_OP_N) {
    cublasLtMatmulDesc_t d = nullptr;
    DUALITY_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    Desc owned(d);
    DUALITY_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &a_op, sizeof a_op));
    DUALITY_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &b_op, sizeof b_op));
    return owned;
}

// A column-major {rows, cols} layout, columns ld elements apart.
inline Layout layout(cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld) {
    cublasLtMatrixLayout_t l = nullptr;
    DUALITY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, rows, cols, ld));
    return Layout(l);
}

// A preference that allows `workspace_bytes` of workspace.
inline Pref pref(uint64_t workspace_bytes) {
    cublasLtMatmulPreference_t p = nullptr;
    DUALITY_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p));
    DUALITY_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof workspace_bytes));
    return Pref(p);
}

}  // namespace duality::optest::lt
