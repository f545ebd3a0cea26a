// Δ from a biased raw dt value, shared by dt_softplus, ssm_decode and ssd_fused (RawDt) so all
// match cpu::dt_softplus: the threshold-20 softplus, then fmax with dt_min and fmin with dt_max.
#pragma once

#include <cuda_runtime.h>

namespace duality::cuda {

__device__ __forceinline__ float dt_clamped_softplus(float v, float dt_min, float dt_max) {
    const float sp = v > 20.0f ? v : log1pf(expf(v));
    return fminf(fmaxf(sp, dt_min), dt_max);
}

}  // namespace duality::cuda
