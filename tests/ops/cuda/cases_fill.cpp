// cuda::fill_uniform and cuda::convert_from_f32.
//
// Registry cases (zero tolerance: both are bit-exact by design):
// - fill_uniform against a host replica of the hash (splitmix64 of (seed, index), 24 bits, the
//   uniform_hash of model/weights.h), lo + (hi - lo)·u with the product and the sum rounded
//   separately, then rounded to the dtype with core/half.h's conversions.
// - convert_from_f32 against f32_to_bf16 / f32_to_f16, compared as bit patterns (each 16-bit
//   pattern as an exact float; f32 as its two halves), so NaN, inf, signed zeros, ties, f16
//   subnormals, f32 subnormals and overflow are all compared exactly.
// Plain tests: fill_uniform's range, mean within 5 standard errors of (lo + hi)/2, determinism
// (same seed, same bits) and seed sensitivity.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/half.h"
#include "ops/cuda/kern_util.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

uint64_t splitmix(uint64_t seed, uint64_t index) {
    uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// The f32 value fill_uniform computes for element i (no FMA: volatile pins both roundings).
float fill_value(uint64_t seed, uint64_t i, float lo, float hi) {
    const float u = static_cast<float>(splitmix(seed, i) >> 40) * 0x1.0p-24f;
    volatile float prod = (hi - lo) * u;
    return lo + prod;
}

// The dtype's bit pattern(s) of v as exact floats: one value (16-bit types) or two (f32).
void push_bits(DType dt, float v, std::vector<float>& out) {
    if (dt == DType::kBF16) {
        out.push_back(f32_to_bf16(v));
    } else if (dt == DType::kF16) {
        out.push_back(f32_to_f16(v));
    } else {
        uint32_t b;
        std::memcpy(&b, &v, 4);
        out.push_back(static_cast<float>(b & 0xffffu));
        out.push_back(static_cast<float>(b >> 16));
    }
}

// The device buffer's elements as bit patterns in the layout of push_bits.
std::vector<float> device_bits(DType dt, const cuda::DeviceBuffer& buf, size_t n) {
    std::vector<float> out;
    if (dt == DType::kF32) {
        const std::vector<uint32_t> w = cuda::to_host<uint32_t>(buf.data(), n);
        for (uint32_t b : w) {
            out.push_back(static_cast<float>(b & 0xffffu));
            out.push_back(static_cast<float>(b >> 16));
        }
    } else {
        const std::vector<uint16_t> h = cuda::to_host<uint16_t>(buf.data(), n);
        for (uint16_t b : h) out.push_back(static_cast<float>(b));
    }
    return out;
}

float from_bits(uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

void fill_case(int64_t n, uint64_t seed, float lo, float hi, DType dt) {
    char name[160];
    std::snprintf(name, sizeof name, "fill_uniform/n%lld_seed%llu_%g_%g/%s",
                  static_cast<long long>(n), static_cast<unsigned long long>(seed), lo, hi,
                  dt_name(dt).c_str());
    register_case({name, Tolerance{0.0, 0.0, 0.0}, [=] {
                       std::vector<float> expected;
                       for (int64_t i = 0; i < n; ++i)
                           push_bits(dt, fill_value(seed, static_cast<uint64_t>(i), lo, hi),
                                     expected);
                       cuda::DeviceBuffer d(static_cast<size_t>(n) * dtype_size(dt));
                       cuda::fill_uniform(d.data(), n, dt, seed, lo, hi, nullptr);
                       DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
                       return std::vector<Output>{
                           {"bits", expected, device_bits(dt, d, static_cast<size_t>(n))}};
                   }});
}

// Inputs for convert_from_f32: special values, ties and boundaries of both 16-bit formats,
// subnormals, then random bit patterns.
std::vector<float> convert_inputs() {
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> v = {
        0.0f,
        -0.0f,
        inf,
        -inf,
        std::numeric_limits<float>::quiet_NaN(),
        from_bits(0x7f800001u),
        from_bits(0xffc12345u),
        from_bits(0x7fbfffffu),  // NaNs
        FLT_MAX,
        -FLT_MAX,
        1.0f,
        -1.0f,
        // bf16 ties (1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even = 1) and neighbours
        from_bits(0x3f808000u),
        from_bits(0x3f818000u),
        from_bits(0x3f808001u),
        from_bits(0x3f807fffu),
        from_bits(0x7f7f8000u),
        from_bits(0x7f7fffffu),
        // f16 ties, overflow boundary (65504 max; 65520 rounds to inf)
        1.0f + 0x1.0p-11f,
        1.0f + 3 * 0x1.0p-11f,
        65504.0f,
        65519.0f,
        65520.0f,
        -65520.0f,
        65536.0f,
        1e6f,
        2048.0f + 1.0f,
        2048.0f + 3.0f,
        // f16 subnormals: 2^-24 is the smallest, 2^-25 ties to 0, 3·2^-25 ties up to 2 units
        0x1.0p-24f,
        0x1.0p-25f,
        0x1.8p-24f,
        0x1.0p-26f,
        0x1.0p-25f * 1.0000001f,
        0x1.0p-14f,
        0x1.ff8p-15f,
        0x1.ffcp-15f,
        -0x1.0p-24f,
        0x1.0p-20f + 0x1.0p-25f,
        // f32 subnormals (bf16 keeps them; f16 flushes them to signed zero)
        from_bits(0x00000001u),
        from_bits(0x00008000u),
        from_bits(0x00018000u),
        from_bits(0x807fffffu),
        from_bits(0x00400000u),
        1e-40f,
    };
    std::mt19937 rng(77);
    for (int i = 0; i < 20000; ++i) v.push_back(from_bits(static_cast<uint32_t>(rng())));
    std::normal_distribution<float> d(0.0f, 100.0f);
    for (int i = 0; i < 20000; ++i) v.push_back(d(rng));
    return v;
}

void convert_case(DType dt) {
    register_case(
        {"convert_from_f32/special_and_random/" + dt_name(dt), Tolerance{0.0, 0.0, 0.0}, [=] {
             const std::vector<float> in = convert_inputs();
             std::vector<float> expected;
             for (float v : in) push_bits(dt, v, expected);
             cuda::DeviceBuffer d_in = upload_f32(in);
             cuda::DeviceBuffer d_out(in.size() * dtype_size(dt));
             cuda::convert_from_f32(d_in.as<float>(), d_out.data(), static_cast<int64_t>(in.size()),
                                    dt, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             return std::vector<Output>{{"bits", expected, device_bits(dt, d_out, in.size())}};
         }});
}

DUALITY_OP_CASES(fill) {
    for (DType dt : kActs) {
        fill_case((1 << 20) + 3, 42, -1.0f, 1.0f, dt);
        fill_case(100003, 7, 0.5f, 2.0f, dt);
        fill_case(4096, 0xfedcba9876543210ull, -0.02f, 0.02f, dt);
        fill_case(17, 3, 1.0f, 1.0f, dt);  // lo == hi: a constant
        convert_case(dt);
    }
}

// ---- statistics and determinism --------------------------------------------------------------
std::vector<float> fill_host(int64_t n, DType dt, uint64_t seed, float lo, float hi) {
    cuda::DeviceBuffer d(static_cast<size_t>(n) * dtype_size(dt));
    cuda::fill_uniform(d.data(), n, dt, seed, lo, hi, nullptr);
    DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
    return download_as_f32(dt, d.data(), static_cast<size_t>(n));
}

TEST(CudaFillUniform, RangeMeanAndDeterminism) {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    const int64_t n = 1 << 22;
    for (DType dt : kActs) {
        for (auto [lo, hi] : {std::pair{-1.0f, 1.0f}, std::pair{0.25f, 3.0f}}) {
            SCOPED_TRACE(dt_name(dt) + " [" + std::to_string(lo) + ", " + std::to_string(hi) + ")");
            const std::vector<float> v = fill_host(n, dt, 1234, lo, hi);
            double sum = 0.0;
            float mn = v[0], mx = v[0];
            for (float e : v) {
                sum += e;
                mn = std::min(mn, e);
                mx = std::max(mx, e);
            }
            // Rounding to a 16-bit dtype may reach hi itself, never beyond.
            EXPECT_GE(mn, lo);
            EXPECT_LE(mx, hi);
            if (dt == DType::kF32) {
                EXPECT_LT(mx, hi);
            }
            // The range is covered: min and max within 1% of the ends.
            EXPECT_LT(mn, lo + 0.01f * (hi - lo));
            EXPECT_GT(mx, hi - 0.01f * (hi - lo));
            // Mean: standard error (hi - lo)/sqrt(12 n); allow 5 of them (rounding to bf16 is
            // unbiased to far below that).
            const double se = (hi - lo) / std::sqrt(12.0 * static_cast<double>(n));
            EXPECT_NEAR(sum / static_cast<double>(n), 0.5 * (lo + hi), 5.0 * se);
            // Same seed: same values; another seed: different values.
            const std::vector<float> again = fill_host(n, dt, 1234, lo, hi);
            EXPECT_EQ(0, std::memcmp(v.data(), again.data(), v.size() * sizeof(float)));
            const std::vector<float> other = fill_host(n, dt, 1235, lo, hi);
            size_t same = 0;
            for (size_t i = 0; i < v.size(); ++i) same += v[i] == other[i];
            EXPECT_LT(same, v.size() / 10);
        }
    }
}

}  // namespace
}  // namespace duality::optest
