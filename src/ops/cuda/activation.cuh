// Device activation functions shared by the CUDA kernels.
#pragma once

#include <cuda_runtime.h>

#include <type_traits>

namespace duality::cuda {

// silu(v) = v / (1 + exp(−v)) for an op whose activations are T. f32 activations get the
// accurate expf and division (the f32 tolerance rows, docs/numerics.md); f16/bf16 ones the fast
// __expf and __fdividef (a few ulp of f32, far below the output's rounding to 16 bits), which
// keep the prefill conv1d and gated norm from being bound by instruction issue. __expf's error
// grows with |v| (about 2 + 1.2·|v| ulp: ~25 ulp at |v| = 20, still ~1e-6 relative). Both forms
// give −0 for v below about −88 and v for large v, pass NaN through, and give NaN at v = −inf.
template <typename T>
__device__ __forceinline__ float silu(float v) {
    if constexpr (std::is_same_v<T, float>) {
        return v / (1.0f + expf(-v));
    } else {
        return __fdividef(v, 1.0f + __expf(-v));
    }
}

}  // namespace duality::cuda
