// A named range of host time for GPU profilers: an NVTX push/pop range in CUDA builds, nothing
// in CPU-only ones. Nsight Compute's `--nvtx --nvtx-include "<name>/"` then profiles only the
// kernels launched inside it, e.g. the timed steps of `duality bench` and not the thousands of
// GEMM launches that tune cuBLASLt's choices when a model loads (scripts/gpu-check.sh profile).
// Without a profiler attached the push and pop cost a few nanoseconds.
#pragma once

namespace duality {

class ProfileRange {
  public:
    explicit ProfileRange(const char* name);  // name: a string literal (kept by the profiler)
    ~ProfileRange();
    ProfileRange(const ProfileRange&) = delete;
    ProfileRange& operator=(const ProfileRange&) = delete;
};

}  // namespace duality
