// Chunked SSD step K3 (spec 6.2): the chunk-local state of every (chunk c, head h),
//   st[c, h, p, n] = Σ_{j < len} x[j, h, p] · ( B[j, g, n] · exp(min(Scs[len-1] − Scs[j], 0)) ·
//   Δ[j] )
// (tokens j of the chunk, g = h / (n_head / n_group)). The bracketed factor is computed in f32 and
// rounded once to the activation dtype (spec 9.1); the product accumulates in f32 and is stored
// in f32.
// Parallelization: one block (4 warps) per (64×64 tile of {head_dim, d_state}, head, chunk), tile
// index fastest. K loop over the chunk's tokens in steps of 64 (f16/bf16: wmma tensor cores,
// Xᵀ as a column-major operand) or 32 (f32: CUDA-core FMAs). The result goes out through a shared
// f32 tile.
// Limits: any head_dim and d_state (tiles are padded), chunk_size <= 1024.
#include "core/cuda/check.h"
#include "ops/cuda/ssd_mma.cuh"
#include "ops/cuda/ssd_plan.h"

namespace duality::cuda::ssd {
namespace {

template <typename T>
struct StateSmem {
    static constexpr int kBK = TileCfg<T>::kBK, kLd = 64 + TileCfg<T>::kPad;  // {BK, 64} tiles
    static constexpr int kLds = 64 + 4;                                       // {64, 64} f32
    static constexpr int kTile = kBK * kLd * static_cast<int>(sizeof(T));
    static constexpr int kStage = 64 * kLds * 4;
    static constexpr int kBytes = 2 * kTile > kStage ? 2 * kTile : kStage;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) chunk_state_kernel(Plan p) {
    using L = StateSmem<T>;
    extern __shared__ __align__(128) unsigned char smem[];
    T* Xs = reinterpret_cast<T*>(smem);             // {BK, 64}: x[j0 + k, h, p0 + p]
    T* Bs = reinterpret_cast<T*>(smem + L::kTile);  // {BK, 64}: scaled B[j0 + k, g, n0 + n]
    float* stg = reinterpret_cast<float*>(smem);    // {64, 64}: the state tile (p, n)
    float* f_s = reinterpret_cast<float*>(smem + L::kBytes);  // {Q}: exp(Scs_last − Scs_j)·Δ_j

    const int H = p.n_head, P = p.head_dim, N = p.d_state, Q = p.chunk_size;
    const int n_nt = (N + 63) / 64, tiles = ((P + 63) / 64) * n_nt;
    const int t = static_cast<int>(blockIdx.x % tiles);
    const int64_t rest = blockIdx.x / tiles;
    const int h = static_cast<int>(rest % H);
    const int64_t c = rest / H;
    const int p0 = (t / n_nt) * 64, n0 = (t % n_nt) * 64;
    const int g = h / p.heads_per_group;
    const int64_t start = p.chunk_start[c];
    const int len = p.chunk_len[c];

    const float* cs = p.cs + (c * H + h) * Q;
    const float* dtc = p.dtc + (c * H + h) * Q;
    const float cs_last = cs[Q - 1];  // = Scs[len - 1]: the cumsum is flat past len
    for (int j = threadIdx.x; j < len; j += kThreads)
        f_s[j] = expf(fminf(cs_last - cs[j], 0.0f)) * dtc[j];
    __syncthreads();

    const T* x = static_cast<const T*>(p.x) + start * p.x_stride + h * P + p0;    // {len, ..}
    const T* Bm = static_cast<const T*>(p.B) + start * p.bc_stride + g * N + n0;  // {len, ..}
    BlockMma<T, 2> mma;
    mma.zero();
    for (int j0 = 0; j0 < len; j0 += L::kBK) {
        load_tile<L::kBK, 64>(Xs, L::kLd, x + j0 * p.x_stride, p.x_stride, len - j0, P - p0, p.vec,
                              Identity{});
        load_tile<L::kBK, 64>(Bs, L::kLd, Bm + j0 * p.bc_stride, p.bc_stride, len - j0, N - n0,
                              p.vec, [&](int r, int, float v) { return v * f_s[j0 + r]; });
        __syncthreads();
        const int k_len = round16(min(L::kBK, len - j0));
        // A = Xᵀ {64 (p), k}: Xs holds it column-major; B = scaled B {k, 64 (n)}, row-major.
        mma.template step<wmma::col_major, wmma::row_major>(Xs, L::kLd, Bs, L::kLd, k_len);
        __syncthreads();
    }
    mma.store(stg, L::kLds);
    __syncthreads();
    const int rows = min(64, P - p0), cols = min(64, N - n0);
    float* out = p.st + ((c * H + h) * P + p0) * p.n_ld + n0;
    for (int e = threadIdx.x; e < rows * 64; e += kThreads) {
        const int r = e / 64, col = e % 64;
        if (col < cols) out[r * p.n_ld + col] = stg[r * L::kLds + col];
    }
}

}  // namespace

template <typename T>
void launch_chunk_state(const Plan& p, cudaStream_t stream) {
    const int64_t tiles = ((p.head_dim + 63) / 64) * ((p.d_state + 63) / 64);
    const int64_t blocks = tiles * p.n_head * p.n_chunk;
    const size_t smem = StateSmem<T>::kBytes + sizeof(float) * p.chunk_size;
    chunk_state_kernel<T><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(p);
    DUALITY_CUDA_LAUNCH_CHECK();
}

template void launch_chunk_state<float>(const Plan&, cudaStream_t);
template void launch_chunk_state<__half>(const Plan&, cudaStream_t);
template void launch_chunk_state<__nv_bfloat16>(const Plan&, cudaStream_t);

}  // namespace duality::cuda::ssd
