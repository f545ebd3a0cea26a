// The batch-1 product y_col = s · (a · w_colᵀ) of gemv_fused (gemm_small_m.h) in its streaming
// form (GemvFused::stream, Hopper): one persistent block per SM streams its share of w's rows
// through a ring of shared-memory slots, so that HBM never waits for a block to end and the next
// to start. Written for the large batch-1 products whose warp-per-column form (gemm_small_m.cu)
// reads w at 2.0-2.7 TB/s on an H200: the 2.7b's in_proj (54 MB, 10,576 columns, two waves of
// that form's blocks) and its LM head (docs/architecture.md, "Batch-1 GEMV epilogues").
//
// Parallelization: grid = the SM count, one block each; block b owns the contiguous columns [n·b/G,
// n·(b+1)/G), so every SM streams the same bytes within one row. Warp 16 is the producer: its lane
// 0 issues one bulk copy (cp.async.bulk on the slot's "full" mbarrier) per row into slot j mod
// n_slot, the first n_slot of them before pdl::wait() (weights: early reads, core/cuda/pdl.cuh),
// the rest as the consumers free slots
// ("empty" mbarriers, one arrival each). Consumer warp c (of 16) takes the block's rows c, c + 16,
// ...; n_slot is a multiple of 16 (at least 32: two rows in flight per warp), so a slot always
// belongs to the same warp and its fills come in order (no parity ambiguity). A row's dot: lane l
// over the 8-element vectors l, l + 32, ... of the row (from the slot) and of a (staged once in
// shared memory), then a shuffle tree: the order of gemm_small_m.cu, so both forms return the same
// bits (gemv_common.cuh).
//
// Epilogues: kStore (act or f32), kConv and kResidual, with or without the input scale (the same
// sum of the parts as the warp-per-column form). kResidual's partial sums cover 8 columns, which
// may span two blocks' ranges: each column stores its r² (col_ssq), fences and counts itself in
// its group's counter; the group's last column sums the group's r² in column order (the register
// form's order, so the same bits), stores the part and zeroes the counter for the next launch.
//
// Limits: Hopper (bulk copies, mbarriers); f16/bf16; k a multiple of 8 with at least 32 slots and
// a in the ring's shared memory (rows of at most about 6 KiB at the default 200 KiB); a and w
// 16-byte aligned (gemv_fused_supports).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "core/cuda/pdl.cuh"
#include "core/cuda/sync.cuh"
#include "core/env.h"
#include "ops/cuda/gemm_small_m.h"
#include "ops/cuda/gemv_common.cuh"

