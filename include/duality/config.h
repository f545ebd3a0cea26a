// The geometry of a Mamba-2 language model, read from either checkpoint format
// (Hugging Face `Mamba2ForCausalLM` or original `state-spaces/mamba2-*`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "duality/status.h"

namespace duality {

enum class CheckpointFormat { kHuggingFace, kStateSpaces };

struct ModelConfig {
    CheckpointFormat format = CheckpointFormat::kHuggingFace;
    int64_t d_model = 0;      // D (HF hidden_size)
    int64_t n_layer = 0;      // HF num_hidden_layers
    int64_t d_inner = 0;      // E = expand * d_model
    int64_t n_head = 0;       // H = d_inner / head_dim
    int64_t head_dim = 0;     // P
    int64_t d_state = 0;      // N
    int64_t n_group = 1;      // G; head h reads B/C group h / (H/G)
    int64_t d_conv = 4;       // W
    int64_t chunk_size = 256; // Q
    int64_t vocab_size = 0;   // real vocabulary (rows that may be exposed or sampled)
    int64_t vocab_padded = 0; // rows of the embedding / LM head (>= vocab_size)
    bool tie_embeddings = true;
    bool proj_bias = false;   // in_proj / out_proj carry a bias
    bool conv_bias = true;
    bool residual_in_fp32 = true;
    double norm_eps = 1e-5;   // block, final and gated RMSNorm
    float dt_min = 0.0f;      // dt_limit clamp applied to softplus(dt + dt_bias) in prefill
    float dt_max = 0.0f;      // +inf when unlimited
    int64_t eos_token_id = -1;
    int64_t bos_token_id = -1;

    int64_t conv_dim() const { return d_inner + 2 * n_group * d_state; }
    int64_t d_in_proj() const { return 2 * d_inner + 2 * n_group * d_state + n_head; }
    int64_t heads_per_group() const { return n_head / n_group; }
};

// Reads `<dir>/config.json`, detects its format, validates every derived size and returns the
// geometry. Errors name the file and the key.
Result<ModelConfig> load_model_config(const std::filesystem::path& dir);

// The shapes of the state-spaces checkpoints (spec section 2): "mamba2-130m", "mamba2-370m",
// "mamba2-780m", "mamba2-1.3b", "mamba2-2.7b" (also without the "mamba2-" prefix), and
// "codestral-7b" (Mamba-Codestral-7B-v0.1: n_group 8, untied head).
Result<ModelConfig> preset_config(const std::string& name);

// Parses config text (`source` names it in error messages).
Result<ModelConfig> parse_model_config(const std::string& json_text, const std::string& source);

}  // namespace duality
