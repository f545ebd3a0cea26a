// ProfileRange as an NVTX push/pop range (NVTX v3, header-only in the CUDA toolkit: a no-op
// unless a tool such as Nsight Compute injects itself).
#include "core/profile_range.h"

#include <nvtx3/nvToolsExt.h>

namespace duality {

ProfileRange::ProfileRange(const char* name) {
    nvtxRangePushA(name);
}

ProfileRange::~ProfileRange() {
    nvtxRangePop();
}

}  // namespace duality
