// The Mamba-2 language model on the CPU backend (f32).
#pragma once

#include <memory>

#include "duality/model.h"
#include "model/weights.h"

namespace duality {

std::unique_ptr<Model> make_cpu_model(ModelConfig config, ModelWeights weights, int n_threads);

}  // namespace duality
