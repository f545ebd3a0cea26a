// A kernel's dynamic shared-memory limit, raised where a launch needs more than the default.
#pragma once

#include <cstddef>

namespace duality::cuda {

// Before launching `kernel` (a __global__ function) with `bytes` of dynamic shared memory on the
// current device: sets cudaFuncAttributeMaxDynamicSharedMemorySize to `bytes` if no earlier call
// for this kernel and device set at least that much. The attribute is per device, so the record
// is too; thread-safe. From 0, not the default 48 KiB: a kernel's static shared memory counts
// against that default as well.
void ensure_dynamic_smem(const void* kernel, size_t bytes);

// The blocks of `threads` threads and `bytes` of dynamic shared memory that one SM of the current
// device holds at once (cudaOccupancyMaxActiveBlocksPerMultiprocessor), after
// ensure_dynamic_smem(kernel, bytes); asked (and the limit raised) once per (kernel, device,
// threads, bytes).
int resident_blocks(const void* kernel, int threads, size_t bytes);

}  // namespace duality::cuda
