// The fused SSD's kernels and launches for head_dim 64, f16 and bf16, with the gate's and the
// pairs' instantiations (head_dim 64 only): ssd_fused_instances.cuh.
#include "ops/cuda/ssd_fused_instances.cuh"

DUALITY_SSD_FUSED_INSTANTIATE(64)
