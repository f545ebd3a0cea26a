// The sequential-scan SSD's kernels and launch for __half activations: ssd_scan_kernel.cuh.
#include "ops/cuda/ssd_scan_kernel.cuh"

template void duality::cuda::scan::launch_act<__half>(const duality::cuda::SsdArgs&, const float*,
                                                      cudaStream_t);
