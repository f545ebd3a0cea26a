// ProfileRange without CUDA: no profiler to tell.
#include "core/profile_range.h"

namespace duality {

ProfileRange::ProfileRange(const char* /*name*/) {}

ProfileRange::~ProfileRange() = default;

}  // namespace duality
