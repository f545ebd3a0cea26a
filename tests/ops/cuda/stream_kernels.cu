// Test-only streams (see stream_kernels.h): in-place f32 read-modify-write, p[i] = p[i]·a + b, and
// a read stream. Parallelization: per pattern, below. Limits: rmw_stream's n4 a multiple of 1024
// (whole blocks everywhere).
#include "ops/cuda/stream_kernels.h"

#include <stdexcept>

#include "core/cuda/check.h"

namespace duality::optest {
namespace {

constexpr float kA = 0.999f, kB = 1e-3f;

__device__ __forceinline__ float4 fma4(float4 v) {
    return make_float4(v.x * kA + kB, v.y * kA + kB, v.z * kA + kB, v.w * kA + kB);
}

__global__ void one_vec(float4* p) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    p[i] = fma4(p[i]);
}

// A warp's 4 rows of 32 float4s (2 KB) as ssm_decode_kernel at d_state 128: all loads, then the
// stores, streaming hints.
__global__ void decode_like(float4* p) {
    const int64_t base = (static_cast<int64_t>(blockIdx.x) * 4 + threadIdx.x / 32) * 128;
    const int lane = threadIdx.x % 32;
    float4 v[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) v[r] = __ldcs(p + base + r * 32 + lane);
#pragma unroll
    for (int r = 0; r < 4; ++r) __stcs(p + base + r * 32 + lane, fma4(v[r]));
}

template <bool kHint>
__global__ void persistent(float4* p, int64_t n4) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n4;
         i += 4 * stride) {
        float4 v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u)
            if (i + u * stride < n4) v[u] = kHint ? __ldcs(p + i + u * stride) : p[i + u * stride];
#pragma unroll
        for (int u = 0; u < 4; ++u)
            if (i + u * stride < n4) {
                if constexpr (kHint)
                    __stcs(p + i + u * stride, fma4(v[u]));
                else
                    p[i + u * stride] = fma4(v[u]);
            }
    }
}

// Each thread reads U float4s `stride` apart per round, all issued before any is added.
template <int U>
__global__ void read_only(const float4* __restrict__ p, int64_t n4, float* out) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    float sum = 0.0f;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n4;
         i += U * stride) {
        float4 v[U];
#pragma unroll
        for (int u = 0; u < U; ++u)
            v[u] = i + u * stride < n4 ? __ldcs(p + i + u * stride) : make_float4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < U; ++u) sum += v[u].x + v[u].y + v[u].z + v[u].w;
    }
    __shared__ float part[256 / 32];
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (float v : part) total += v;
        out[blockIdx.x] = total;
    }
}

}  // namespace

void read_stream(const float* p, int64_t n4, int in_flight, int sms, float* out,
                 cudaStream_t stream) {
    const auto* q = reinterpret_cast<const float4*>(p);
    const auto blocks = static_cast<unsigned>(sms * 8);
    if (in_flight == 4)
        read_only<4><<<blocks, 256, 0, stream>>>(q, n4, out);
    else if (in_flight == 8)
        read_only<8><<<blocks, 256, 0, stream>>>(q, n4, out);
    else
        throw std::invalid_argument("read_stream: in_flight must be 4 or 8");
    DUALITY_CUDA_LAUNCH_CHECK();
}

void rmw_stream(float* p, int64_t n4, RmwPattern pattern, int sms, cudaStream_t stream) {
    if (n4 % 1024 != 0) throw std::invalid_argument("rmw_stream: n4 must be a multiple of 1024");
    float4* q = reinterpret_cast<float4*>(p);
    switch (pattern) {
        case RmwPattern::kOneVec:
            one_vec<<<static_cast<unsigned>(n4 / 256), 256, 0, stream>>>(q);
            break;
        case RmwPattern::kDecodeLike:
            decode_like<<<static_cast<unsigned>(n4 / 512), 128, 0, stream>>>(q);
            break;
        case RmwPattern::kPersistent:
            persistent<false><<<static_cast<unsigned>(sms * 8), 256, 0, stream>>>(q, n4);
            break;
        case RmwPattern::kPersistentHint:
            persistent<true><<<static_cast<unsigned>(sms * 8), 256, 0, stream>>>(q, n4);
            break;
    }
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::optest
