// The first half of a batch-1 decode layer in one launch (DecodeInStep, ops.h): the whole in_proj
// product of the layer's input row u (z, x, B, C and dt columns, scaled by the deferred RMSNorm
// factor where in_scale is given), the width-4 causal conv + SiLU on the xBC channels, the SSM
// decode step (spec 8.3, f32 state) and the gate's first half: v = y·silu(z), v·w stored, Σ v² per
// 8 channels. In the model it replaces gemv_fused's conv form and ssm_decode's gate form, one
// launch (and its latency) fewer per layer (docs/architecture.md, "Batch-1 in_proj and step in
// one launch").
//
// Parallelization: one thread block cluster of 8 blocks per head h (grid n_head · 8 blocks of 8
// warps); block r of the cluster owns the head's channels p = 8r..8r+7, one warp each. The step
// of a head needs B and C of its group whole, so every cluster computes them again: block r
// computes d_state / 8 of B's columns and as many of C's, and pushes their conv outputs into
// every block of the cluster (distributed shared memory) before one cluster barrier. A block's
// rows of w_in (z and x of its 8 channels, its B and C columns and the head's dt: 17 + d_state / 4
// rows of d_model) and its 8 rows of the head's state come into shared memory by bulk copies
// (cp.async.bulk) issued by one thread before pdl::wait() (early reads: weights, and state and
// conv windows that only this layer's kernels write, core/cuda/pdl.cuh), as do the conv's taps,
// bias and windows. Each warp then dots its rows with u (a lane takes the 16-byte vectors lane,
// lane + 32, ...; the same order as gemv_fused, so each value rounds as it would there), rounds
// z, x, B, C and dt to act as the kernel chain's buffers would hold them, runs the conv, and after
// the barrier updates its state row in registers (a lane holds d_state / 32 elements, laid out
// as in ssm_decode's vector kernel, so y sums in the same order) and writes it back.
//
// The conv windows of x's channels are shifted here (each has one owner). B's and C's are read
// by every cluster of their group, so none may shift them during the launch: the group's first
// head stores their new raw values in bc_raw, and the kernel after this one (out_proj, gemv_fused
// with GemvFused::commit_x) shifts them in.
//
// Limits: Hopper (clusters, bulk copies; the host launches it where pdl::runs_sm90_code());
// bf16 act (as the decode gate: v·w is stored unnormalized), f32 state; head_dim 64; d_state 64,
// 128 or 256; d_model a multiple of 256 up to 2048 and (17 + d_state / 4) rows of it within the
// block's shared memory; width-4 conv; one sequence.
#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "core/cuda/sync.cuh"
#include "ops/cuda/activation.cuh"
#include "ops/cuda/dt_softplus.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/gemv_common.cuh"
#include "ops/cuda/ops.h"
#include "ops/cuda/reduce.cuh"

namespace duality::cuda {
namespace {

constexpr int kWarps = 8;     // per block: one channel of the head each
constexpr int kCluster = 8;   // blocks per head
constexpr int kHeadDim = 64;  // kWarps · kCluster
constexpr int kMaxVec = 8;    // 16-byte vectors of u per lane: d_model ≤ 8 · 256
constexpr int kConvW = 4;     // conv width
static_assert(kWarps * kCluster == kHeadDim);
static_assert(kDecodeInStepPart == kWarps, "one Σ v² part per block");

// A block's share of the head for d_state N.
template <int N>
struct Share {
    static constexpr int kBC = N / kCluster;                // B columns (and C columns) per block
    static constexpr int kBCWarp = kBC / kWarps;            // per warp
    static constexpr int kRows = 2 * kWarps + 2 * kBC + 1;  // rows of w_in: z, x, B, C, dt
    static constexpr int kChannels = kWarps + 2 * kBC;      // conv channels: x, B, C
    static_assert(kBCWarp >= 1);
};

// Bytes of dynamic shared memory: the block's rows of w_in, then its state rows.
template <int N>
size_t smem_bytes(int64_t d_model, size_t el) {
    return static_cast<size_t>(Share<N>::kRows * d_model) * el +
           static_cast<size_t>(kWarps * N) * sizeof(float);
}

__device__ __forceinline__ void expect_tx(uint64_t* bar, uint32_t bytes) {
    asm volatile(
        "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sync::smem_addr(bar)),
        "r"(bytes)
        : "memory");
}
// A bulk copy that completes bytes on bar, without an arrival (expect_tx covers them all).
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes,
                                          uint64_t* bar) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
            "r"(sync::smem_addr(dst)),
        "l"(src), "r"(bytes), "r"(sync::smem_addr(bar))
        : "memory");
}

