// A loaded Mamba-2 language model and the per-sequence recurrent state it advances.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "duality/config.h"
#include "duality/status.h"

namespace duality {

// The recurrent state of one sequence: everything the model needs to continue it.
struct SequenceState {
    int64_t n_layer = 0, d_conv = 0, conv_dim = 0, n_head = 0, head_dim = 0, d_state = 0;
    std::vector<float> conv;  // {n_layer, d_conv - 1, conv_dim}: last pre-conv xBC rows, oldest first
    std::vector<float> ssm;   // {n_layer, n_head, head_dim, d_state}
    int64_t n_tokens = 0;     // tokens consumed so far

    float* conv_layer(int64_t layer) { return conv.data() + layer * (d_conv - 1) * conv_dim; }
    float* ssm_layer(int64_t layer) { return ssm.data() + layer * n_head * head_dim * d_state; }
    const float* conv_layer(int64_t layer) const {
        return conv.data() + layer * (d_conv - 1) * conv_dim;
    }
    const float* ssm_layer(int64_t layer) const {
        return ssm.data() + layer * n_head * head_dim * d_state;
    }
};

// Which rows of logits a forward call returns.
enum class LogitsMode { kNone, kLast, kAll };

struct LoadOptions {
    int n_threads = 0;  // 0: all hardware threads
};

class Model {
public:
    virtual ~Model() = default;

    // Loads a Hugging Face or state-spaces checkpoint folder. Every malformed or inconsistent
    // input gives a Status naming the file and the field.
    static Result<std::unique_ptr<Model>> load(const std::filesystem::path& dir,
                                               const LoadOptions& options = {});

    virtual const ModelConfig& config() const = 0;

    // A zero state: the start of a new sequence.
    virtual SequenceState new_state() const = 0;

    // Runs `tokens` through the model from `state`, which it advances. Multi-token calls use the
    // chunked SSD; single-token calls use the recurrent decode step. The returned logits are
    // row-major {rows, vocab_size} with rows = 0, 1 or tokens.size() (see LogitsMode); padded
    // vocabulary rows are never returned.
    virtual Result<std::vector<float>> forward(std::span<const int32_t> tokens,
                                               SequenceState& state, LogitsMode mode) = 0;
};

}  // namespace duality
