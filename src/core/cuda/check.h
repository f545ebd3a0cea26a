// Error checks for CUDA runtime, cuBLAS(Lt) calls and kernel launches. A failing call in the
// engine is a bug or an exhausted device, never a user's input error: it aborts with the call,
// file and line (internal code), or becomes a Status where a caller can recover (allocation).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "duality/status.h"

namespace duality::cuda {

[[noreturn]] inline void fail(const char* what, const char* expr, const char* file, int line) {
    std::fprintf(stderr, "duality: CUDA error: %s in %s at %s:%d\n", what, expr, file, line);
    std::abort();
}

inline Status to_status(cudaError_t e, const std::string& context) {
    if (e == cudaSuccess) return Status::ok();
    return {StatusCode::kInternal, context + ": " + cudaGetErrorString(e)};
}

}  // namespace duality::cuda

#define DUALITY_CUDA_CHECK(expr)                                                                  \
    do {                                                                                          \
        cudaError_t duality_err_ = (expr);                                                        \
        if (duality_err_ != cudaSuccess)                                                          \
            ::duality::cuda::fail(cudaGetErrorString(duality_err_), #expr, __FILE__, __LINE__);    \
    } while (0)

#define DUALITY_CUBLAS_CHECK(expr)                                                                \
    do {                                                                                          \
        cublasStatus_t duality_st_ = (expr);                                                      \
        if (duality_st_ != CUBLAS_STATUS_SUCCESS)                                                 \
            ::duality::cuda::fail(cublasGetStatusString(duality_st_), #expr, __FILE__, __LINE__); \
    } while (0)

// After a kernel launch: catches bad launch configurations at once.
#define DUALITY_CUDA_LAUNCH_CHECK() DUALITY_CUDA_CHECK(cudaGetLastError())