namespace duality::cuda {
namespace {

constexpr int kConsumerWarps = 16;
constexpr int kThreads = (kConsumerWarps + 1) * 32;  // + the producer warp
constexpr int kMaxSlots = 64;
// The shared memory a block takes for its ring, a and the barriers: 200 KiB by default
// (DUALITY_GEMV_STREAM_KB, 24-200, for measuring; 100 KiB, which let two streaming products
// share an SM, was slower: H200, 2.7b batch-1 step 3.25 against 2.83 ms with 8 consumer warps).
int64_t ring_bytes() {
    static const int64_t bytes =
        std::clamp<int64_t>(env_int("DUALITY_GEMV_STREAM_KB", 200), 24, 200) << 10;
    return bytes;
}

// Ring slots for rows of `row_bytes`: as many as fit ring_bytes() beside a (itself one row), a
// multiple of the consumer warps, at most kMaxSlots; 0 if fewer than two per consumer fit.
int slots_for(int64_t row_bytes) {
    if (row_bytes <= 0) return 0;
    const int64_t fit = (ring_bytes() - row_bytes - kMaxSlots * 16) / row_bytes;
    const int64_t n = std::min<int64_t>(kMaxSlots, fit) / kConsumerWarps * kConsumerWarps;
    return n >= 2 * kConsumerWarps ? static_cast<int>(n) : 0;
}
size_t smem_bytes(int n_slot, int64_t row_bytes) {
    return static_cast<size_t>(n_slot + 1) * static_cast<size_t>(row_bytes) + 2 * kMaxSlots * 8;
}

template <typename T, int kEpi, bool kScale>
__global__ void __launch_bounds__(kThreads, 1)
    gemv_stream_kernel(const T* __restrict__ a, const T* __restrict__ w, int64_t n, int64_t k,
                       int n_slot, bool early, GemvFused f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(128) unsigned char smem[];
    const int64_t row_bytes = k * static_cast<int64_t>(sizeof(T));
    T* ring = reinterpret_cast<T*>(smem);                                       // {n_slot, k}
    T* sa = reinterpret_cast<T*>(smem + n_slot * row_bytes);                    // {k}: a
    auto* full = reinterpret_cast<uint64_t*>(smem + (n_slot + 1) * row_bytes);  // {n_slot}
    uint64_t* empty = full + kMaxSlots;                                         // {n_slot}
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t G = gridDim.x;
    const int64_t c0 = n * blockIdx.x / G, rows = n * (blockIdx.x + 1) / G - c0;
    if (threadIdx.x == 0) {
        for (int i = 0; i < n_slot; ++i) sync::mbar_init(full + i), sync::mbar_init(empty + i);
        sync::mbar_init_fence();
    }
    __syncthreads();

    if (warp == kConsumerWarps) {  // the producer
        const auto fill = [&](int64_t j) {
            const int s = static_cast<int>(j % n_slot);
            if (j >= n_slot) sync::mbar_wait(empty + s, static_cast<uint32_t>(j / n_slot - 1) & 1);
            sync::bulk_load(ring + s * k, w + (c0 + j) * k, static_cast<uint32_t>(row_bytes),
                            full + s);
        };
        const int64_t first = std::min<int64_t>(rows, n_slot);
        if (lane == 0 && early)
            for (int64_t j = 0; j < first; ++j) fill(j);
        pdl::wait();
        pdl::allow_next();
        if (lane == 0)
            for (int64_t j = early ? first : 0; j < rows; ++j) fill(j);
        return;
    }

    pdl::wait();  // a (and the parts, the conv's state) come from the kernels in front
    pdl::allow_next();
    constexpr int V = gemv::Vec<T>::kN;
    for (int64_t e = static_cast<int64_t>(threadIdx.x) * V; e < k; e += kConsumerWarps * 32 * V)
        *reinterpret_cast<uint4*>(sa + e) = gemv::ldg16(a + e);
    float scale = 1.0f;
    if constexpr (kScale) {  // as the warp-per-column form sums them
        float sum = 0.0f;
        for (int64_t q = lane; q < f.in_scale.n_part; q += 32) sum += __ldg(f.in_scale.ssq + q);
#pragma unroll
        for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
        scale = rsqrtf(sum / f.in_scale.count + f.in_scale.eps);
    }
    constexpr bool kResidual = kEpi == GemvFused::kResidual;
    const Conv1dArgs& cf = f.conv;
    const int64_t slot = kEpi == GemvFused::kConv ? *cf.batch.slots : 0;
    asm volatile("bar.sync 1, %0;" ::"n"(kConsumerWarps * 32));  // every consumer's part of a

    for (int64_t j = warp; j < rows; j += kConsumerWarps) {
        const int64_t col = c0 + j;
        const int64_t c = col - f.conv_begin;
        const bool conv = kEpi == GemvFused::kConv && c >= 0 && c < cf.channels;
        float cv[8];
        if (conv && lane == 0) {  // taps, bias, window: in flight during the wait below
#pragma unroll
            for (int t = 0; t < 4; ++t) cv[t] = __ldg(cf.weight + c * 4 + t);
            cv[4] = cf.bias ? __ldg(cf.bias + c) : 0.0f;
            const float* state = cf.state + slot * cf.state_slot_stride + c;
#pragma unroll
            for (int t = 0; t < 3; ++t) cv[5 + t] = state[t * cf.channels];
        }
        float res = 0.0f;
        if (kResidual && lane == 0) res = f.residual[col];
        const int s = static_cast<int>(j % n_slot);
        sync::mbar_wait(full + s, static_cast<uint32_t>(j / n_slot) & 1);
        const T* row = ring + s * k;
        float acc = 0.0f;
#pragma unroll 4
        for (int64_t e = static_cast<int64_t>(lane) * V; e < k; e += 32 * V) {
            gemv::Vec<T> wv, av;
            wv.set(*reinterpret_cast<const uint4*>(row + e));
            av.set(*reinterpret_cast<const uint4*>(sa + e));
            gemv::dot_add(acc, wv, av);
        }
        __syncwarp();  // every lane is done with the slot
        if (lane == 0) sync::mbar_arrive(empty + s);
#pragma unroll
        for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (lane != 0) continue;
        // (An explicit product, never fused into the residual's add, as in gemm_small_m.cu.)
        const float v = kScale ? __fmul_rn(acc, scale) : acc;
        if constexpr (kResidual) {
            const float r = res + v;
            f.residual[col] = r;
            static_cast<T*>(f.u)[col] = gemv::from_f32<T>(r * __ldg(f.w_next + col));
            f.col_ssq[col] = r * r;
            __threadfence();
            const int64_t g = col / 8, g_cols = n - g * 8 < 8 ? n - g * 8 : 8;
            if (atomicAdd(f.group_count + g, 1u) == static_cast<unsigned>(g_cols - 1)) {
                __threadfence();
                float sum = 0.0f;
                for (int64_t i = 0; i < g_cols; ++i) sum += __ldcg(f.col_ssq + g * 8 + i);
                f.out_parts[g] = sum;
                f.group_count[g] = 0;
            }
        } else if (conv)
            gemv::conv_epilogue<T>(cv, v, cf, slot, c);
        else if (f.y_f32)
            static_cast<float*>(f.y)[col] = v;
        else
            static_cast<T*>(f.y)[col] = gemv::from_f32<T>(v);
    }
#else
    (void)a, (void)w, (void)n, (void)k, (void)n_slot, (void)early, (void)f;
    __trap();  // launched on Hopper only (gemv_fused_stream_supported)
#endif
}

template <typename T, int kEpi, bool kScale>
void launch(const void* a, const void* w, int64_t n, int64_t k, const GemvFused& f,
            cudaStream_t stream) {
    constexpr auto kernel = gemv_stream_kernel<T, kEpi, kScale>;
    const int64_t row_bytes = k * static_cast<int64_t>(sizeof(T));
    const int n_slot = slots_for(row_bytes);
    const size_t smem = smem_bytes(n_slot, row_bytes);
    // Every launch (on whichever device is current; a host call, not a stream operation).
    DUALITY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem)));
    int device = 0, sms = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&device));
    DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    const auto grid = static_cast<unsigned>(std::min<int64_t>(sms, n));
    pdl::launch(kernel, dim3(grid), dim3(kThreads), smem, stream, static_cast<const T*>(a),
                static_cast<const T*>(w), n, k, n_slot, pdl::early_reads(), f);
}

