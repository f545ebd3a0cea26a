// Stand-ins for the CUDA backend in builds without it (DUALITY_CUDA=OFF).
#include "model/backends.h"

namespace duality {

Result<std::unique_ptr<Model>> make_cuda_model(ModelConfig, const ModelWeights*, uint64_t,
                                               const LoadOptions&) {
    return unsupported("this build of duality has no CUDA backend (configure with -DDUALITY_CUDA=ON "
                       "where nvcc is installed)");
}

int cuda_devices() { return 0; }

}  // namespace duality
