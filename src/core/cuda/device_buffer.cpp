#include "core/cuda/device_buffer.h"

#include <string>

namespace duality::cuda {

int device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();  // clear the sticky "no driver" error
        return 0;
    }
    return n;
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes) DUALITY_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}

Result<DeviceBuffer> DeviceBuffer::allocate(size_t bytes, const char* what) {
    DeviceBuffer b;
    if (bytes == 0) return b;
    cudaError_t e = cudaMalloc(&b.ptr_, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_bytes = 0, total = 0;
        (void)cudaMemGetInfo(&free_bytes, &total);
        return resource_exhausted(std::string("cannot allocate ") + std::to_string(bytes >> 20) +
                                  " MiB of GPU memory for " + what + " (" +
                                  std::to_string(free_bytes >> 20) + " MiB free of " +
                                  std::to_string(total >> 20) + " MiB): " + cudaGetErrorString(e));
    }
    b.bytes_ = bytes;
    return b;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
        reset();
        ptr_ = o.ptr_;
        bytes_ = o.bytes_;
        o.ptr_ = nullptr;
        o.bytes_ = 0;
    }
    return *this;
}

void DeviceBuffer::reset() {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
}

Result<DevicePool> DevicePool::allocate(size_t bytes, const char* what) {
    DUALITY_ASSIGN_OR_RETURN(DeviceBuffer block, DeviceBuffer::allocate(bytes, what));
    return DevicePool(std::move(block));
}

void* DevicePool::take(size_t bytes) {
    const size_t n = round_up(bytes);
    if (used_ + n > block_.bytes())
        fail("device pool exhausted", std::to_string(used_ + n).c_str(), __FILE__, __LINE__);
    void* p = static_cast<char*>(block_.data()) + used_;
    used_ += n;
    return p;
}

void upload(void* dst, const void* src, size_t bytes) {
    if (bytes) DUALITY_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

void download(void* dst, const void* src, size_t bytes) {
    if (bytes) DUALITY_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

}  // namespace duality::cuda
