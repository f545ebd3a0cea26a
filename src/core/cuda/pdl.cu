// pdl::runs_sm90_code(), pdl::enabled() and pdl::early_reads(): whether this library's Hopper code
// runs here, whether programmatic dependent launches are safe and wanted, and whether kernels read
// ahead of their wait (see pdl.cuh).
#include "core/cuda/pdl.cuh"
#include "core/env.h"

namespace duality::cuda::pdl {
namespace {

// Compiled with the same architectures as every kernel that calls pdl::wait(), so its PTX
// version is theirs on this device.
__global__ void probe_kernel() {}

bool probe_sm90() {
    cudaFuncAttributes attr{};
    if (cudaFuncGetAttributes(&attr, probe_kernel) != cudaSuccess) {
        (void)cudaGetLastError();  // leave no sticky error behind
        return false;
    }
    return attr.ptxVersion >= 90;
}

}  // namespace

bool runs_sm90_code() {
    static const bool on = probe_sm90();
    return on;
}

bool enabled() {
    static const bool on = !env_is("DUALITY_PDL", "0") && runs_sm90_code();
    return on;
}

bool early_reads() {
    static const bool on = !env_is("DUALITY_PDL_EARLY", "0") && enabled();
    return on;
}

}  // namespace duality::cuda::pdl
