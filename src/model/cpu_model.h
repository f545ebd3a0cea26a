// The Mamba-2 language model on the CPU backend (f32).
#pragma once

#include <memory>

#include "duality/model.h"
#include "model/weights.h"

namespace duality {

std::unique_ptr<Model> make_cpu_model(ModelConfig config, ModelWeights weights, int n_threads,
                                      int n_slots, int64_t sample_vocab = 0);

// Every backend's step() accepts the same batches: distinct slots in range, no empty sequence.
Status check_batch(std::span<const SeqInput> batch, int n_slots);

}  // namespace duality
