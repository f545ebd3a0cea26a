// Weight utilities: fill_uniform draws values uniform in [lo, hi) from the same counter-based
// hash as the CPU's random_weights (uniform_hash in model/weights.h: splitmix64 of seed and
// index, 24 bits), so a random model is the same model on every backend; convert_from_f32 rounds
// f32 weights to the compute dtype (round to nearest even, like core/half.h).
// Parallelization: one thread per element, grid-stride loop. Limits: none.
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace {

__device__ __forceinline__ float uniform_hash(uint64_t seed, uint64_t index) {
    uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<float>(z >> 40) * 0x1.0p-24f;
}

template <typename T>
__global__ void fill_uniform_kernel(T* dst, int64_t n, uint64_t seed, float lo, float hi) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        dst[i] = from_f32<T>(lo + (hi - lo) * uniform_hash(seed, static_cast<uint64_t>(i)));
}

template <typename T>
__global__ void convert_kernel(const float* src, T* dst, int64_t n) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        dst[i] = from_f32<T>(src[i]);
}

unsigned grid_for(int64_t n) {
    return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65536));
}

}  // namespace

void fill_uniform(void* dst, int64_t n, DType dt, uint64_t seed, float lo, float hi,
                  cudaStream_t stream) {
    if (n == 0) return;
    DUALITY_DISPATCH_FLOAT(dt, T,
                           fill_uniform_kernel<T><<<grid_for(n), 256, 0, stream>>>(
                               static_cast<T*>(dst), n, seed, lo, hi));
    DUALITY_CUDA_LAUNCH_CHECK();
}

void convert_from_f32(const float* src, void* dst, int64_t n, DType dt, cudaStream_t stream) {
    if (n == 0) return;
    DUALITY_DISPATCH_FLOAT(dt, T,
                           convert_kernel<T><<<grid_for(n), 256, 0, stream>>>(
                               src, static_cast<T*>(dst), n));
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda
