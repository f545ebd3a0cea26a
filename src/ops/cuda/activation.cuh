// Device activation functions shared by the CUDA kernels.
#pragma once

#include <cuda_runtime.h>

#include <type_traits>

namespace duality::cuda {

// silu(v) = v / (1 + exp(−v)) for an op whose activations are T. f32 activations get the
// accurate expf and division (the f32 tolerance rows, docs/numerics.md); f16/bf16 ones the fast
// exponential and reciprocal (a few ulp of f32, far below the output's rounding to 16 bits), which
// keep the prefill conv1d and gated norm from being bound by instruction issue. The fast form is
// written as the two flush-to-zero PTX approximations: bit for bit what __fdividef(v, 1 +
// __expf(−v)) gives, since 1 + e >= 1 absorbs any e the flush changes (below 2^−126), in five
// instructions (FMUL, MUFU.EX2, FADD, MUFU.RCP, FMUL) instead of eight: __expf's own handling of
// denormal results adds a compare and two predicated multiplies. The exponential's error grows
// with |v| (about 2 + 1.2·|v| ulp: ~25 ulp at |v| = 20, still ~1e-6 relative). Both forms give −0
// for v below about −88 and v for large v, pass NaN through, and give NaN at v = −inf.
template <typename T>
__device__ __forceinline__ float silu(float v) {
    if constexpr (std::is_same_v<T, float>) {
        return v / (1.0f + expf(-v));
    } else {
        float e, r;
        asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(v * -1.44269504f));  // exp(−v)
        asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.0f + e));
        return v * r;
    }
}

}  // namespace duality::cuda
