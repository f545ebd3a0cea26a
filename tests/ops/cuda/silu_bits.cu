// Test-only kernel for CudaSilu (test_silu_bits.cpp): silu<T> of 16-bit activations (the flush-to-
// zero PTX form in ops/cuda/activation.cuh) against __fdividef(v, 1 + __expf(−v)), the form it
// replaced, over every f32 bit pattern. Parallelization: a grid-stride loop over the 2^32 patterns,
// mismatches counted with one atomic each. Limits: none (the whole f32 range).
#include <cuda_bf16.h>


#include "core/cuda/check.h"
#include "ops/cuda/activation.cuh"
#include "ops/cuda/silu_bits.h"

namespace duality::optest {
namespace {

__global__ void silu_bits_kernel(unsigned long long* mismatches, uint32_t* first) {
    const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
    for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
         i < (uint64_t{1} << 32); i += stride) {
        const float v = __uint_as_float(static_cast<uint32_t>(i));
        const float now = cuda::silu<__nv_bfloat16>(v);
        const float before = __fdividef(v, 1.0f + __expf(-v));
        const bool same =
            __float_as_uint(now) == __float_as_uint(before) || (isnan(now) && isnan(before));
        if (!same) {
            atomicAdd(mismatches, 1ull);
            atomicMin(first, static_cast<uint32_t>(i));
        }
    }
}

}  // namespace

SiluBits silu_bits_mismatches() {
    unsigned long long* d_count = nullptr;
    uint32_t* d_first = nullptr;
    DUALITY_CUDA_CHECK(cudaMalloc(&d_count, sizeof(*d_count)));
    DUALITY_CUDA_CHECK(cudaMalloc(&d_first, sizeof(*d_first)));
    DUALITY_CUDA_CHECK(cudaMemset(d_count, 0, sizeof(*d_count)));
    DUALITY_CUDA_CHECK(cudaMemset(d_first, 0xff, sizeof(*d_first)));
    silu_bits_kernel<<<4096, 256>>>(d_count, d_first);
    DUALITY_CUDA_CHECK(cudaGetLastError());
    SiluBits r;
    unsigned long long count = 0;
    DUALITY_CUDA_CHECK(cudaMemcpy(&count, d_count, sizeof(count), cudaMemcpyDeviceToHost));
    DUALITY_CUDA_CHECK(cudaMemcpy(&r.first, d_first, sizeof(r.first), cudaMemcpyDeviceToHost));
    r.mismatches = count;
    DUALITY_CUDA_CHECK(cudaFree(d_count));
    DUALITY_CUDA_CHECK(cudaFree(d_first));
    return r;
}

}  // namespace duality::optest
