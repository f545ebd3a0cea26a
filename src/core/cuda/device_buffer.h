// Device memory: an owning allocation (RAII over cudaMalloc) and a bump-pointer pool carved out
// of one allocation. The engine sizes its pools at load, so nothing calls cudaMalloc on the hot
// path: per-step scratch comes from a DevicePool that is reset, not freed, between steps.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/cuda/check.h"
#include "duality/status.h"

namespace duality::cuda {

// Number of CUDA devices usable by this process (0 when there is no driver or GPU).
int device_count();

class DeviceBuffer {
public:
    DeviceBuffer() = default;
    // Allocates `bytes`; aborts on failure. Use allocate() where running out is recoverable.
    explicit DeviceBuffer(size_t bytes);
    static Result<DeviceBuffer> allocate(size_t bytes, const char* what);
    ~DeviceBuffer() { reset(); }
    DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
        o.ptr_ = nullptr;
        o.bytes_ = 0;
    }
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    void reset();
    void* data() const { return ptr_; }
    template <typename T>
    T* as() const { return static_cast<T*>(ptr_); }
    size_t bytes() const { return bytes_; }

private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

// Hands out 256-byte aligned pieces of one DeviceBuffer, first come first served; reset() makes
// the whole block available again.
class DevicePool {
public:
    DevicePool() = default;
    explicit DevicePool(size_t bytes) : block_(bytes) {}
    static Result<DevicePool> allocate(size_t bytes, const char* what);

    // nullptr-free: aborts when the pool is exhausted (its size is computed up front, so this is
    // a sizing bug, not an input error).
    void* take(size_t bytes);
    template <typename T>
    T* take(size_t count) { return static_cast<T*>(take(count * sizeof(T))); }
    void reset() { used_ = 0; }
    size_t used() const { return used_; }
    size_t capacity() const { return block_.bytes(); }
    static size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

private:
    explicit DevicePool(DeviceBuffer block) : block_(std::move(block)) {}
    DeviceBuffer block_;
    size_t used_ = 0;
};

// Synchronous copies for tests and loading (not for the hot path).
void upload(void* dst, const void* src, size_t bytes);
void download(void* dst, const void* src, size_t bytes);
template <typename T>
DeviceBuffer to_device(std::span<const T> host) {
    DeviceBuffer b(host.size_bytes());
    upload(b.data(), host.data(), host.size_bytes());
    return b;
}
template <typename T>
std::vector<T> to_host(const void* dev, size_t count) {
    std::vector<T> v(count);
    download(v.data(), dev, count * sizeof(T));
    return v;
}

}  // namespace duality::cuda
