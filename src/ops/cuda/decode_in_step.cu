// The first half of a batch-1 decode layer in one launch (DecodeInStep, ops.h): the whole in_proj
// product of the layer's input row u (z, x, B, C and dt columns, scaled by the deferred RMSNorm
// factor where in_scale is given), the width-4 causal conv + SiLU on the xBC channels, the SSM
// decode step (spec 8.3, f32 state) and the gate's first half: v = y·silu(z), v·w stored, Σ v² per
// 8 channels. In the model it replaces gemv_fused's conv form and ssm_decode's gate form, one
// launch fewer per layer (docs/architecture.md, "Batch-1 in_proj and step in one launch").
//
// Parallelization: blocks of 8 warps, one channel each. The first 2·n_group·d_state / 8 blocks
// (the B/C blocks) compute B's and C's columns, their conv, and store the results (rounded to
// act, in f32) to `bc`; then each adds one to sync[0] (release). The rest (the head blocks, 8 per
// head) compute z, x and dt of 8 channels of one head and x's conv, then wait until sync[0]
// counts every B/C block (acquire; they wait only on blocks of lower index, which were scheduled
// first, as in a decoupled look-back), read their group's B and C, and run the step of their 8
// channels. The last head block to read B and C (sync[1]) sets both words back to zero for the
// next launch. Every block's rows of w_in, and a head block's 8 state rows, come into shared
// memory by bulk copies (cp.async.bulk) issued by one thread before pdl::wait() (early reads:
// weights, and state and conv windows that only this layer's kernels write, core/cuda/pdl.cuh),
// as do the conv's taps, bias and windows. A warp dots its rows with u (a lane takes the 16-byte
// vectors lane, lane + 32, ...; the order of gemv_fused, so each value rounds as it would there)
// and rounds z, x, B, C and dt to act as the kernel chain's buffers would hold them; a head
// block's warp then updates its state row in registers (a lane holds d_state / 32 elements laid
// out as in ssm_decode's vector kernel, so y sums in the same order) and writes it back.
//
// Limits: Hopper (bulk copies; the host launches it where pdl::runs_sm90_code()); bf16 act (as the
// decode gate: v·w is stored unnormalized), f32 state; head_dim 64; d_state 64, 128 or 256;
// d_model a multiple of 256 up to 2048 whose 17 rows fit the block's shared memory; width-4 conv;
// one sequence; every block resident at once (the head blocks spin), which the grid's size
// (n_head · 8 + 2·n_group·d_state / 8 blocks of 256 threads) allows on any Hopper part for the
// supported shapes; calls sharing `sync` must not run concurrently.
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

constexpr int kWarps = 8;              // per block: one channel each
constexpr int kHeadBlocks = 8;         // per head
constexpr int kHeadDim = 64;           // kWarps · kHeadBlocks
constexpr int kMaxVec = 8;             // 16-byte vectors of u per lane: d_model ≤ 8 · 256
constexpr int kConvW = 4;              // conv width
constexpr int kRows = 2 * kWarps + 1;  // a head block's rows of w_in: z, x, dt
static_assert(kWarps * kHeadBlocks == kHeadDim);
static_assert(kDecodeInStepPart == kWarps, "one Σ v² part per head block");

