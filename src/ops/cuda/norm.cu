// RMSNorm variants and the bias add (spec 4 and 5.7), f32 math:
//   add_rms_norm:   residual = h (first) or residual + s·h, s = 1 or a RowScale factor of the row,
//                   h given, the f32 sum of a split-k product's parts (HParts), or with
//                   `first` the embedding table's rows of the given token ids (a fused gather);
//                   out = residual · rsqrt(mean(residual²) + eps) · w
//   gated_rms_norm: v = y · silu(z); per group of group_size channels v · rsqrt(mean(v²) + eps) · w
//   add_bias:       y[r, :] += bias
//
// Parallelization: a "team" normalizes one row (add_rms_norm) or one (row, group) unit
// (gated_rms_norm): a warp when the unit has at most 1024 channels (4 units per 128-thread
// block), else a whole block. Each thread owns K vectors of V = 4 channels (V = 8 in the gated
// norm of f16/bf16 activations where 8-element alignment allows: 16-byte accesses; V = 1 when a
// size, stride or pointer is not 4-element aligned), strided by the team size so a warp's accesses
// are contiguous. The K vectors and the weights are loaded into registers before any math, so a
// unit costs one memory round trip, one team reduction and the stores: these kernels run on a few
// rows per step in decode, where latency, not bandwidth, is what they cost. K is 1, 2, 4 or 8,
// the smallest that keeps a block team within 1024 threads (launch bounds cap those at 64
// registers a thread, so K = 8 spills, and K = 4 at V = 8; no Mamba-2 shape needs them); units
// beyond 8·1024 vectors take K = 0, a loop of 512 threads that re-reads its inputs (L1/L2-resident)
// in the second pass.
// add_bias: one block per row, threads over columns.
// Limits: rows < 2^31 blocks; act f32/f16/bf16; dim % group_size == 0.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "ops/cuda/activation.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"
#include "ops/cuda/reduce.cuh"

