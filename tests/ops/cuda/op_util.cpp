#include "ops/cuda/op_util.h"

#include "core/half.h"

namespace duality::optest {

std::vector<float> normal(std::mt19937& rng, size_t n, float mean, float stddev) {
    std::normal_distribution<float> d(mean, stddev);
    std::vector<float> v(n);
    for (float& e : v) e = d(rng);
    return v;
}

std::vector<float> uniform(std::mt19937& rng, size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (float& e : v) e = d(rng);
    return v;
}

std::vector<float> rounded(DType dt, std::vector<float> v) {
    round_to_dtype(dt, v.data(), v.size());
    return v;
}

cuda::DeviceBuffer upload_as(DType dt, std::span<const float> v) {
    if (dt == DType::kF32) return upload_f32(v);
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i)
        h[i] = dt == DType::kBF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
    return cuda::to_device(std::span<const uint16_t>(h));
}

std::vector<float> download_as_f32(DType dt, const void* dev, size_t n) {
    if (dt == DType::kF32) return cuda::to_host<float>(dev, n);
    std::vector<uint16_t> h = cuda::to_host<uint16_t>(dev, n);
    std::vector<float> v(n);
    convert_to_f32(dt, h.data(), v.data(), n);
    return v;
}

cuda::DeviceBuffer upload_f32(std::span<const float> v) { return cuda::to_device(v); }
cuda::DeviceBuffer upload_i32(std::span<const int32_t> v) { return cuda::to_device(v); }

}  // namespace duality::optest