template <typename T, int N>
__global__ void __launch_bounds__(kWarps * 32) decode_in_step_kernel(DecodeInStep a, bool early) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ < 900
    pdl::wait();
    __trap();  // Hopper only (decode_in_step_supported)
#else
    using S = Share<N>;
    constexpr int NPL = N / 32, VEC = NPL < 4 ? NPL : 4, J = NPL / VEC;
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    extern __shared__ __align__(128) unsigned char smem_raw[];
    __shared__ __align__(8) uint64_t bar;
    __shared__ float s_b[N], s_c[N];           // the group's B and C after the conv
    __shared__ float s_conv[S::kChannels][8];  // taps [0, 4), bias [4], window [5, 8)
    __shared__ float s_dt, s_sq[kWarps];

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int r = static_cast<int>(cluster.block_rank());
    const int64_t H = a.ssm.n_head, G = a.ssm.n_group, E = H * kHeadDim, K = a.d_model;
    const int64_t h = blockIdx.x / kCluster, g = h / (H / G);
    const int64_t cd = a.conv.channels;  // conv_dim = E + 2·G·N
    const T* w_rows = reinterpret_cast<const T*>(smem_raw);
    float* st_s = reinterpret_cast<float*>(smem_raw + S::kRows * K * sizeof(T));
    const T* w_in = static_cast<const T*>(a.w_in);
    const int64_t slot = *a.conv.batch.slots;      // the host's batch description: an early read
    const int64_t p0 = h * kHeadDim + r * kWarps;  // the block's first channel of d_inner
    const int64_t b0 = g * N + r * S::kBC;         // its first B column within B's
    float* state_rows = static_cast<float*>(a.ssm.state) + slot * a.ssm.state_slot_stride + p0 * N;
    // The conv channel (of conv_dim) of the block's conv channel i: x's, then B's, then C's.
    const auto channel = [&](int i) -> int64_t {
        return i < kWarps            ? p0 + i
               : i < kWarps + S::kBC ? E + b0 + (i - kWarps)
                                     : E + G * N + b0 + (i - kWarps - S::kBC);
    };
    const auto issue_copies = [&] {
        if (threadIdx.x == 0) {
            const auto rows = [](int n) { return n * static_cast<uint32_t>(sizeof(T)); };
            const uint32_t row = rows(static_cast<int>(K));
            const uint32_t st_bytes = kWarps * N * sizeof(float);
            sync::mbar_init(&bar);
            sync::mbar_init_fence();
            expect_tx(&bar, S::kRows * row + st_bytes);
            T* dst = const_cast<T*>(w_rows);
            bulk_copy(dst, w_in + p0 * K, kWarps * row, &bar);                             // z
            bulk_copy(dst + kWarps * K, w_in + (E + p0) * K, kWarps * row, &bar);          // x
            bulk_copy(dst + 2 * kWarps * K, w_in + (2 * E + b0) * K, S::kBC * row, &bar);  // B
            bulk_copy(dst + (2 * kWarps + S::kBC) * K, w_in + (2 * E + G * N + b0) * K,
                      S::kBC * row, &bar);  // C
            bulk_copy(dst + (S::kRows - 1) * K, w_in + (2 * E + 2 * G * N + h) * K, row,
                      &bar);  // dt
            bulk_copy(st_s, state_rows, st_bytes, &bar);
        }
        // The conv's taps, bias and windows of the block's channels.
        for (int t = threadIdx.x; t < S::kChannels * 8; t += kWarps * 32) {
            const int i = t / 8, f = t % 8;
            const int64_t c = channel(i);
            s_conv[i][f] = f < kConvW ? a.conv.weight[c * kConvW + f]
                           : f == kConvW
                               ? (a.conv.bias ? a.conv.bias[c] : 0.0f)
                               : a.conv.state[slot * a.conv.state_slot_stride + (f - 5) * cd + c];
        }
    };
    // Weights, the head's scalars and the gate weight of this warp's channel: early reads.
    const float A = a.ssm.A[h], D = a.ssm.D ? a.ssm.D[h] : 0.0f, dt_bias = a.dt.dt_bias[h];
    const float gate_w = a.gate_w[p0 + warp];
    if (early) issue_copies();
    pdl::wait();  // before any other global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    if (!early) issue_copies();

    // u, and the deferred RMSNorm factor (summed as gemv_fused sums it).
    const int n_vec = static_cast<int>(K / 256);
    uint4 uq[kMaxVec];
