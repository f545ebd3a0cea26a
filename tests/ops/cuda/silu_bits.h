// Test-only: silu<T>'s fast form for 16-bit activations against the form it replaced, over every
// f32 bit pattern (silu_bits.cu, CudaSilu in test_silu_bits.cpp).
#pragma once

#include <cstdint>

namespace duality::optest {

struct SiluBits {
    uint64_t mismatches = 0;  // bit patterns whose results differ (both NaN counts as equal)
    uint32_t first = 0;       // the smallest such pattern (0xffffffff: none)
};

SiluBits silu_bits_mismatches();

}  // namespace duality::optest
