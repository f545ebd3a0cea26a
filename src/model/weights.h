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
    size_t bytes() const;  // all f32 values held
};

// Resolves names (HF `backbone.embeddings.`, state-spaces `backbone.embedding.`, an optional
// leading `model.`), checks every tensor, and rejects missing, misshapen and unexpected ones.
Result<ModelWeights> load_weights(const TensorStore& store, const ModelConfig& config);

// How Model::random draws each kind of weight: uniform in [lo, hi) (lo == hi: a constant). The
// CPU and CUDA backends both use these ranges and uniform_hash(), so a random model is the same
// model on every backend.
struct RandomRange {
    float lo, hi;
};
struct RandomInit {
    RandomRange embedding, in_proj, out_proj, lm_head, conv_weight, conv_bias, dt_bias, A_log, D,
        norm, proj_bias;
    static RandomInit for_config(const ModelConfig& c);
};

// Element `index` of the tensor with seed `seed`: uniform in [0, 1) (splitmix64, 24 bits).
inline float uniform_hash(uint64_t seed, uint64_t index) {
    uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<float>(z >> 40) * 0x1.0p-24f;
}

// Seeded random f32 weights for `config` (tensor i of the model uses seed + i).
ModelWeights random_weights(const ModelConfig& config, uint64_t seed);

}  // namespace duality
