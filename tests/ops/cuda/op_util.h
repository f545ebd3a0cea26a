// Helpers for op-test cases: seeded random inputs, rounding to a dtype, device round trips.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "core/cuda/device_buffer.h"
#include "duality/types.h"

namespace duality::optest {

// n values from N(mean, stddev) or U(lo, hi), from `rng`.
std::vector<float> normal(std::mt19937& rng, size_t n, float mean = 0.0f, float stddev = 1.0f);
std::vector<float> uniform(std::mt19937& rng, size_t n, float lo, float hi);

// Rounds in place to the nearest `dt` value (what a kernel reading `dt` sees).
std::vector<float> rounded(DType dt, std::vector<float> v);

// Uploads f32 values converted to `dt` / downloads `dt` values as f32.
cuda::DeviceBuffer upload_as(DType dt, std::span<const float> v);
std::vector<float> download_as_f32(DType dt, const void* dev, size_t n);

// f32 and int32 uploads.
cuda::DeviceBuffer upload_f32(std::span<const float> v);
cuda::DeviceBuffer upload_i32(std::span<const int32_t> v);

}  // namespace duality::optest
