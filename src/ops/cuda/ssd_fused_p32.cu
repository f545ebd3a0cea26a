// The fused SSD's kernels and launches for head_dim 32, f16 and bf16:
// ssd_fused_instances.cuh.
#include "ops/cuda/ssd_fused_instances.cuh"

DUALITY_SSD_FUSED_INSTANTIATE(32)
