// The fused SSD's launches as ssd_fused.cu (the host side) calls them: each head_dim's are
// instantiated in a translation unit of its own (ssd_fused_p32.cu ... ssd_fused_p128.cu, from
// ssd_fused_instances.cuh), and the host helpers they use are ssd_fused.cu's.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "ops/cuda/ssd_fused_common.cuh"

namespace duality::cuda::fused {

// ssd_fused.cu: FusedParams::early_s_wait for a launch of `blocks` blocks (one_per_sm: an
// instantiation of one block per SM, not pairs), and whether chunks of chunk_size tokens with
// `smem` bytes of dynamic shared memory may take the two-blocks-per-SM instantiation.
bool early_s_wait_for(int64_t blocks, bool one_per_sm);
bool two_per_sm(int64_t chunk_size, size_t smem);

// Launches the kernel for act T (__half or __nv_bfloat16), head_dim kP and d_state N (64, 128 or
// 256): two blocks per SM where two_per_sm and two_fit_n allow, the gate's instantiation where
// fp.gate_z is set, pairs of heads where pair_smem is (its dynamic shared memory), else smem.
template <typename T, int kP>
void launch_n(const FusedParams& fp, int64_t N, int64_t n_chunk, size_t smem, size_t pair_smem,
              cudaStream_t stream);
// Whether two blocks of the two-per-SM instantiation for (T, kP, N) are resident at once with
// `smem` bytes of dynamic shared memory and take chunks of chunk_size tokens (false for d_state
// 256, which never runs two).
template <typename T, int kP>
bool two_fit_n(int64_t N, size_t smem, int64_t chunk_size);

}  // namespace duality::cuda::fused
