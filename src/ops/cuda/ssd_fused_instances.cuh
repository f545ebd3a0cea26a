// The fused SSD's launches (ssd_fused_launch.cuh declares what the host side calls), defined
// for the translation units that instantiate them, one per head_dim (ssd_fused_p32.cu ...
// ssd_fused_p128.cu: DUALITY_SSD_FUSED_INSTANTIATE), so that the 46 kernel instantiations do not
// compile in one file (the longest pole of a GPU build).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#include "core/cuda/check.h"
#include "core/cuda/smem_limit.h"
#include "ops/cuda/ssd_fused_kernel.cuh"
#include "ops/cuda/ssd_fused_launch.cuh"

namespace duality::cuda::fused {

template <typename T, int kP, int kN, int kMinBlocks, bool kGate, bool kPair = false>
void launch_kernel(const FusedParams& fp, int64_t n_chunk, size_t smem, cudaStream_t stream) {
    auto* kernel = ssd_fused_kernel<T, kP, kN, kMinBlocks, kGate, kPair>;
    ensure_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
    // The S and head blocks (the kernel's item order), G S blocks ahead.
    const int64_t blocks = (n_chunk + 1) * fp.n_group + n_chunk * fp.n_head / (kPair ? 2 : 1);
    FusedParams q = fp;
    // (Pairs: never by default; forced on it measured slower at every length, v15.)
    q.early_s_wait = early_s_wait_for(blocks, kMinBlocks == 1 && !kPair);
    kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(q);
    DUALITY_CUDA_LAUNCH_CHECK();
}

// The gate epilogue's instantiation where asked (fp.gate_z; head_dim 64, d_state 128 only), the
// pairs' where pair_smem is set (pair_smem_bytes: only for head_dim 64, d_state 128 and chunks over
// 128 tokens, so only ever seen here with one block per SM).
template <typename T, int kP, int kN, int kMinBlocks>
void launch_blocks(const FusedParams& fp, int64_t n_chunk, size_t smem, size_t pair_smem,
                   cudaStream_t stream) {
    if constexpr (kP == 64 && kN == 128) {
        if (fp.gate_z) {
            launch_kernel<T, kP, kN, kMinBlocks, true>(fp, n_chunk, smem, stream);
            return;
        }
        if constexpr (kMinBlocks == 1) {
            if (pair_smem) {
                launch_kernel<T, kP, kN, 1, false, true>(fp, n_chunk, pair_smem, stream);
                return;
            }
        }
    }
    launch_kernel<T, kP, kN, kMinBlocks, false>(fp, n_chunk, smem, stream);
}

// Whether two blocks of the two-per-SM instantiation are resident at once with `smem` bytes of
// dynamic shared memory (registers and the shared-memory carve-out as the device has them), and
// for head_dim 64 with d_state 128, whose output phase on sm_90a takes 64-row tiles (outputs_wg),
// whether chunks of chunk_size tokens fill whole tiles (qa a multiple of 64: chunk 64 or 128,
// as the models take; other chunks take one block per SM).
template <typename T, int kP, int kN>
bool two_fit(size_t smem, int64_t chunk_size) {
    if constexpr (kP == 64 && kN == 128) {
        if ((chunk_size + 31) / 32 % 2 != 0) return false;
    }
    auto* kernel = ssd_fused_kernel<T, kP, kN, 2, false, false>;  // (the gate's: the same)
    return resident_blocks(reinterpret_cast<const void*>(kernel), kThreads, smem) >= 2;
}

template <typename T, int kP, int kN>
void launch(const FusedParams& fp, int64_t n_chunk, size_t smem, size_t pair_smem,
            cudaStream_t stream) {
    if constexpr (kN == 256) {  // one block per SM: two never fit (over 100 KB at chunk 64)
        launch_blocks<T, kP, kN, 1>(fp, n_chunk, smem, pair_smem, stream);
    } else if (two_per_sm(fp.chunk_size, smem) && two_fit<T, kP, kN>(smem, fp.chunk_size)) {
        launch_blocks<T, kP, kN, 2>(fp, n_chunk, smem, pair_smem, stream);
    } else {
        launch_blocks<T, kP, kN, 1>(fp, n_chunk, smem, pair_smem, stream);
    }
}

template <typename T, int kP>
void launch_n(const FusedParams& fp, int64_t N, int64_t n_chunk, size_t smem, size_t pair_smem,
              cudaStream_t s) {
    if (N == 64) {
        launch<T, kP, 64>(fp, n_chunk, smem, pair_smem, s);
    } else if (N == 128) {
        launch<T, kP, 128>(fp, n_chunk, smem, pair_smem, s);
    } else {
        launch<T, kP, 256>(fp, n_chunk, smem, pair_smem, s);
    }
}

template <typename T, int kP>
bool two_fit_n(int64_t N, size_t smem, int64_t chunk_size) {
    if (N == 64) return two_fit<T, kP, 64>(smem, chunk_size);
    if (N == 128) return two_fit<T, kP, 128>(smem, chunk_size);
    return false;
}

}  // namespace duality::cuda::fused

// The launches of head_dim P for both 16-bit activation types (at namespace scope).
#define DUALITY_SSD_FUSED_INSTANTIATE(P)                                                           \
    namespace duality::cuda::fused {                                                               \
    template void launch_n<__half, P>(const FusedParams&, int64_t, int64_t, size_t, size_t,        \
                                      cudaStream_t);                                               \
    template void launch_n<__nv_bfloat16, P>(const FusedParams&, int64_t, int64_t, size_t, size_t, \
                                             cudaStream_t);                                        \
    template bool two_fit_n<__half, P>(int64_t, size_t, int64_t);                                  \
    template bool two_fit_n<__nv_bfloat16, P>(int64_t, size_t, int64_t);                           \
    }
