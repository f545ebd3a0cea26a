// Utility kernels for weight setup:
//   fill_uniform:     dst[i] = round_dt(lo + (hi - lo) · u(seed, i)), u = the splitmix64 hash of
//                     uniform_hash() in model/weights.h (24 bits, in [0, 1)), so a random model is
//                     the same model on the CPU (f32) and the GPU (rounded to dt). The product
//                     and the sum are rounded separately (no FMA), as the host computes them.
//   convert_from_f32: dst[i] = round_dt(src[i]), bit-identical to core/half.h's f32_to_bf16 and
//                     f32_to_f16 (round to nearest even, NaN kept as NaN the same way).
// Parallelization: a grid-stride loop, one element per thread per step.
// Limits: any n; dt f32/f16/bf16.
#include "core/cuda/check.h"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace {

// uniform_hash(seed, index) of model/weights.h.
__device__ __forceinline__ float uniform_hash(uint64_t seed, uint64_t index) {
    uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<float>(z >> 40) * 0x1.0p-24f;
}

// Stores v in dst[i] rounded to dtype D (0 f32, 1 f16, 2 bf16), the host's bit patterns.
template <int D>
__device__ __forceinline__ void put(void* dst, int64_t i, float v) {
    if constexpr (D == 0)
        static_cast<float*>(dst)[i] = v;
    else if constexpr (D == 1)
        static_cast<uint16_t*>(dst)[i] = dtype::f32_to_f16_bits(v);
    else
        static_cast<uint16_t*>(dst)[i] = dtype::f32_to_bf16_bits(v);
}

template <int D>
__global__ void fill_uniform_kernel(void* dst, int64_t n, uint64_t seed, float lo, float hi) {
    const float range = __fsub_rn(hi, lo);
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        put<D>(dst, i,
               __fadd_rn(lo, __fmul_rn(range, uniform_hash(seed, static_cast<uint64_t>(i)))));
}

template <int D>
__global__ void convert_kernel(const float* __restrict__ src, void* dst, int64_t n) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        put<D>(dst, i, src[i]);
}

constexpr int kThreads = 256;
unsigned blocks_for(int64_t n) {
    const int64_t b = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned>(b < 65536 ? b : 65536);
}

}  // namespace

void fill_uniform(void* dst, int64_t n, DType dt, uint64_t seed, float lo, float hi,
                  cudaStream_t stream) {
    if (n <= 0) return;
    switch (dt) {
        case DType::kF32:
            fill_uniform_kernel<0><<<blocks_for(n), kThreads, 0, stream>>>(dst, n, seed, lo, hi);
            break;
        case DType::kF16:
            fill_uniform_kernel<1><<<blocks_for(n), kThreads, 0, stream>>>(dst, n, seed, lo, hi);
            break;
        case DType::kBF16:
            fill_uniform_kernel<2><<<blocks_for(n), kThreads, 0, stream>>>(dst, n, seed, lo, hi);
            break;
        default:
            dtype::bad_dtype("fill_uniform", dt);
    }
    DUALITY_CUDA_LAUNCH_CHECK();
}

void convert_from_f32(const float* src, void* dst, int64_t n, DType dt, cudaStream_t stream) {
    if (n <= 0) return;
    switch (dt) {
        case DType::kF32:
            convert_kernel<0><<<blocks_for(n), kThreads, 0, stream>>>(src, dst, n);
            break;
        case DType::kF16:
            convert_kernel<1><<<blocks_for(n), kThreads, 0, stream>>>(src, dst, n);
            break;
        case DType::kBF16:
            convert_kernel<2><<<blocks_for(n), kThreads, 0, stream>>>(src, dst, n);
            break;
        default:
            dtype::bad_dtype("convert_from_f32", dt);
    }
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda
