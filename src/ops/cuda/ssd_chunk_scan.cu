// Chunked SSD step K5 (spec 6.2): the output of every token i of chunk c, head h, channel p:
//   y[i, h, p] = exp(Scs_i) · Σ_n C[i, g, n] · prev[c, h, p, n]                     (inter-chunk)
//              + Σ_{j <= i} (CB[c, g, i, j] · exp(min(Scs_i − Scs_j, 0)) · Δ_j) · x[j, h, p]
//              (intra)
//              + D_h · x[i, h, p]
// prev (f32, from K4) and the intra factor (computed in f32) are rounded once to the activation
// dtype as GEMM operands; both dots accumulate in f32, exp(Scs_i) and D·x are applied in f32.
// Parallelization: one block (4 warps) per (64-row block of the chunk × PT-column block of
// head_dim, head, chunk), tile index fastest and the (costlier) last row blocks first. Each block
// runs two tile GEMMs into one {64, PT} f32 accumulator: C · prevᵀ over d_state, rescaled by
// exp(Scs_i) through shared memory, then W · x over the chunk's tokens j < min(i0 + 64, len)
// (causal at block granularity; W is masked per element). K step 64 (f16/bf16: wmma tensor
// cores) or 32 (f32: CUDA-core FMAs). PT = 32·kFrag, kFrag in 1..4, chosen from head_dim
// (head_dim > 128 uses several 128-wide column blocks).
// Limits: any head_dim and d_state, chunk_size <= 1024.
#include "core/cuda/check.h"
#include "ops/cuda/ssd_mma.cuh"
#include "ops/cuda/ssd_plan.h"

