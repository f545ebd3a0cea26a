// Non-owning tensor views and the owning host buffer behind them.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "duality/types.h"

namespace duality {

// A contiguous row-major view: dtype, shape, device and a pointer it does not own.
struct TensorView {
    void* data = nullptr;
    DType dtype = DType::kF32;
    Device device = Device::kCpu;
    std::vector<int64_t> shape;

    int64_t numel() const {
        return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
    }
    size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
    template <typename T>
    T* as() const { return static_cast<T*>(data); }
};

std::string shape_str(const std::vector<int64_t>& shape);

// An owning, 64-byte aligned host allocation of f32 values.
class HostBuffer {
public:
    HostBuffer() = default;
    explicit HostBuffer(size_t n_floats) { resize(n_floats); }
    void resize(size_t n_floats) {
        size_t bytes = ((n_floats * sizeof(float) + 63) / 64) * 64;
        data_.reset(bytes ? static_cast<float*>(std::aligned_alloc(64, bytes)) : nullptr);
        size_ = n_floats;
    }
    float* data() { return data_.get(); }
    const float* data() const { return data_.get(); }
    size_t size() const { return size_; }

private:
    struct Free {
        void operator()(float* p) const { std::free(p); }
    };
    std::unique_ptr<float, Free> data_;
    size_t size_ = 0;
};

}  // namespace duality