template <typename T>
void dispatch(const void* a, const void* w, int64_t n, int64_t k, const GemvFused& f,
              cudaStream_t stream) {
    const bool scaled = f.in_scale.ssq != nullptr;
    if (f.epilogue == GemvFused::kConv)
        return scaled ? launch<T, GemvFused::kConv, true>(a, w, n, k, f, stream)
                      : launch<T, GemvFused::kConv, false>(a, w, n, k, f, stream);
    if (f.epilogue == GemvFused::kResidual)
        return scaled ? launch<T, GemvFused::kResidual, true>(a, w, n, k, f, stream)
                      : launch<T, GemvFused::kResidual, false>(a, w, n, k, f, stream);
    return launch<T, GemvFused::kStore, true>(a, w, n, k, f, stream);  // kStore is always scaled
}

}  // namespace

bool gemv_fused_stream_supported(int64_t k, DType act) {
    return pdl::enabled() && slots_for(k * static_cast<int64_t>(dtype_size(act))) > 0;
}

void gemv_stream(const void* a, const void* w, int64_t n, int64_t k, DType act, const GemvFused& f,
                 cudaStream_t stream) {
    if (!gemv_fused_stream_supported(k, act))
        fail("gemv_stream: rows unsupported here", "k", __FILE__, __LINE__);
    if (act == DType::kBF16)
        dispatch<__nv_bfloat16>(a, w, n, k, f, stream);
    else
        dispatch<__half>(a, w, n, k, f, stream);
}

}  // namespace duality::cuda
