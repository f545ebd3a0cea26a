// pdl::enabled(): whether programmatic dependent launches are safe and wanted (see pdl.cuh).
#include <cstdlib>
#include <cstring>

#include "core/cuda/pdl.cuh"

namespace duality::cuda::pdl {
namespace {

// Compiled with the same architectures as every kernel that calls pdl::wait(), so its PTX
// version is theirs on this device.
__global__ void probe_kernel() {}

bool decide() {
    const char* v = std::getenv("DUALITY_PDL");
    if (v != nullptr && std::strcmp(v, "0") == 0) return false;
    cudaFuncAttributes attr{};
    if (cudaFuncGetAttributes(&attr, probe_kernel) != cudaSuccess) {
        (void)cudaGetLastError();  // leave no sticky error behind
        return false;
    }
    return attr.ptxVersion >= 90;
}

}  // namespace

bool enabled() {
    static const bool on = decide();
    return on;
}

}  // namespace duality::cuda::pdl
