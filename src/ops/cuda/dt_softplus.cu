// Δ {rows, n_head} f32 = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max) with the threshold-20
// softplus (v > 20 ? v : log1p(exp(v))), exactly the CPU's cpu::dt_softplus in f32.
//
// Parallelization: one thread per element of Δ, grid-stride over rows·n_head.
// Limits: any rows, n_head, raw_stride; act f32/f16/bf16.
#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "ops/cuda/dt_softplus.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace {

template <typename T>
__global__ void dt_softplus_kernel(
    const T* __restrict__ dt_raw,  // {rows, n_head}, raw_stride apart
    int64_t raw_stride,
    const float* __restrict__ dt_bias,  // {n_head}
    float dt_min, float dt_max,
    float* __restrict__ dt,  // {rows, n_head}
    int64_t rows, int64_t n_head) {
    pdl::wait();  // before any global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    const int64_t n = rows * n_head;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t r = i / n_head, h = i % n_head;
        dt[i] = dt_clamped_softplus(dtype::to_f32(dt_raw[r * raw_stride + h]) + dt_bias[h], dt_min,
                                    dt_max);
    }
}

}  // namespace

void dt_softplus(const void* dt_raw, int64_t raw_stride, const float* dt_bias, float dt_min,
                 float dt_max, float* dt, int64_t rows, int64_t n_head, DType act,
                 cudaStream_t stream) {
    const int64_t n = rows * n_head;
    if (n <= 0) return;
    const int threads = 256;
    int64_t blocks = (n + threads - 1) / threads;
    if (blocks > 65536) blocks = 65536;
    DUALITY_DISPATCH_FLOAT("dt_softplus", act, T, {
        pdl::launch(dt_softplus_kernel<T>, static_cast<unsigned>(blocks), threads, 0, stream,
                    static_cast<const T*>(dt_raw), raw_stride, dt_bias, dt_min, dt_max, dt, rows,
                    n_head);
        DUALITY_CUDA_LAUNCH_CHECK();
    });
}

}  // namespace duality::cuda
