// The sequential-scan SSD's kernels and launch for __nv_bfloat16 activations: ssd_scan_kernel.cuh.
#include "ops/cuda/ssd_scan_kernel.cuh"

template void duality::cuda::scan::launch_act<__nv_bfloat16>(const duality::cuda::SsdArgs&,
                                                             const float*, cudaStream_t);
