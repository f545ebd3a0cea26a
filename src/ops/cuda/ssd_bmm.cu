// Chunked SSD step K2 (spec 6.2): per chunk c and group g,
//   cb[c, g, i, j] = Σ_n C[chunk_start + i, g, n] · B[chunk_start + j, g, n]
// for i, j < chunk_len, f32 (operands in the activation dtype, f32 accumulation). Only the lower
// block triangle is computed: K5 reads j <= i only.
// Parallelization: one block (4 warps) per (64×64 tile (bi, bj) with bj <= bi, group, chunk),
// tile index fastest; K loop over d_state in steps of 64 (f16/bf16: wmma tensor cores) or 32
// (f32: CUDA-core FMAs). C and B rows are staged in shared memory, zero-filled past chunk_len and
// d_state; the result goes out through a shared f32 tile.
// Limits: any d_state, chunk_size <= 1024, n_group dividing n_head.
#include "core/cuda/check.h"
#include "ops/cuda/ssd_mma.cuh"
#include "ops/cuda/ssd_plan.h"

namespace duality::cuda::ssd {
namespace {

template <typename T>
struct BmmSmem {
    static constexpr int kBK = TileCfg<T>::kBK, kLd = kBK + TileCfg<T>::kPad;  // {64, BK} tiles
    static constexpr int kLds = 64 + 4;                                        // {64, 64} f32
    static constexpr int kTile = kBM * kLd * static_cast<int>(sizeof(T));
    static constexpr int kStage = kBM * kLds * 4;
    static constexpr int kBytes = 2 * kTile > kStage ? 2 * kTile : kStage;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) bmm_kernel(Plan p) {
    using L = BmmSmem<T>;
    __shared__ __align__(128) unsigned char smem[L::kBytes];
    T* As = reinterpret_cast<T*>(smem);             // {64, BK}: C rows i0.., columns n0..
    T* Bs = reinterpret_cast<T*>(smem + L::kTile);  // {64, BK}: B rows j0.., columns n0..
    float* stg = reinterpret_cast<float*>(smem);    // {64, 64}: the CB tile (after the K loop)

    const int G = p.n_group, N = p.d_state, Q = p.chunk_size;
    const int n_t = (Q + kBM - 1) / kBM, pairs = n_t * (n_t + 1) / 2;
    int t = static_cast<int>(blockIdx.x % pairs);
    const int64_t rest = blockIdx.x / pairs;
    const int g = static_cast<int>(rest % G);
    const int64_t c = rest / G;
    int bi = 0;
    while (t > bi) {
        t -= bi + 1;
        ++bi;
    }
    const int bj = t, i0 = bi * kBM, j0 = bj * kBM;
    const int len = p.chunk_len[c];
    if (i0 >= len) return;
    const int64_t start = p.chunk_start[c];
    const T* Cm = static_cast<const T*>(p.C) + start * p.bc_stride + g * N;  // {len, N}
    const T* Bm = static_cast<const T*>(p.B) + start * p.bc_stride + g * N;  // {len, N}

    BlockMma<T, 2> mma;
    mma.zero();
    for (int n0 = 0; n0 < N; n0 += L::kBK) {
        load_tile<kBM, L::kBK>(As, L::kLd, Cm + i0 * p.bc_stride + n0, p.bc_stride, len - i0,
                               N - n0, p.vec, Identity{});
        load_tile<kBM, L::kBK>(Bs, L::kLd, Bm + j0 * p.bc_stride + n0, p.bc_stride, len - j0,
                               N - n0, p.vec, Identity{});
        __syncthreads();
        const int k_len = round16(min(L::kBK, N - n0));
        mma.template step<wmma::row_major, wmma::col_major>(As, L::kLd, Bs, L::kLd, k_len);
        __syncthreads();
    }
    mma.store(stg, L::kLds);
    __syncthreads();
    const int rows = min(kBM, len - i0), cols = min(kBM, len - j0);
    float* out = p.cb + ((c * G + g) * Q + i0) * p.q_ld + j0;
    for (int e = threadIdx.x; e < rows * kBM; e += kThreads) {
        const int r = e / kBM, col = e % kBM;
        if (col < cols) out[r * p.q_ld + col] = stg[r * L::kLds + col];
    }
}

}  // namespace

template <typename T>
void launch_bmm(const Plan& p, cudaStream_t stream) {
    const int64_t n_t = (p.chunk_size + kBM - 1) / kBM;
    const int64_t blocks = n_t * (n_t + 1) / 2 * p.n_group * p.n_chunk;
    bmm_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
    DUALITY_CUDA_LAUNCH_CHECK();
}

template void launch_bmm<float>(const Plan&, cudaStream_t);
template void launch_bmm<__half>(const Plan&, cudaStream_t);
template void launch_bmm<__nv_bfloat16>(const Plan&, cudaStream_t);

}  // namespace duality::cuda::ssd
