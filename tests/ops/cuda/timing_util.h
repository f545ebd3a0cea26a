// Shared by the disabled timing tests (timing_*.cpp): the mean time of a call, measured with CUDA
// events on the default stream or a given one.
#pragma once

#include <cuda_runtime.h>

#include <functional>

#include "core/cuda/check.h"

namespace duality::optest {

// Milliseconds per call of f(i) (i: the call's index), averaged over `iters` timed calls after
// `warmup` untimed ones, timed on `stream` (where f enqueues its work, or joins it back).
inline double time_ms(const std::function<void(int)>& f, int iters, int warmup,
                      cudaStream_t stream = nullptr) {
    for (int i = 0; i < warmup; ++i) f(i);
    cudaEvent_t a, b;
    DUALITY_CUDA_CHECK(cudaEventCreate(&a));
    DUALITY_CUDA_CHECK(cudaEventCreate(&b));
    DUALITY_CUDA_CHECK(cudaEventRecord(a, stream));
    for (int i = 0; i < iters; ++i) f(warmup + i);
    DUALITY_CUDA_CHECK(cudaEventRecord(b, stream));
    DUALITY_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    DUALITY_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    DUALITY_CUDA_CHECK(cudaEventDestroy(a));
    DUALITY_CUDA_CHECK(cudaEventDestroy(b));
    return ms / iters;
}

// The same for a call that needs no index, after two warm-up calls.
inline double time_ms(const std::function<void()>& f, int iters) {
    return time_ms([&](int) { f(); }, iters, 2);
}

}  // namespace duality::optest
