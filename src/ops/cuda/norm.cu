// Row-wise ops of the Mamba-2 block (CPU twins in ops/cpu/norm.cpp and ops/cpu/ops.h):
//   embedding      out[r] = table[ids[r]]                               (a row gather)
//   add_rms_norm   residual += h (or = h), out = residual·rsqrt(mean(residual²) + eps)·w
//   gated_rms_norm v = y·silu(z); per group of group_size channels: v·rsqrt(mean(v²) + eps)·w
//   add_bias       y[r] += bias
//   dt_softplus    Δ = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max)
// Parallelization: one block per row (per row and group for the gated norm); threads stride
// over the channels, a block-wide sum gives the mean of squares. Elementwise ops: one thread per
// element. All math in f32; outputs rounded once to the activation dtype.
// Limits: none on the sizes beyond int64 indexing; rows may be any count.
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace {

constexpr int kRowThreads = 256;

template <typename T>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const T* __restrict__ table,
                                 int64_t dim, T* __restrict__ out) {
    const int64_t r = blockIdx.x;
    const T* src = table + static_cast<int64_t>(ids[r]) * dim;
    T* dst = out + r * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

template <typename T>
__global__ void add_rms_norm_kernel(const T* __restrict__ h, float* __restrict__ residual,
                                    const float* __restrict__ w, float eps, T* __restrict__ out,
                                    int64_t dim, bool first) {
    const int64_t r = blockIdx.x;
    const T* hr = h + r * dim;
    float* res = residual + r * dim;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = first ? to_f32(hr[i]) : res[i] + to_f32(hr[i]);
        res[i] = v;
        ss += v * v;
    }
    const float scale = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
    T* o = out + r * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = from_f32<T>(res[i] * scale * w[i]);
}

template <typename T>
__global__ void gated_rms_norm_kernel(const T* __restrict__ y, const T* __restrict__ z,
                                      int64_t z_stride, const float* __restrict__ w, float eps,
                                      T* __restrict__ out, int64_t dim, int64_t group_size) {
    const int64_t r = blockIdx.x, g0 = static_cast<int64_t>(blockIdx.y) * group_size;
    const T* yr = y + r * dim;
    const T* zr = z + r * z_stride;
    float ss = 0.0f;
    for (int64_t i = g0 + threadIdx.x; i < g0 + group_size; i += blockDim.x) {
        const float v = to_f32(yr[i]) * silu(to_f32(zr[i]));
        ss += v * v;
    }
    const float scale = rsqrtf(block_sum(ss) / static_cast<float>(group_size) + eps);
    T* o = out + r * dim;
    for (int64_t i = g0 + threadIdx.x; i < g0 + group_size; i += blockDim.x) {
        const float v = to_f32(yr[i]) * silu(to_f32(zr[i]));
        o[i] = from_f32<T>(v * scale * w[i]);
    }
}

template <typename T>
__global__ void add_bias_kernel(T* __restrict__ y, int64_t ld, const float* __restrict__ bias,
                                int64_t rows, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= rows * n) return;
    const int64_t r = i / n, c = i % n;
    y[r * ld + c] = from_f32<T>(to_f32(y[r * ld + c]) + bias[c]);
}

template <typename T>
__global__ void dt_softplus_kernel(const T* __restrict__ dt_raw, int64_t raw_stride,
                                   const float* __restrict__ dt_bias, float dt_min, float dt_max,
                                   float* __restrict__ dt, int64_t rows, int64_t n_head) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= rows * n_head) return;
    const int64_t r = i / n_head, h = i % n_head;
    const float v = softplus(to_f32(dt_raw[r * raw_stride + h]) + dt_bias[h]);
    dt[i] = fminf(fmaxf(v, dt_min), dt_max);
}

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace

void embedding(const int32_t* ids, int64_t rows, const void* table, int64_t dim, void* out,
               DType act, cudaStream_t stream) {
    if (rows == 0) return;
    DUALITY_DISPATCH_FLOAT(act, T,
                           embedding_kernel<T><<<static_cast<unsigned>(rows), kRowThreads, 0,
                                                 stream>>>(ids, static_cast<const T*>(table), dim,
                                                           static_cast<T*>(out)));
    DUALITY_CUDA_LAUNCH_CHECK();
}

void add_rms_norm(const void* h, float* residual, const float* w, float eps, void* out,
                  int64_t rows, int64_t dim, bool first, DType act, cudaStream_t stream) {
    if (rows == 0) return;
    DUALITY_DISPATCH_FLOAT(act, T,
                           add_rms_norm_kernel<T><<<static_cast<unsigned>(rows), kRowThreads, 0,
                                                    stream>>>(static_cast<const T*>(h), residual,
                                                              w, eps, static_cast<T*>(out), dim,
                                                              first));
    DUALITY_CUDA_LAUNCH_CHECK();
}

void gated_rms_norm(const void* y, const void* z, int64_t z_stride, const float* w, float eps,
                    void* out, int64_t rows, int64_t dim, int64_t group_size, DType act,
                    cudaStream_t stream) {
    if (rows == 0) return;
    const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(dim / group_size));
    DUALITY_DISPATCH_FLOAT(act, T,
                           gated_rms_norm_kernel<T><<<grid, kRowThreads, 0, stream>>>(
                               static_cast<const T*>(y), static_cast<const T*>(z), z_stride, w,
                               eps, static_cast<T*>(out), dim, group_size));
    DUALITY_CUDA_LAUNCH_CHECK();
}

void add_bias(void* y, int64_t ld, const float* bias, int64_t rows, int64_t n, DType act,
              cudaStream_t stream) {
    if (rows * n == 0) return;
    DUALITY_DISPATCH_FLOAT(act, T,
                           add_bias_kernel<T><<<blocks_for(rows * n, 256), 256, 0, stream>>>(
                               static_cast<T*>(y), ld, bias, rows, n));
    DUALITY_CUDA_LAUNCH_CHECK();
}

void dt_softplus(const void* dt_raw, int64_t raw_stride, const float* dt_bias, float dt_min,
                 float dt_max, float* dt, int64_t rows, int64_t n_head, DType act,
                 cudaStream_t stream) {
    if (rows * n_head == 0) return;
    DUALITY_DISPATCH_FLOAT(act, T,
                           dt_softplus_kernel<T><<<blocks_for(rows * n_head, 256), 256, 0,
                                                   stream>>>(static_cast<const T*>(dt_raw),
                                                             raw_stride, dt_bias, dt_min, dt_max,
                                                             dt, rows, n_head));
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda
