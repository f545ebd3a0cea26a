// Stand-in for the per-op GPU benchmark in builds without CUDA (DUALITY_CUDA=OFF).
#include "ops/op_bench.h"

namespace duality {

Result<OpBenchResult> run_op_bench(const OpBenchOptions&) {
    return unsupported(
        "this build of duality has no CUDA backend, so there are no GPU ops to "
        "time (configure with -DDUALITY_CUDA=ON where nvcc is installed)");
}

}  // namespace duality
