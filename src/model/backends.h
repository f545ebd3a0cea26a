// The backends behind Model::load and Model::random. The CUDA backend lives in src/model/cuda/
// and is built with DUALITY_CUDA; without it, src/model/no_cuda.cpp answers every call with an
// "unsupported" Status.
#pragma once

#include <memory>

#include "duality/model.h"
#include "model/weights.h"

namespace duality {

// `weights` (f32, host) are converted to options.dtype and copied to the GPU once; when null,
// the model gets random weights drawn on the GPU from `seed` (RandomInit, uniform_hash).
Result<std::unique_ptr<Model>> make_cuda_model(ModelConfig config, const ModelWeights* weights,
                                               uint64_t seed, const LoadOptions& options);

int cuda_devices();

}  // namespace duality
