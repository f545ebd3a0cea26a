// Test-only dependency chains (see chain_kernels.h). Parallelization: 256 threads a block; each
// thread loads its strided share of the input (at most kMaxLoads floats, issued together), the
// block reduces through shared memory and each of its first 16 threads writes one float.
// Limits: reads ≤ 256 · kMaxLoads; chain_persistent's blocks must fit on the GPU at once (the
// cooperative launch fails otherwise).
#include "ops/cuda/chain_kernels.h"

#include <stdexcept>

#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"

namespace duality::optest {
namespace {

constexpr int kThreads = 256, kMaxLoads = 32, kOut = 16;

// The block's sum of in[0, reads), every load issued before the first add.
__device__ float block_read(const float* in, int reads) {
    float v[kMaxLoads];
#pragma unroll
    for (int i = 0; i < kMaxLoads; ++i) {
        const int k = i * kThreads + static_cast<int>(threadIdx.x);
        v[i] = k < reads ? __ldcg(in + k) : 0.0f;
    }
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxLoads; ++i) s += v[i];
#pragma unroll
    for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
    __shared__ float part[kThreads / 32];
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = s;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) total += part[w];
    return total;
}

__global__ void __launch_bounds__(kThreads) link_kernel(const float* in, float* out, int reads) {
    duality::cuda::pdl::wait();
    duality::cuda::pdl::allow_next();
    const float s = block_read(in, reads);
    if (threadIdx.x < kOut) out[blockIdx.x * kOut + threadIdx.x] = s * 0.5f + threadIdx.x;
}

__device__ __forceinline__ int load_acquire(const int* p) {
    int v;
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__global__ void __launch_bounds__(kThreads)
    persistent_kernel(float* bufs, int* counters, int reads, int rounds) {
    const int stride = static_cast<int>(gridDim.x) * kOut;
    for (int r = 0; r < rounds; ++r) {
        if (r > 0) {  // wait until every block has written round r − 1
            if (threadIdx.x == 0)
                while (load_acquire(counters + r - 1) < static_cast<int>(gridDim.x)) {
                }
            __syncthreads();
        }
        const float s = block_read(bufs + (r % 2) * stride, reads);
        if (threadIdx.x < kOut)
            bufs[((r + 1) % 2) * stride + blockIdx.x * kOut + threadIdx.x] = s * 0.5f + threadIdx.x;
        __syncthreads();  // every thread's store before thread 0's release
        if (threadIdx.x == 0) {
            __threadfence();
            atomicAdd(counters + r, 1);
        }
    }
}

}  // namespace

void chain_link(const float* in, float* out, int blocks, int reads, bool pdl, cudaStream_t stream) {
    if (reads > kThreads * kMaxLoads) throw std::invalid_argument("chain_link: reads too large");
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(blocks));
    cfg.blockDim = dim3(kThreads);
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    DUALITY_CUDA_CHECK(cudaLaunchKernelEx(&cfg, link_kernel, in, out, reads));
}

void chain_persistent(float* bufs, int* counters, int blocks, int reads, int rounds,
                      cudaStream_t stream) {
    if (reads > kThreads * kMaxLoads)
        throw std::invalid_argument("chain_persistent: reads too large");
    void* args[] = {&bufs, &counters, &reads, &rounds};
    DUALITY_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(persistent_kernel),
                                                   dim3(static_cast<unsigned>(blocks)),
                                                   dim3(kThreads), args, 0, stream));
}

}  // namespace duality::optest
