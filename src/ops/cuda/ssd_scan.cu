// SSD prefill as a sequential scan (spec 6.1; CPU twin: cpu::ssd_sequential): for each token of
// each sequence, S = exp(A·Δ)·S + Δ·x ⊗ B, y = S·C + D·x. Exact up to f32 rounding and
// independent of the chunk size, so it is the GPU oracle for the chunked kernels and the path
// for shapes they do not cover.
// Parallelization: one block of 4 warps per (sequence, head). The state of the head stays in
// registers for the whole sequence (a warp owns head_dim/4 rows; lanes hold d_state/32 columns
// of each), so only x, B, C, Δ are read per token and y written; the final state is written to
// the sequence's slot once. Work per block is sequential in the tokens: fine for decode-sized
// and short inputs, slow for long prompts (use ssd_chunked there).
// Limits: d_state ≤ 256, head_dim ≤ 128.
// Files: ssd_scan_kernel.cuh (the kernel and its launches), instantiated per activation dtype by
// ssd_scan_f32.cu, ssd_scan_f16.cu and ssd_scan_bf16.cu; this file dispatches.
#include "core/cuda/check.h"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace scan {
// ssd_scan_kernel.cuh: the launch for activations T, any state dtype.
template <typename T>
void launch_act(const SsdArgs& a, const float* dt, cudaStream_t stream);
}  // namespace scan

void ssd_scan(const SsdArgs& a, const float* dt, DType act, cudaStream_t stream) {
    if (a.batch.n_seq == 0) return;
    DUALITY_DISPATCH_FLOAT("ssd_scan", act, T, scan::launch_act<T>(a, dt, stream));
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda
