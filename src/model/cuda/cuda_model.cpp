// Placeholder: the CUDA model is being written (next commit).
#include "core/cuda/device_buffer.h"
#include "model/backends.h"

namespace duality {

Result<std::unique_ptr<Model>> make_cuda_model(ModelConfig, const ModelWeights*, uint64_t,
                                               const LoadOptions&) {
    return unsupported("the CUDA model is not written yet");
}

int cuda_devices() { return cuda::device_count(); }

}  // namespace duality
