// RMSNorm variants and the bias add (spec 4 and 5.7), f32 math:
//   add_rms_norm:   residual = h (first) or residual + h, out =
//   residual·rsqrt(mean(residual²)+eps)·w gated_rms_norm: v = y·silu(z); per group of group_size
//   channels v·rsqrt(mean(v²)+eps)·w add_bias:       y[r, :] += bias
//
// Parallelization: a "team" normalizes one row (add_rms_norm) or one (row, group) unit
// (gated_rms_norm): a warp when the unit has at most 1024 channels (4 units per 128-thread
// block), else a whole block of 64..512 threads. Each thread walks its channels in vectors of
// V = 4 (or V = 1 when a size, stride or pointer is not 4-element aligned), accumulates the sum of
// squares, the team reduces it, and a second pass re-reads its inputs (L1/L2-resident: the same
// thread just touched them) to write the output, so any dim works without shared staging.
// add_bias: one block per row, threads over columns.
// Limits: rows < 2^31 blocks; act f32/f16/bf16; dim % group_size == 0.
#include "core/cuda/check.h"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"
#include "ops/cuda/reduce.cuh"

namespace duality::cuda {
namespace {

constexpr int kWarpTeamMax = 1024;  // units of at most this many channels get a warp each
constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ float silu(float v) {
    return v / (1.0f + expf(-v));
}

// Threads per block for a block-per-unit launch over `n_vec` vectors: about 4 vectors each.
int block_team_threads(int64_t n_vec) {
    int64_t t = (n_vec / 4 + 31) / 32 * 32;
    if (t < 64) t = 64;
    if (t > 512) t = 512;
    return static_cast<int>(t);
}

// The team's unit index, its first thread's rank and size; false when the unit is past the end.
template <bool kWarp>
__device__ __forceinline__ bool team_unit(int64_t n_units, int64_t& unit, int& rank, int& size) {
    if (kWarp) {
        unit = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
        rank = threadIdx.x % 32;
        size = 32;
    } else {
        unit = blockIdx.x;
        rank = threadIdx.x;
        size = blockDim.x;
    }
    return unit < n_units;
}

template <bool kWarp>
__device__ __forceinline__ float team_sum(float v) {
    return kWarp ? reduce::warp_sum(v) : reduce::block_sum(v);
}

// ---- add_rms_norm ----------------------------------------------------------------------------
template <typename T, int V, bool kWarp>
__global__ void add_rms_norm_kernel(const T* __restrict__ h,         // {rows, dim}
                                    float* __restrict__ residual,    // {rows, dim}
                                    const float* __restrict__ w,     // {dim}
                                    float eps, T* __restrict__ out,  // {rows, dim}
                                    int64_t rows, int64_t dim, bool first) {
    int64_t row;
    int rank, size;
    if (!team_unit<kWarp>(rows, row, rank, size)) return;  // whole teams only
    const T* hr = h + row * dim;
    float* res = residual + row * dim;
    float ss = 0.0f;
    for (int64_t c = static_cast<int64_t>(rank) * V; c < dim; c += static_cast<int64_t>(size) * V) {
        float r[V];
        dtype::load<V>(hr + c, r);
        if (!first) {
            float old[V];
            dtype::load<V>(res + c, old);
#pragma unroll
            for (int i = 0; i < V; ++i) r[i] += old[i];
        }
        dtype::store<V>(res + c, r);
#pragma unroll
        for (int i = 0; i < V; ++i) ss += r[i] * r[i];
    }
    ss = team_sum<kWarp>(ss);
    const float s = rsqrtf(ss / static_cast<float>(dim) + eps);
    T* o = out + row * dim;
    for (int64_t c = static_cast<int64_t>(rank) * V; c < dim; c += static_cast<int64_t>(size) * V) {
        float r[V], wv[V];
        dtype::load<V>(res + c, r);  // this thread's own writes above
        dtype::load<V>(w + c, wv);
#pragma unroll
        for (int i = 0; i < V; ++i) r[i] = r[i] * s * wv[i];
        dtype::store<V>(o + c, r);
    }
}

template <typename T, int V>
void launch_add_rms_norm(const void* h, float* residual, const float* w, float eps, void* out,
                         int64_t rows, int64_t dim, bool first, cudaStream_t stream) {
    const auto* hp = static_cast<const T*>(h);
    auto* op = static_cast<T*>(out);
    if (dim <= kWarpTeamMax) {
        const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
        add_rms_norm_kernel<T, V, true>
            <<<static_cast<unsigned>(blocks), 32 * kWarpsPerBlock, 0, stream>>>(
                hp, residual, w, eps, op, rows, dim, first);
    } else {
        add_rms_norm_kernel<T, V, false>
            <<<static_cast<unsigned>(rows), block_team_threads(dim / V), 0, stream>>>(
                hp, residual, w, eps, op, rows, dim, first);
    }
    DUALITY_CUDA_LAUNCH_CHECK();
}

// ---- gated_rms_norm --------------------------------------------------------------------------
template <typename T, int V, bool kWarp>
__global__ void gated_rms_norm_kernel(const T* __restrict__ y,  // {rows, dim}
                                      const T* __restrict__ z,  // {rows, dim}, z_stride apart
                                      int64_t z_stride,
                                      const float* __restrict__ w,     // {dim}
                                      float eps, T* __restrict__ out,  // {rows, dim}
                                      int64_t rows, int64_t dim, int64_t group_size) {
    const int64_t n_group = dim / group_size;
    int64_t unit;
    int rank, size;
    if (!team_unit<kWarp>(rows * n_group, unit, rank, size)) return;
    const int64_t row = unit / n_group, c0 = (unit % n_group) * group_size;
    const T* yr = y + row * dim + c0;
    const T* zr = z + row * z_stride + c0;
    float ss = 0.0f;
    for (int64_t c = static_cast<int64_t>(rank) * V; c < group_size;
         c += static_cast<int64_t>(size) * V) {
        float yv[V], zv[V];
        dtype::load<V>(yr + c, yv);
        dtype::load<V>(zr + c, zv);
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const float v = yv[i] * silu(zv[i]);
            ss += v * v;
        }
    }
    ss = team_sum<kWarp>(ss);
    const float s = rsqrtf(ss / static_cast<float>(group_size) + eps);
    T* o = out + row * dim + c0;
    for (int64_t c = static_cast<int64_t>(rank) * V; c < group_size;
         c += static_cast<int64_t>(size) * V) {
        float yv[V], zv[V], wv[V];
        dtype::load<V>(yr + c, yv);
        dtype::load<V>(zr + c, zv);
        dtype::load<V>(w + c0 + c, wv);
#pragma unroll
        for (int i = 0; i < V; ++i) yv[i] = yv[i] * silu(zv[i]) * s * wv[i];
        dtype::store<V>(o + c, yv);
    }
}

template <typename T, int V>
void launch_gated_rms_norm(const void* y, const void* z, int64_t z_stride, const float* w,
                           float eps, void* out, int64_t rows, int64_t dim, int64_t group_size,
                           cudaStream_t stream) {
    const auto* yp = static_cast<const T*>(y);
    const auto* zp = static_cast<const T*>(z);
    auto* op = static_cast<T*>(out);
    const int64_t units = rows * (dim / group_size);
    if (group_size <= kWarpTeamMax) {
        const int64_t blocks = (units + kWarpsPerBlock - 1) / kWarpsPerBlock;
        gated_rms_norm_kernel<T, V, true>
            <<<static_cast<unsigned>(blocks), 32 * kWarpsPerBlock, 0, stream>>>(
                yp, zp, z_stride, w, eps, op, rows, dim, group_size);
    } else {
        gated_rms_norm_kernel<T, V, false>
            <<<static_cast<unsigned>(units), block_team_threads(group_size / V), 0, stream>>>(
                yp, zp, z_stride, w, eps, op, rows, dim, group_size);
    }
    DUALITY_CUDA_LAUNCH_CHECK();
}

// ---- add_bias --------------------------------------------------------------------------------
template <typename T, int V>
__global__ void add_bias_kernel(T* __restrict__ y, int64_t ld,   // {rows, n}, ld apart
                                const float* __restrict__ bias,  // {n}
                                int64_t rows, int64_t n) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        T* yr = y + r * ld;
        for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < n;
             c += static_cast<int64_t>(blockDim.x) * V) {
            float v[V], b[V];
            dtype::load<V>(yr + c, v);
            dtype::load<V>(bias + c, b);
#pragma unroll
            for (int i = 0; i < V; ++i) v[i] += b[i];
            dtype::store<V>(yr + c, v);
        }
    }
}