namespace duality::cuda {
namespace {

constexpr int kWarpTeamMax = 1024;  // units of at most this many channels get a warp each
constexpr int kWarpsPerBlock = 4;

constexpr int kMaxK = 8;        // vectors held per thread
constexpr int kMaxTeam = 1024;  // threads of a block team
constexpr int kLoopTeam = 512;  // threads of a block team that loops (K = 0)

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

// How a unit of n_vec vectors is spread: K vectors per thread (0: loop), threads per block team.
struct TeamShape {
    int k;
    int threads;
};
TeamShape team_shape(int64_t n_vec, bool warp) {
    if (warp) {
        int k = 1;
        while (k < kMaxK && k * 32 < n_vec) k *= 2;
        return {k * 32 >= n_vec ? k : 0, 32 * kWarpsPerBlock};
    }
    int k = 1;
    while (k < kMaxK && k * kMaxTeam < n_vec) k *= 2;
    if (k * kMaxTeam < n_vec) return {0, kLoopTeam};
    const int64_t t = (n_vec + k - 1) / k;  // > 1024 / V (smaller units go to warp teams)
    return {k, static_cast<int>((t + 31) / 32 * 32)};
}

// ---- add_rms_norm ----------------------------------------------------------------------------
// The factor on h's row (RowScale, ops.h): rsqrt(Σ ssq / count + eps). Each warp adds the row's
// partial sums itself (the same order in every warp): no block barrier. A lane's first
// kPartsPerLane partials are loaded with the row (part_load, before the row's loads are waited
// for), so the scale costs no extra memory round trip: 320 per row cover the state-spaces shapes
// (the prefill gate writes n_head per row, at most 80; the decode gate n_head · head_dim / 16,
// 320 for the 2.7b). Rows of more partials read the rest in part_scale. Loading them after the
// row's loads, one round trip per 32, made the 2.7b's add + RMSNorm at 8k tokens take 93 µs
// against 75 µs now (Nsight Compute, H200). Only the kScaled instantiation has this code: rows
// without a scale (decode, and prefill without the gate) run the kernel as it was without it.
constexpr int kPartsPerLane = 10;
struct Parts {
    float v[kPartsPerLane];  // partial k = lane + 32·i of the row (0 past n_part)
};
__device__ __forceinline__ Parts part_load(const RowScale& sc, int64_t row) {
    Parts p;
    const int lane = static_cast<int>(threadIdx.x % 32);
#pragma unroll
    for (int i = 0; i < kPartsPerLane; ++i) {
        const int64_t k = lane + 32 * i;
        p.v[i] = sc.ssq && k < sc.n_part ? __ldg(sc.ssq + row * sc.n_part + k) : 0.0f;
    }
    return p;
}
__device__ __forceinline__ float part_scale(const RowScale& sc, int64_t row, const Parts& p) {
    if (!sc.ssq) return 1.0f;
    float part = 0.0f;
#pragma unroll
    for (int i = 0; i < kPartsPerLane; ++i) part += p.v[i];
#pragma unroll 4
    for (int64_t k = threadIdx.x % 32 + 32 * kPartsPerLane; k < sc.n_part; k += 32)
        part += sc.ssq[row * sc.n_part + k];
    return rsqrtf(reduce::warp_sum(part) / sc.count + sc.eps);
}

// K > 0: the unit in registers (see the header); K == 0: a loop with a re-reading second pass.
// h's V channels at c of its row: from h (hr), or the sum of the parts' (kParts, pr: the row in
// the first part).
template <typename T, int V, bool kParts>
__device__ __forceinline__ void load_h(const T* hr, const float* pr, const HParts& hp, int64_t c,
                                       float (&r)[V]) {
    if constexpr (kParts) {
        dtype::load<V>(pr + c, r);
#pragma unroll
        for (int q = 1; q < kMaxHParts; ++q) {
            if (q < hp.n) {
                float t[V];
                dtype::load<V>(pr + q * hp.stride + c, t);
#pragma unroll
                for (int i = 0; i < V; ++i) r[i] += t[i];
            }
        }
    } else {
        dtype::load<V>(hr + c, r);
    }
}

template <typename T, int V, int K, bool kWarp, bool kScaled, bool kParts>
__global__ void __launch_bounds__(kWarp ? 32 * kWarpsPerBlock : kMaxTeam)
    add_rms_norm_kernel(const T* __restrict__ h,         // {rows, dim}; unused with kParts
                        float* __restrict__ residual,    // {rows, dim}
                        const float* __restrict__ w,     // {dim}
                        float eps, T* __restrict__ out,  // {rows, dim}
                        int64_t rows, int64_t dim, bool first, RowScale scale, HParts hp,
                        const int32_t* __restrict__ ids) {  // `first` only: h's row of each row
    pdl::wait();  // before any global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    int64_t row;
    int rank, size;
    if (!team_unit<kWarp>(rows, row, rank, size)) return;  // whole teams only
    const T* hr = kParts ? nullptr : h + (ids ? static_cast<int64_t>(ids[row]) : row) * dim;
    const float* pr = kParts ? hp.p + row * dim : nullptr;
    float* res = residual + row * dim;
    T* o = out + row * dim;
    float ss = 0.0f;
    [[maybe_unused]] Parts parts;
    if constexpr (kScaled) parts = part_load(scale, row);
    if constexpr (K > 0) {
        float r[K][V], old[K][V], wv[K][V];
#pragma unroll
        for (int j = 0; j < K; ++j) {
            const int64_t c = (static_cast<int64_t>(j) * size + rank) * V;
            if (c < dim) {
                load_h<T, V, kParts>(hr, pr, hp, c, r[j]);
                if (!first) dtype::load<V>(res + c, old[j]);
                dtype::load<V>(w + c, wv[j]);
            }
        }
        const float hs = kScaled ? part_scale(scale, row, parts) : 1.0f;
#pragma unroll
        for (int j = 0; j < K; ++j) {
            const int64_t c = (static_cast<int64_t>(j) * size + rank) * V;
            if (c >= dim) continue;
#pragma unroll
            for (int i = 0; i < V; ++i) {
                if (!first) r[j][i] = fmaf(r[j][i], hs, old[j][i]);
                ss += r[j][i] * r[j][i];
            }
            dtype::store<V>(res + c, r[j]);
        }
        ss = team_sum<kWarp>(ss);
        const float s = rsqrtf(ss / static_cast<float>(dim) + eps);
#pragma unroll
        for (int j = 0; j < K; ++j) {
            const int64_t c = (static_cast<int64_t>(j) * size + rank) * V;
            if (c >= dim) continue;
#pragma unroll
            for (int i = 0; i < V; ++i) r[j][i] = r[j][i] * s * wv[j][i];
            dtype::store<V>(o + c, r[j]);
        }
    } else {
        const float hs = kScaled ? part_scale(scale, row, parts) : 1.0f;
        for (int64_t c = static_cast<int64_t>(rank) * V; c < dim;
             c += static_cast<int64_t>(size) * V) {
            float r[V];
            load_h<T, V, kParts>(hr, pr, hp, c, r);
            if (!first) {
                float old[V];
                dtype::load<V>(res + c, old);
#pragma unroll
                for (int i = 0; i < V; ++i) r[i] = fmaf(r[i], hs, old[i]);
            }
            dtype::store<V>(res + c, r);
#pragma unroll
            for (int i = 0; i < V; ++i) ss += r[i] * r[i];
        }
        ss = team_sum<kWarp>(ss);
        const float s = rsqrtf(ss / static_cast<float>(dim) + eps);
        for (int64_t c = static_cast<int64_t>(rank) * V; c < dim;
             c += static_cast<int64_t>(size) * V) {
            float r[V], wv[V];
            dtype::load<V>(res + c, r);  // this thread's own writes above
            dtype::load<V>(w + c, wv);
#pragma unroll
            for (int i = 0; i < V; ++i) r[i] = r[i] * s * wv[i];
            dtype::store<V>(o + c, r);
        }
    }
}

// Calls f(K, warp, blocks, threads) (K and warp as integral constants) with the team shape of
// n_vec vectors of V channels per unit, over n_units units.
template <typename F>
void with_team_shape(int64_t n_units, int64_t n_vec, int V, F&& f) {
    const bool warp = n_vec * V <= kWarpTeamMax;
    const TeamShape ts = team_shape(n_vec, warp);
    const auto blocks =
        static_cast<unsigned>(warp ? (n_units + kWarpsPerBlock - 1) / kWarpsPerBlock : n_units);
    auto pick = [&](auto w) {
        switch (ts.k) {
            case 1:
                f(std::integral_constant<int, 1>{}, w, blocks, ts.threads);
                break;
            case 2:
                f(std::integral_constant<int, 2>{}, w, blocks, ts.threads);
                break;
            case 4:
                f(std::integral_constant<int, 4>{}, w, blocks, ts.threads);
                break;
            case 8:
                f(std::integral_constant<int, 8>{}, w, blocks, ts.threads);
                break;
            default:
                f(std::integral_constant<int, 0>{}, w, blocks, ts.threads);
                break;
        }
    };
    if (warp)
        pick(std::true_type{});
    else
        pick(std::false_type{});
    DUALITY_CUDA_LAUNCH_CHECK();
}

template <typename T, int V>
void launch_add_rms_norm(const void* h, float* residual, const float* w, float eps, void* out,
                         int64_t rows, int64_t dim, bool first, const RowScale& scale,
                         const HParts& parts, const int32_t* ids, cudaStream_t stream) {
    const auto* hp = static_cast<const T*>(h);
    auto* op = static_cast<T*>(out);
    with_team_shape(rows, dim / V, V, [&](auto k, auto warp, unsigned blocks, int threads) {
        constexpr int kK = decltype(k)::value;
        constexpr bool kW = decltype(warp)::value;
        // (A RowScale and parts together are refused by add_rms_norm.)
        if (scale.ssq)
            pdl::launch(add_rms_norm_kernel<T, V, kK, kW, true, false>, blocks, threads, 0, stream,
                        hp, residual, w, eps, op, rows, dim, first, scale, parts, ids);
        else if (parts.p)
            pdl::launch(add_rms_norm_kernel<T, V, kK, kW, false, true>, blocks, threads, 0, stream,
                        hp, residual, w, eps, op, rows, dim, first, scale, parts, ids);
        else
            pdl::launch(add_rms_norm_kernel<T, V, kK, kW, false, false>, blocks, threads, 0, stream,
                        hp, residual, w, eps, op, rows, dim, first, scale, parts, ids);
    });
}

// ---- gated_rms_norm --------------------------------------------------------------------------
template <typename T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kWarp ? 32 * kWarpsPerBlock : kMaxTeam)
    gated_rms_norm_kernel(const T* __restrict__ y,  // {rows, dim}
                          const T* __restrict__ z,  // {rows, dim}, z_stride apart
                          int64_t z_stride,
                          const float* __restrict__ w,     // {dim}
                          float eps, T* __restrict__ out,  // {rows, dim}
                          int64_t rows, int64_t dim, int64_t group_size) {
    pdl::wait();  // before any global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    const int64_t n_group = dim / group_size;
    int64_t unit;
    int rank, size;
    if (!team_unit<kWarp>(rows * n_group, unit, rank, size)) return;
    const int64_t row = unit / n_group, c0 = (unit % n_group) * group_size;
    const T* yr = y + row * dim + c0;
    const T* zr = z + row * z_stride + c0;
    T* o = out + row * dim + c0;
    float ss = 0.0f;
    if constexpr (K > 0) {
        float v[K][V], zv[K][V], wv[K][V];
#pragma unroll
        for (int j = 0; j < K; ++j) {
            const int64_t c = (static_cast<int64_t>(j) * size + rank) * V;
            if (c < group_size) {
                dtype::load<V>(yr + c, v[j]);
                dtype::load<V>(zr + c, zv[j]);
                dtype::load<V>(w + c0 + c, wv[j]);
            }
        }
#pragma unroll
        for (int j = 0; j < K; ++j) {
            const int64_t c = (static_cast<int64_t>(j) * size + rank) * V;
            if (c >= group_size) continue;
#pragma unroll
            for (int i = 0; i < V; ++i) {
                v[j][i] *= silu<T>(zv[j][i]);
                ss += v[j][i] * v[j][i];
            }
        }
        ss = team_sum<kWarp>(ss);
        const float s = rsqrtf(ss / static_cast<float>(group_size) + eps);
#pragma unroll
        for (int j = 0; j < K; ++j) {
            const int64_t c = (static_cast<int64_t>(j) * size + rank) * V;
            if (c >= group_size) continue;
#pragma unroll
            for (int i = 0; i < V; ++i) v[j][i] = v[j][i] * s * wv[j][i];
            dtype::store<V>(o + c, v[j]);
        }
    } else {
        for (int64_t c = static_cast<int64_t>(rank) * V; c < group_size;
             c += static_cast<int64_t>(size) * V) {
            float yv[V], zv[V];
            dtype::load<V>(yr + c, yv);
            dtype::load<V>(zr + c, zv);
#pragma unroll
            for (int i = 0; i < V; ++i) {
                const float v = yv[i] * silu<T>(zv[i]);
                ss += v * v;
            }
        }
        ss = team_sum<kWarp>(ss);
        const float s = rsqrtf(ss / static_cast<float>(group_size) + eps);
        for (int64_t c = static_cast<int64_t>(rank) * V; c < group_size;
             c += static_cast<int64_t>(size) * V) {
            float yv[V], zv[V], wv[V];
            dtype::load<V>(yr + c, yv);
            dtype::load<V>(zr + c, zv);
            dtype::load<V>(w + c0 + c, wv);
#pragma unroll
            for (int i = 0; i < V; ++i) yv[i] = yv[i] * silu<T>(zv[i]) * s * wv[i];
            dtype::store<V>(o + c, yv);
        }
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
    with_team_shape(units, group_size / V, V, [&](auto k, auto warp, unsigned blocks, int threads) {
        pdl::launch(gated_rms_norm_kernel<T, V, decltype(k)::value, decltype(warp)::value>, blocks,
                    threads, 0, stream, yp, zp, z_stride, w, eps, op, rows, dim, group_size);
    });
}

// V = 8 exists for 16-bit activations only.
template <typename T>
void launch_gated_vec(const void* y, const void* z, int64_t z_stride, const float* w, float eps,
                      void* out, int64_t rows, int64_t dim, int64_t group_size, bool vec8, bool vec,
                      cudaStream_t stream) {
    if constexpr (sizeof(T) == 2) {
        if (vec8) {
            launch_gated_rms_norm<T, 8>(y, z, z_stride, w, eps, out, rows, dim, group_size, stream);
            return;
        }
    }
    if (vec)
        launch_gated_rms_norm<T, 4>(y, z, z_stride, w, eps, out, rows, dim, group_size, stream);
    else
        launch_gated_rms_norm<T, 1>(y, z, z_stride, w, eps, out, rows, dim, group_size, stream);
}

// ---- add_bias --------------------------------------------------------------------------------
template <typename T, int V>
__global__ void add_bias_kernel(T* __restrict__ y, int64_t ld,   // {rows, n}, ld apart
                                const float* __restrict__ bias,  // {n}
                                int64_t rows, int64_t n) {
    pdl::wait();  // before any global access: see core/cuda/pdl.cuh
    pdl::allow_next();
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
    pdl::launch(add_bias_kernel<T, V>, static_cast<unsigned>(blocks), threads, 0, stream,
                static_cast<T*>(y), ld, bias, rows, n);
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace

void add_rms_norm(const void* h, float* residual, const float* w, float eps, void* out,
                  int64_t rows, int64_t dim, bool first, DType act, cudaStream_t stream,
                  const RowScale& scale, const HParts& parts, const int32_t* ids) {
    if (rows <= 0 || dim <= 0) return;
    if (parts.p &&
        (first || scale.ssq || parts.n < 1 || parts.n > kMaxHParts || parts.stride < rows * dim)) {
        std::fprintf(stderr,
                     "duality: add_rms_norm: parts need 1..%d parts of rows·dim apart, and "
                     "neither `first` nor a RowScale\n",
                     kMaxHParts);
        std::abort();
    }
    if (ids && !first) {
        std::fprintf(stderr, "duality: add_rms_norm: ids (an embedding gather) need `first`\n");
        std::abort();
    }
    // `first` takes h as it is (the embedding).
    const RowScale sc = first ? RowScale{} : scale;
    DUALITY_DISPATCH_FLOAT("add_rms_norm", act, T, {
        const bool vec = dim % 4 == 0 &&
                         (parts.p ? dtype::is_aligned(parts.p, 16) && parts.stride % 4 == 0
                                  : dtype::is_aligned(h, 4 * sizeof(T))) &&
                         dtype::is_aligned(out, 4 * sizeof(T)) && dtype::is_aligned(residual, 16) &&
                         dtype::is_aligned(w, 16);
        if (vec)
            launch_add_rms_norm<T, 4>(h, residual, w, eps, out, rows, dim, first, sc, parts, ids,
                                      stream);
        else
            launch_add_rms_norm<T, 1>(h, residual, w, eps, out, rows, dim, first, sc, parts, ids,
                                      stream);
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
        // f16/bf16: 8 channels (16 bytes of y and z) a thread where multiples of 8 allow.
        const bool vec8 = vec && group_size % 8 == 0 && z_stride % 8 == 0 &&
                          dtype::is_aligned(y, 16) && dtype::is_aligned(z, 16) &&
                          dtype::is_aligned(out, 16) && dtype::is_aligned(w, 32);
        launch_gated_vec<T>(y, z, z_stride, w, eps, out, rows, dim, group_size, vec8, vec, stream);
    });
}

}  // namespace duality::cuda