namespace duality::cuda::ssd {
namespace {

template <typename T, int kFrag>
struct ScanSmem {
    static constexpr int kBK = TileCfg<T>::kBK, kPad = TileCfg<T>::kPad, kPT = 32 * kFrag;
    static constexpr int kLdA = kBK + kPad;  // A tiles {64, BK}: C rows or W
    static constexpr int kLdX = kPT + kPad;  // x tile {BK, PT}
    static constexpr int kLdP = kBK + kPad;  // prev tile {PT, BK}
    static constexpr int kLds = kPT + 4;     // staging {64, PT} f32
    static constexpr int kSz = static_cast<int>(sizeof(T));
    static constexpr int kA = kBM * kLdA * kSz;
    static constexpr int kB = (kBK * kLdX > kPT * kLdP ? kBK * kLdX : kPT * kLdP) * kSz;
    static constexpr int kStage = kBM * kLds * 4;
    static constexpr int kBytes = kA + kB > kStage ? kA + kB : kStage;
};

template <typename T, int kFrag>
__global__ void __launch_bounds__(kThreads) chunk_scan_kernel(Plan p) {
    using L = ScanSmem<T, kFrag>;
    constexpr int BK = L::kBK, PT = L::kPT;
    extern __shared__ __align__(128) unsigned char smem[];
    T* As = reinterpret_cast<T*>(smem);           // {64, BK}
    T* Bs = reinterpret_cast<T*>(smem + L::kA);   // {BK, PT} (x) or {PT, BK} (prev)
    float* stg = reinterpret_cast<float*>(smem);  // {64, PT}: accumulators between phases
    float* cs_s = reinterpret_cast<float*>(smem + L::kBytes);  // {Q}: Scs
    float* dt_s = cs_s + p.chunk_size;                         // {Q}: Δ

    const int H = p.n_head, P = p.head_dim, N = p.d_state, Q = p.chunk_size;
    const int n_ib = (Q + kBM - 1) / kBM, n_pt = (P + PT - 1) / PT;
    const int t = static_cast<int>(blockIdx.x % (n_ib * n_pt));
    const int64_t rest = blockIdx.x / (n_ib * n_pt);
    const int h = static_cast<int>(rest % H);
    const int64_t c = rest / H;
    const int ib = n_ib - 1 - t / n_pt, pt = t % n_pt;
    const int len = p.chunk_len[c], i0 = ib * kBM, p0 = pt * PT;
    if (i0 >= len) return;
    const int g = h / p.heads_per_group;
    const int64_t start = p.chunk_start[c];
    const int rows = min(kBM, len - i0), cols = min(PT, P - p0);

    for (int i = threadIdx.x; i < len; i += kThreads) {
        cs_s[i] = p.cs[(c * H + h) * Q + i];
        dt_s[i] = p.dtc[(c * H + h) * Q + i];
    }
    const T* x = static_cast<const T*>(p.x) + start * p.x_stride + h * P + p0;  // {len, ..}
    const T* Cm = static_cast<const T*>(p.C) + start * p.bc_stride + g * N;     // {len, N}
    const float* prev = p.st + ((c * H + h) * P + p0) * p.n_ld;                 // {.., n_ld}
    const float* cb = p.cb + (c * p.n_group + g) * Q * p.q_ld;                  // {Q, q_ld}

    BlockMma<T, kFrag> mma;
    mma.zero();
    // Inter-chunk: acc = C · prevᵀ (prev tile {PT, BK} = a column-major {BK, PT} operand).
    for (int n0 = 0; n0 < N; n0 += BK) {
        load_tile<kBM, BK>(As, L::kLdA, Cm + i0 * p.bc_stride + n0, p.bc_stride, len - i0, N - n0,
                           p.vec, Identity{});
        load_tile<PT, BK>(Bs, L::kLdP, prev + n0, p.n_ld, P - p0, N - n0, true, Identity{});
        __syncthreads();
        const int k_len = round16(min(BK, N - n0));
        mma.template step<wmma::row_major, wmma::col_major>(As, L::kLdA, Bs, L::kLdP, k_len);
        __syncthreads();
    }
    mma.store(stg, L::kLds);
    __syncthreads();
    for (int e = threadIdx.x; e < kBM * PT; e += kThreads) {
        const int r = e / PT, col = e % PT;
        float& v = stg[r * L::kLds + col];
        v = r < rows ? v * expf(cs_s[i0 + r]) : 0.0f;
    }
    __syncthreads();
    mma.load(stg, L::kLds);
    __syncthreads();  // the tiles below overwrite the staging area

    // Intra-chunk: acc += W · x, W[i, j] = CB[i, j] · exp(min(Scs_i − Scs_j, 0)) · Δ_j for j <= i.
    const int j_end = min(i0 + kBM, len);
    for (int j0 = 0; j0 < j_end; j0 += BK) {
        load_tile<kBM, BK>(As, L::kLdA, cb + i0 * p.q_ld + j0, p.q_ld, len - i0, len - j0, true,
                           [&](int r, int k, float v) {
                               const int i = i0 + r, j = j0 + k;
                               return j <= i ? v * expf(fminf(cs_s[i] - cs_s[j], 0.0f)) * dt_s[j]
                                             : 0.0f;
                           });
        load_tile<BK, PT>(Bs, L::kLdX, x + j0 * p.x_stride, p.x_stride, len - j0, P - p0, p.vec,
                          Identity{});
        __syncthreads();
        const int k_len = round16(min(BK, j_end - j0));
        mma.template step<wmma::row_major, wmma::row_major>(As, L::kLdA, Bs, L::kLdX, k_len);
        __syncthreads();
    }
    mma.store(stg, L::kLds);
    __syncthreads();

    const float Dh = p.D ? p.D[h] : 0.0f;
    T* y = static_cast<T*>(p.y) + (start + i0) * H * P + h * P + p0;
    for (int e = threadIdx.x; e < rows * PT; e += kThreads) {
        const int r = e / PT, col = e % PT;
        if (col >= cols) continue;
        const float xv = to_f32(x[(i0 + r) * p.x_stride + col]);
        y[static_cast<int64_t>(r) * H * P + col] = from_f32<T>(stg[r * L::kLds + col] + Dh * xv);
    }
}

template <typename T, int kFrag>
void launch(const Plan& p, cudaStream_t stream) {
    using L = ScanSmem<T, kFrag>;
    const int64_t n_ib = (p.chunk_size + kBM - 1) / kBM;
    const int64_t n_pt = (p.head_dim + L::kPT - 1) / L::kPT;
    const int64_t blocks = n_ib * n_pt * p.n_head * p.n_chunk;
    const size_t smem = L::kBytes + 2 * sizeof(float) * p.chunk_size;
    chunk_scan_kernel<T, kFrag><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(p);
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace

template <typename T>
void launch_chunk_scan(const Plan& p, cudaStream_t stream) {
    if (p.head_dim <= 32) {
        launch<T, 1>(p, stream);
    } else if (p.head_dim <= 64) {
        launch<T, 2>(p, stream);
    } else if (p.head_dim <= 96) {
        launch<T, 3>(p, stream);
    } else {
        launch<T, 4>(p, stream);
    }
}

template void launch_chunk_scan<float>(const Plan&, cudaStream_t);
template void launch_chunk_scan<__half>(const Plan&, cudaStream_t);
template void launch_chunk_scan<__nv_bfloat16>(const Plan&, cudaStream_t);

}  // namespace duality::cuda::ssd
