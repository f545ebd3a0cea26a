// The model's weights by role, converted once to f32 for the CPU backend, with every name,
// shape and dtype checked against the config.
#pragma once

#include <vector>

#include "core/tensor.h"
#include "duality/config.h"
#include "loader/tensor_store.h"

namespace duality {

struct LayerWeights {
    HostBuffer norm;           // {d_model}: pre-mixer RMSNorm
    HostBuffer in_proj;        // {d_in_proj, d_model}: rows [z | x | B | C | dt]
    HostBuffer in_proj_bias;   // {d_in_proj} or empty
    HostBuffer conv_weight;    // {conv_dim, d_conv}
    HostBuffer conv_bias;      // {conv_dim} or empty
    HostBuffer dt_bias;        // {n_head}
    HostBuffer A;              // {n_head}: -exp(A_log)
    HostBuffer D;              // {n_head}
    HostBuffer gate_norm;      // {d_inner}: gated RMSNorm weight
    HostBuffer out_proj;       // {d_model, d_inner}
    HostBuffer out_proj_bias;  // {d_model} or empty
};

struct ModelWeights {
    HostBuffer embedding;  // {vocab_padded, d_model}
    std::vector<LayerWeights> layers;
    HostBuffer norm_f;     // {d_model}
    HostBuffer lm_head;    // {vocab_padded, d_model}; empty when tied to the embedding

    const float* head() const { return lm_head.size() ? lm_head.data() : embedding.data(); }
};

// Resolves names (HF `backbone.embeddings.`, state-spaces `backbone.embedding.`, an optional
// leading `model.`), checks every tensor, and rejects missing, misshapen and unexpected ones.
Result<ModelWeights> load_weights(const TensorStore& store, const ModelConfig& config);

}  // namespace duality
