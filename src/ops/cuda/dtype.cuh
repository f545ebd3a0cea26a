// Device helpers shared by the element-wise, norm, conv and decode kernels: f32 <-> act dtype
// (float, __half, __nv_bfloat16) for scalars and small vectors, bit-exact twins of core/half.h's
// host conversions, alignment tests, and the DType -> C++ type dispatch macro.
//
// Vector helpers move V consecutive elements (V in {1, 2, 4, 8}) with one load or store of
// V * sizeof(T) bytes; the caller guarantees that the address is aligned to that size
// (see is_aligned()). Math is always f32; stores round to nearest even.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "duality/types.h"

namespace duality::cuda::dtype {

// ---- scalars ---------------------------------------------------------------------------------
__device__ __forceinline__ float to_f32(float v) {
    return v;
}
__device__ __forceinline__ float to_f32(__half v) {
    return __half2float(v);
}
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) {
    return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
    return v;
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
    return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

// ---- vectors of V elements -------------------------------------------------------------------
// A raw storage type of `bytes` bytes with that alignment.
struct alignas(32) Raw32 {
    uint4 a, b;
};
template <int bytes>
struct RawVec;
template <>
struct RawVec<2> {
    using type = uint16_t;
};
template <>
struct RawVec<4> {
    using type = uint32_t;
};
template <>
struct RawVec<8> {
    using type = uint2;
};
template <>
struct RawVec<16> {
    using type = uint4;
};
template <>
struct RawVec<32> {
    using type = Raw32;
};

// The trivially copyable element storage of T (the 16-bit types as their bits).
template <typename T>
struct Bits {
    using type = uint16_t;
};
template <>
struct Bits<float> {
    using type = float;
};
__device__ __forceinline__ float bits_to_f32(float v, const float*) {
    return v;
}
__device__ __forceinline__ float bits_to_f32(uint16_t v, const __half*) {
    return __half2float(__ushort_as_half(v));
}
__device__ __forceinline__ float bits_to_f32(uint16_t v, const __nv_bfloat16*) {
    return __bfloat162float(__ushort_as_bfloat16(v));
}
__device__ __forceinline__ float f32_to_bits(float v, const float*) {
    return v;
}
__device__ __forceinline__ uint16_t f32_to_bits(float v, const __half*) {
    return __half_as_ushort(__float2half_rn(v));
}
__device__ __forceinline__ uint16_t f32_to_bits(float v, const __nv_bfloat16*) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

// Cache hint of a vector access: the default, or streaming ("evict first") for data a kernel
// touches once (the decode step's state).
enum class Cache { kDefault, kStream };

template <Cache C, typename R>
__device__ __forceinline__ R load_raw(const R* p) {
    constexpr bool hinted = std::is_same_v<R, uint4> || std::is_same_v<R, uint2> ||
                            std::is_same_v<R, uint32_t>;  // the types __ldcs takes
    if constexpr (C == Cache::kStream && hinted) {
        return __ldcs(p);
    } else {
        return *p;
    }
}

template <Cache C, typename R>
__device__ __forceinline__ void store_raw(R* p, R v) {
    constexpr bool hinted =
        std::is_same_v<R, uint4> || std::is_same_v<R, uint2> || std::is_same_v<R, uint32_t>;
    if constexpr (C == Cache::kStream && hinted) {
        __stcs(p, v);
    } else {
        *p = v;
    }
}

// The raw bits of V elements of T. load() in two halves (load_bits, then unpack), for kernels
// that keep loads in flight in fewer registers than the f32 values take.
template <int V, typename T>
using RawOf = typename RawVec<V* static_cast<int>(sizeof(T))>::type;

// p[0..V) as raw bits; p aligned to V * sizeof(T).
template <int V, Cache C = Cache::kDefault, typename T>
__device__ __forceinline__ RawOf<V, T> load_bits(const T* p) {
    return load_raw<C>(reinterpret_cast<const RawOf<V, T>*>(p));
}

// out[0..V) = raw (V elements of T, as load_bits returned them) converted to f32.
template <int V, typename T>
__device__ __forceinline__ void unpack(const RawOf<V, T>& raw, const T* /*type tag*/,
                                       float (&out)[V]) {
    union {
        RawOf<V, T> raw;
        typename Bits<T>::type e[V];
    } u;
    u.raw = raw;
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = bits_to_f32(u.e[i], static_cast<const T*>(nullptr));
}

// out[0..V) = p[0..V) converted to f32; p aligned to V * sizeof(T).
template <int V, Cache C = Cache::kDefault, typename T>
__device__ __forceinline__ void load(const T* p, float (&out)[V]) {
    unpack<V>(load_bits<V, C>(p), p, out);
}

// p[0..V) = v[0..V) rounded to T; p aligned to V * sizeof(T).
template <int V, Cache C = Cache::kDefault, typename T>
__device__ __forceinline__ void store(T* p, const float (&v)[V]) {
    using R = typename RawVec<V* static_cast<int>(sizeof(T))>::type;
    union {
        R raw;
        typename Bits<T>::type e[V];
    } u;
#pragma unroll
    for (int i = 0; i < V; ++i) u.e[i] = f32_to_bits(v[i], p);
    store_raw<C>(reinterpret_cast<R*>(p), u.raw);
}

// ---- bit-exact twins of core/half.h (also for NaN, which the intrinsics canonicalize) -------
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
    uint32_t bits = __float_as_uint(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>(bits >> 16);
}

__device__ __forceinline__ uint16_t f32_to_f16_bits(float f) {
    const uint32_t x = __float_as_uint(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    const uint32_t abs = x & 0x7fffffffu;
    if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
    if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
    if (abs < 0x38800000u) {                                               // f16 subnormal or zero
        if (abs < 0x33000000u) return sign;
        const uint32_t exp = abs >> 23, mant = (abs & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - exp;
        uint32_t units = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (units & 1u))) ++units;
        return static_cast<uint16_t>(sign | units);
    }
    uint32_t bits = abs - 0x38000000u;
    bits += 0xfffu + ((bits >> 13) & 1u);
    return static_cast<uint16_t>(sign | (bits >> 13));
}

// ---- host side -------------------------------------------------------------------------------
inline bool is_aligned(const void* p, size_t bytes) {
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

[[noreturn]] inline void bad_dtype(const char* op, DType dt) {
    std::fprintf(stderr, "duality: internal error: cuda::%s: unsupported dtype %d\n", op,
                 static_cast<int>(dt));
    std::abort();
}

}  // namespace duality::cuda::dtype

// Runs the statement list with `T` bound to the C++ type of the float DType `dt` (float, __half,
// __nv_bfloat16); any other dtype aborts naming `op`.
#define DUALITY_DISPATCH_FLOAT(op, dt, T, ...)             \
    do {                                                   \
        switch (dt) {                                      \
            case ::duality::DType::kF32: {                 \
                using T = float;                           \
                __VA_ARGS__;                               \
            } break;                                       \
            case ::duality::DType::kF16: {                 \
                using T = __half;                          \
                __VA_ARGS__;                               \
            } break;                                       \
            case ::duality::DType::kBF16: {                \
                using T = __nv_bfloat16;                   \
                __VA_ARGS__;                               \
            } break;                                       \
            default:                                       \
                ::duality::cuda::dtype::bad_dtype(op, dt); \
        }                                                  \
    } while (0)