template <typename T, int V>
void launch_add_bias(void* y, int64_t ld, const float* bias, int64_t rows, int64_t n,
                     cudaStream_t stream) {
    int threads = 32;
    while (threads < 256 && threads * V < n) threads *= 2;
    const int64_t blocks = rows < 65536 ? rows : 65536;
    add_bias_kernel<T, V><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(static_cast<T*>(y),
                                                                                 ld, bias, rows, n);
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace

void add_rms_norm(const void* h, float* residual, const float* w, float eps, void* out,
                  int64_t rows, int64_t dim, bool first, DType act, cudaStream_t stream) {
    if (rows <= 0 || dim <= 0) return;
    DUALITY_DISPATCH_FLOAT("add_rms_norm", act, T, {
        const bool vec = dim % 4 == 0 && dtype::is_aligned(h, 4 * sizeof(T)) &&
                         dtype::is_aligned(out, 4 * sizeof(T)) && dtype::is_aligned(residual, 16) &&
                         dtype::is_aligned(w, 16);
        if (vec)
            launch_add_rms_norm<T, 4>(h, residual, w, eps, out, rows, dim, first, stream);
        else
            launch_add_rms_norm<T, 1>(h, residual, w, eps, out, rows, dim, first, stream);
    });
}

void add_bias(void* y, int64_t ld, const float* bias, int64_t rows, int64_t n, DType act,
              cudaStream_t stream) {
    if (rows <= 0 || n <= 0) return;
    DUALITY_DISPATCH_FLOAT("add_bias", act, T, {
        const bool vec = n % 4 == 0 && ld % 4 == 0 && dtype::is_aligned(y, 4 * sizeof(T)) &&
                         dtype::is_aligned(bias, 16);
        if (vec)
            launch_add_bias<T, 4>(y, ld, bias, rows, n, stream);
        else
            launch_add_bias<T, 1>(y, ld, bias, rows, n, stream);
    });
}

void gated_rms_norm(const void* y, const void* z, int64_t z_stride, const float* w, float eps,
                    void* out, int64_t rows, int64_t dim, int64_t group_size, DType act,
                    cudaStream_t stream) {
    if (rows <= 0 || dim <= 0) return;
    if (group_size <= 0 || dim % group_size != 0) {
        std::fprintf(stderr, "duality: internal error: gated_rms_norm: dim %lld, group %lld\n",
                     static_cast<long long>(dim), static_cast<long long>(group_size));
        std::abort();
    }
    DUALITY_DISPATCH_FLOAT("gated_rms_norm", act, T, {
        const bool vec = group_size % 4 == 0 && z_stride % 4 == 0 &&
                         dtype::is_aligned(y, 4 * sizeof(T)) &&
                         dtype::is_aligned(z, 4 * sizeof(T)) &&
                         dtype::is_aligned(out, 4 * sizeof(T)) && dtype::is_aligned(w, 16);
        if (vec)
            launch_gated_rms_norm<T, 4>(y, z, z_stride, w, eps, out, rows, dim, group_size, stream);
        else
            launch_gated_rms_norm<T, 1>(y, z, z_stride, w, eps, out, rows, dim, group_size, stream);
    });
}

}  // namespace duality::cuda
