// silu<T> for 16-bit activations (ops/cuda/activation.cuh) is written with ex2.approx.ftz and
// rcp.approx.ftz, and its comment claims the result is bit for bit __fdividef(v, 1 + __expf(−v)),
// the form it replaced: checked here over all 2^32 f32 inputs.
#include <gtest/gtest.h>

#include <cstring>

#include "core/cuda/device_buffer.h"
#include "ops/cuda/silu_bits.h"

namespace duality {
namespace {

TEST(CudaSilu, FastFormIsBitForBitTheFdividefForm) {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    const optest::SiluBits r = optest::silu_bits_mismatches();
    float first = 0.0f;
    std::memcpy(&first, &r.first, sizeof(first));
    EXPECT_EQ(r.mismatches, 0u) << "first differing input: bits 0x" << std::hex << r.first << " ("
                                << first << ")";
}

}  // namespace
}  // namespace duality