#pragma unroll
    for (int i = 0; i < kMaxVec; ++i)
        if (i < n_vec) uq[i] = gemv::ldg16(static_cast<const T*>(a.u) + lane * 8 + i * 256);
    float scale = 1.0f;
    const bool scaled = a.in_scale.ssq != nullptr;
    if (scaled) {
        float sum = 0.0f;
        for (int64_t q = lane; q < a.in_scale.n_part; q += 32) sum += a.in_scale.ssq[q];
#pragma unroll
        for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
        scale = rsqrtf(sum / a.in_scale.count + a.in_scale.eps);
    }
    __syncthreads();  // s_conv, and the mbarrier's init before anyone waits on it
    sync::mbar_wait(&bar, 0);

    // row j of the block's rows of w_in · u, in every lane, rounded to act as a stored product.
    const auto product = [&](int j) {
        const T* wr = w_rows + j * K + lane * 8;
        float acc = 0.0f;
#pragma unroll
        for (int i = 0; i < kMaxVec; ++i) {
            if (i < n_vec) {
                gemv::Vec<T> wv, av;
                wv.set(*reinterpret_cast<const uint4*>(wr + i * 256));
                av.set(uq[i]);
                gemv::dot_add(acc, wv, av);
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (scaled) acc *= scale;
        return dtype::to_f32(dtype::from_f32<T>(acc));
    };
    // The conv of the block's channel i on its new raw value x, as conv1d computes it.
    const auto conv = [&](int i, float x) {
        const float* cv = s_conv[i];
        float o = cv[kConvW];
#pragma unroll
        for (int j = 0; j < kConvW - 1; ++j) o = fmaf(cv[j], cv[5 + j], o);
        o = fmaf(cv[kConvW - 1], x, o);
        return dtype::to_f32(dtype::from_f32<T>(silu<T>(o)));
    };
    // Raw values of B's and C's channels: the window commit's input, stored by the group's first
    // head only.
    const bool commits = h % (H / G) == 0;
    const float z = product(warp);
    const float x_raw = product(kWarps + warp);
    const float x = conv(warp, x_raw);
#pragma unroll
    for (int j = 0; j < S::kBCWarp; ++j) {
        const int ib = warp * S::kBCWarp + j;  // of the block's B columns
        const float b_raw = product(2 * kWarps + ib);
        const float c_raw = product(2 * kWarps + S::kBC + ib);
        const float b = conv(kWarps + ib, b_raw), c = conv(kWarps + S::kBC + ib, c_raw);
        if (lane < kCluster) {  // lane q pushes into block q of the cluster
            *cluster.map_shared_rank(&s_b[r * S::kBC + ib], lane) = b;
            *cluster.map_shared_rank(&s_c[r * S::kBC + ib], lane) = c;
        }
        if (commits && lane == 0) {
            a.bc_raw[b0 + ib] = b_raw;
            a.bc_raw[G * N + b0 + ib] = c_raw;
        }
    }
    if (warp == 0) {
        const float dt_raw = product(S::kRows - 1);
        if (lane == 0) s_dt = dt_raw;
    }
    if (lane == 0) {  // x's window: this warp's channel is its only reader and writer
        float* win = a.conv.state + slot * a.conv.state_slot_stride + p0 + warp;
        win[0] = s_conv[warp][6];
        win[cd] = s_conv[warp][7];
        win[2 * cd] = x_raw;
    }
    cluster.sync();  // every block's B and C (and s_dt) in place

    // The step of channel p0 + warp: its state row, as ssm_decode's vector kernel lays it out.
    const float dt = dt_clamped_softplus(s_dt + dt_bias, a.dt.dt_min, a.dt.dt_max);
    const float dA = expf(A * dt), dtx = dt * x;
    const float* row = st_s + warp * N;
    float* out_row = state_rows + warp * N;
    float dot = 0.0f;
#pragma unroll
    for (int j = 0; j < J; ++j) {
        const int n = j * 32 * VEC + lane * VEC;
        float sv[VEC];
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
            sv[v] = row[n + v] * dA + dtx * s_b[n + v];
            dot += sv[v] * s_c[n + v];
        }
        dtype::store<VEC, dtype::Cache::kStream>(out_row + n, sv);
    }
    dot = reduce::warp_sum(dot);
    if (lane == 0) {
        float v = (dot + D * x) * silu<T>(z);
        s_sq[warp] = v * v;
        static_cast<T*>(a.v)[p0 + warp] = dtype::from_f32<T>(v * gate_w);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float ss = 0.0f;
#pragma unroll
        for (int i = 0; i < kWarps; ++i) ss += s_sq[i];
        a.ssq[p0 / kWarps] = ss;
    }
#endif
}

