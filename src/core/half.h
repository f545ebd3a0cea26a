// Conversions between f32 and the 16-bit float formats stored in checkpoints.
#pragma once

#include <cstdint>
#include <cstring>

#include "duality/types.h"

namespace duality {

inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>(bits >> 16);
}

inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalize
            exp = 127 - 15 + 1;
            while ((mant & 0x400u) == 0) {
                mant <<= 1;
                --exp;
            }
            mant &= 0x3ffu;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

// Round to nearest even; overflow gives ±inf, NaN stays NaN, tiny values become subnormals or 0.
inline uint16_t f32_to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, sizeof x);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    const uint32_t abs = x & 0x7fffffffu;
    if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
    if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u); // rounds to inf
    if (abs < 0x38800000u) {  // below the smallest normal f16 (2^-14): subnormal or zero
        if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
        const uint32_t exp = abs >> 23, mant = (abs & 0x7fffffu) | 0x800000u;
        // value = mant · 2^(exp-150) and the f16 subnormal unit is 2^-24: units = mant >> shift.
        const uint32_t shift = 126 - exp;
        uint32_t units = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (units & 1u))) ++units;
        return static_cast<uint16_t>(sign | units);
    }
    uint32_t bits = abs - 0x38000000u;  // rebias exponent 127 -> 15 (shifted by 13)
    bits += 0xfffu + ((bits >> 13) & 1u);
    return static_cast<uint16_t>(sign | (bits >> 13));
}

// Rounds each value to the nearest `dt` value (kF32: unchanged), as a kernel reading that
// dtype would see it.
void round_to_dtype(DType dt, float* x, size_t n);

// Converts `n` elements of a float dtype to f32.
void convert_to_f32(DType src_dtype, const void* src, float* dst, size_t n);

}  // namespace duality
