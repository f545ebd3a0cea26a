// The sequential-scan SSD's kernels and launch for float activations: ssd_scan_kernel.cuh.
#include "ops/cuda/ssd_scan_kernel.cuh"

template void duality::cuda::scan::launch_act<float>(const duality::cuda::SsdArgs&, const float*,
                                                     cudaStream_t);