template <typename T, int N>
void launch(const DecodeInStep& a, cudaStream_t stream) {
    auto kernel = decode_in_step_kernel<T, N>;
    const size_t smem = smem_bytes<N>(a.d_model, sizeof(T));
    static size_t configured = 48 << 10;  // per instantiation: the dynamic limit set so far
    if (smem > configured) {
        DUALITY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(smem)));
        configured = smem;
    }
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(a.ssm.n_head * kCluster));
    cfg.blockDim = dim3(kWarps * 32);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = kCluster;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl::enabled() ? 2 : 1;
    DUALITY_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, a, pdl::early_reads()));
}

template <typename T>
void dispatch_n(const DecodeInStep& a, cudaStream_t stream) {
    switch (a.ssm.d_state) {
        case 64:
            return launch<T, 64>(a, stream);
        case 128:
            return launch<T, 128>(a, stream);
        default:
            return launch<T, 256>(a, stream);
    }
}

size_t smem_for(int64_t d_state, int64_t d_model, size_t el) {
    switch (d_state) {
        case 64:
            return smem_bytes<64>(d_model, el);
        case 128:
            return smem_bytes<128>(d_model, el);
        default:
            return smem_bytes<256>(d_model, el);
    }
}

}  // namespace

bool decode_in_step_supported(const DecodeInStep& a, DType act) {
    const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    const SsdArgs& s = a.ssm;
    if (!pdl::runs_sm90_code() || act != DType::kBF16 || s.state_dtype != DType::kF32 ||
        s.head_dim != kHeadDim || (s.d_state != 64 && s.d_state != 128 && s.d_state != 256) ||
        s.n_group < 1 || s.n_head % s.n_group != 0 || a.d_model <= 0 || a.d_model % 256 != 0 ||
        a.d_model > 256 * kMaxVec || a.conv.width != kConvW ||
        a.conv.channels != s.n_head * s.head_dim + 2 * s.n_group * s.d_state)
        return false;
    if (!a.u || !a.w_in || !a.conv.weight || !a.conv.state || !a.conv.batch.slots || !s.A ||
        !s.state || !a.dt.dt_bias || !a.gate_w || !a.v || !a.ssq || !a.bc_raw || !aligned(a.u) ||
        !aligned(a.w_in) || !aligned(s.state) || s.state_slot_stride % 4 != 0)
        return false;
    int device = 0, optin = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&device));
    DUALITY_CUDA_CHECK(
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    // (static shared memory: B, C, the conv's inputs and a few words, under 6 KB)
    return smem_for(s.d_state, a.d_model, dtype_size(act)) + (6 << 10) <=
           static_cast<size_t>(optin);
}

void decode_in_step(const DecodeInStep& a, DType act, cudaStream_t stream) {
    if (!decode_in_step_supported(a, act))
        fail("decode_in_step: unsupported shape or operands", "a", __FILE__, __LINE__);
    dispatch_n<__nv_bfloat16>(a, stream);
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda
