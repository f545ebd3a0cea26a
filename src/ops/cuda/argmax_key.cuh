// A row's argmax as one unsigned 64-bit maximum (the LM head's epilogue folds it with atomicMax,
// argmax_from_key reads it): the value's bits made orderable in the high word, 2^32 − 1 − id in
// the low one, so that the largest key is the largest value and, among equal values, the lowest
// id, as argmax_rows (argmax.cu) picks them. Values argmax_rows never picks (-inf, NaN) get key 0,
// which no other value has; −0 counts as +0 (equal, as argmax_rows compares them).
#pragma once

#include <cfloat>

namespace duality::cuda {

__device__ __forceinline__ unsigned long long argmax_key_of(float v, int id) {
    if (!(v >= -FLT_MAX)) return 0;
    const unsigned u = v == 0.0f ? 0u : __float_as_uint(v);
    const unsigned ord = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return (static_cast<unsigned long long>(ord) << 32) | (0xFFFFFFFFu - static_cast<unsigned>(id));
}

// The id of a key (0 for key 0: no value counted, as argmax_rows returns then).
__device__ __forceinline__ int argmax_key_id(unsigned long long key) {
    return key == 0 ? 0 : static_cast<int>(0xFFFFFFFFu - static_cast<unsigned>(key));
}

}  // namespace duality::cuda