// Bytes of dynamic shared memory: a head block's rows of w_in, then its state rows.
size_t smem_bytes(int64_t d_model, int64_t d_state, size_t el) {
    return static_cast<size_t>(kRows * d_model) * el +
           static_cast<size_t>(kWarps * d_state) * sizeof(float);
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
    constexpr int NPL = N / 32, VEC = NPL < 4 ? NPL : 4, J = NPL / VEC;
    extern __shared__ __align__(128) unsigned char smem_raw[];
    __shared__ __align__(8) uint64_t bar;
    __shared__ float s_b[N], s_c[N];     // the group's B and C after the conv (head blocks)
    __shared__ float s_conv[kWarps][8];  // taps [0, 4), bias [4], window [5, 8)
    __shared__ float s_dt, s_sq[kWarps];

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t H = a.ssm.n_head, G = a.ssm.n_group, E = H * kHeadDim, K = a.d_model;
    const int64_t GN = G * N, cd = a.conv.channels;  // conv_dim = E + 2·G·N
    const int64_t n_bc = 2 * GN / kWarps;            // B/C blocks
    const bool bc_block = blockIdx.x < n_bc;
    const int64_t hb = blockIdx.x - n_bc;  // head blocks: head hb / 8, part hb % 8
    const int64_t h = bc_block ? 0 : hb / kHeadBlocks, g = h / (H / G);
    const T* w_rows = reinterpret_cast<const T*>(smem_raw);
    float* st_s = reinterpret_cast<float*>(smem_raw + kRows * K * sizeof(T));
    const T* w_in = static_cast<const T*>(a.w_in);
    const int64_t slot = *a.conv.batch.slots;  // the host's batch description: an early read
    // The block's first conv channel (of conv_dim): 8 of B's or C's, or 8 of x's (head blocks,
    // whose channels of d_inner are the same p0..p0 + 7).
    const int64_t c0 = bc_block ? E + blockIdx.x * kWarps : hb * kWarps;
    const int64_t p0 = c0;
    float* state_rows = static_cast<float*>(a.ssm.state) + slot * a.ssm.state_slot_stride + p0 * N;
    const auto issue_copies = [&] {
        if (threadIdx.x == 0) {
            const uint32_t row = static_cast<uint32_t>(K * sizeof(T));
            const uint32_t st_bytes = kWarps * N * sizeof(float);
            sync::mbar_init(&bar);
            sync::mbar_init_fence();
            T* dst = const_cast<T*>(w_rows);
            if (bc_block) {
                expect_tx(&bar, kWarps * row);
                bulk_copy(dst, w_in + (E + c0) * K, kWarps * row, &bar);
            } else {
                expect_tx(&bar, kRows * row + st_bytes);
                bulk_copy(dst, w_in + p0 * K, kWarps * row, &bar);                     // z
                bulk_copy(dst + kWarps * K, w_in + (E + p0) * K, kWarps * row, &bar);  // x
                bulk_copy(dst + 2 * kWarps * K, w_in + (2 * E + 2 * GN + h) * K, row,
                          &bar);  // dt
                bulk_copy(st_s, state_rows, st_bytes, &bar);
            }
        }
        // The conv's taps, bias and windows of the block's 8 channels.
        if (threadIdx.x < kWarps * 8) {
            const int i = threadIdx.x / 8, f = threadIdx.x % 8;
            const int64_t c = c0 + i;
            s_conv[i][f] = f < kConvW ? a.conv.weight[c * kConvW + f]
                           : f == kConvW
                               ? (a.conv.bias ? a.conv.bias[c] : 0.0f)
                               : a.conv.state[slot * a.conv.state_slot_stride + (f - 5) * cd + c];
        }
    };
    // The head's scalars and the gate weight of this warp's channel: weights, early reads.
    float A = 0.0f, D = 0.0f, dt_bias = 0.0f, gate_w = 0.0f;
    if (!bc_block) {
        A = a.ssm.A[h];
        D = a.ssm.D ? a.ssm.D[h] : 0.0f;
        dt_bias = a.dt.dt_bias[h];
        gate_w = a.gate_w[p0 + warp];
    }
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

    // Row j of the block's rows of w_in · u, in every lane, rounded to act as a stored product.
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
    // The conv of the warp's channel on its new raw value x, as conv1d computes it; the channel's
    // window shifts (its only reader and writer).
    const auto conv = [&](float x) {
        const float* cv = s_conv[warp];
        float o = cv[kConvW];
#pragma unroll
        for (int j = 0; j < kConvW - 1; ++j) o = fmaf(cv[j], cv[5 + j], o);
        o = fmaf(cv[kConvW - 1], x, o);
        if (lane == 0) {
            float* win = a.conv.state + slot * a.conv.state_slot_stride + c0 + warp;
            win[0] = cv[6];
            win[cd] = cv[7];
            win[2 * cd] = x;
        }
        return dtype::to_f32(dtype::from_f32<T>(silu<T>(o)));
    };

    uint32_t* arrived = a.sync;      // B/C blocks done
    uint32_t* read_bc = a.sync + 1;  // head blocks past their wait
    if (bc_block) {
        const float v = conv(product(warp));
        if (lane == 0) {
            a.bc[c0 - E + warp] = v;
            __threadfence();
        }
        __syncthreads();
        if (threadIdx.x == 0) sync::atom_add_acq_rel(arrived, 1);
        return;
    }

    const float z = product(warp);
    const float x = conv(product(kWarps + warp));
    if (warp == 0) {
        const float dt_raw = product(kRows - 1);
        if (lane == 0) s_dt = dt_raw;
    }
    // B and C of group g, once every B/C block has stored its part.
    if (threadIdx.x == 0)
        while (sync::ld_acquire(arrived) < static_cast<uint32_t>(n_bc)) {
        }
    __syncthreads();
    for (int64_t n = threadIdx.x; n < N; n += kWarps * 32) {
        s_b[n] = __ldcg(a.bc + g * N + n);
        s_c[n] = __ldcg(a.bc + GN + g * N + n);
    }
    __syncthreads();  // s_b, s_c, s_dt
    if (threadIdx.x == 0 &&
        sync::atom_add_acq_rel(read_bc, 1) == static_cast<uint32_t>(H * kHeadBlocks - 1)) {
        // The last head block: every B/C block has arrived and every head block has read B and C.
        *arrived = 0;
        *read_bc = 0;
    }

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
        const float v = (dot + D * x) * silu<T>(z);
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
    const size_t smem = smem_bytes(a.d_model, N, sizeof(T));
    static size_t configured = 48 << 10;  // per instantiation: the dynamic limit set so far
    if (smem > configured) {
        DUALITY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(smem)));
        configured = smem;
    }
    const int64_t blocks = 2 * a.ssm.n_group * N / kWarps + a.ssm.n_head * kHeadBlocks;
    pdl::launch(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kWarps * 32), smem, stream, a,
                pdl::early_reads());
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
        !s.state || !a.dt.dt_bias || !a.gate_w || !a.v || !a.ssq || !a.bc || !a.sync ||
        !aligned(a.u) || !aligned(a.w_in) || !aligned(s.state) || s.state_slot_stride % 4 != 0)
        return false;
    int device = 0, optin = 0, sms = 0, per_sm = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&device));
    DUALITY_CUDA_CHECK(
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    const size_t smem = smem_bytes(a.d_model, s.d_state, dtype_size(act));
    // (static shared memory: B, C, the conv's inputs and a few words, under 3 KB)
    if (smem + (3 << 10) > static_cast<size_t>(optin)) return false;
    // Every block resident at once: the head blocks spin on the B/C blocks.
    const auto occupancy = [&](auto kernel) {
        DUALITY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(smem)));
        DUALITY_CUDA_CHECK(
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarps * 32, smem));
    };
    switch (s.d_state) {
        case 64:
            occupancy(decode_in_step_kernel<__nv_bfloat16, 64>);
            break;
        case 128:
            occupancy(decode_in_step_kernel<__nv_bfloat16, 128>);
            break;
        default:
            occupancy(decode_in_step_kernel<__nv_bfloat16, 256>);
    }
    const int64_t blocks = 2 * s.n_group * s.d_state / kWarps + s.n_head * kHeadBlocks;
    return blocks <= static_cast<int64_t>(per_sm) * sms;
}

void decode_in_step(const DecodeInStep& a, DType act, cudaStream_t stream) {
    if (!decode_in_step_supported(a, act))
        fail("decode_in_step: unsupported shape or operands", "a", __FILE__, __LINE__);
    switch (a.ssm.d_state) {
        case 64:
            launch<__nv_bfloat16, 64>(a, stream);
            break;
        case 128:
            launch<__nv_bfloat16, 128>(a, stream);
            break;
        default:
            launch<__nv_bfloat16, 256>(a, stream);
    }
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda
