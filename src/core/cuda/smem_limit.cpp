// ensure_dynamic_smem and resident_blocks (smem_limit.h).
#include "core/cuda/smem_limit.h"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "core/cuda/check.h"

namespace duality::cuda {

void ensure_dynamic_smem(const void* kernel, size_t bytes) {
    // The limit set so far per (kernel, device): the driver's state, mirrored.
    static std::mutex mu;
    static std::map<std::pair<const void*, int>, size_t> set;
    int device = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&device));
    const std::lock_guard<std::mutex> lock(mu);
    size_t& done = set[{kernel, device}];
    if (bytes <= done) return;
    DUALITY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes)));
    done = bytes;
}

int resident_blocks(const void* kernel, int threads, size_t bytes) {
    static std::mutex mu;
    static std::map<std::tuple<const void*, int, int, size_t>, int> known;
    int device = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&device));
    const std::lock_guard<std::mutex> lock(mu);
    const auto key = std::make_tuple(kernel, device, threads, bytes);
    if (const auto it = known.find(key); it != known.end()) return it->second;
    // (The query counts opt-in shared memory only once the kernel's attribute allows it.)
    ensure_dynamic_smem(kernel, bytes);
    int blocks = 0;
    DUALITY_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, bytes));
    known[key] = blocks;
    return blocks;
}

}  // namespace duality::cuda
