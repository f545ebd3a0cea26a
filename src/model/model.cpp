// Model::load and Model::random: read or draw the weights, then hand them to the backend the
// options name. This is the one place that chooses a backend.
#include <omp.h>

#include <vector>

#include "duality/model.h"
#include "duality/sampling.h"
#include "loader/tensor_store.h"
#include "model/backends.h"
#include "model/cpu_model.h"
#include "model/weights.h"
#include "ops/cpu/blas_core.h"

namespace duality {
namespace {

Status check_options(const LoadOptions& o) {
    if (o.n_slots < 1 || o.n_slots > 65536)
        return invalid_argument("n_slots = " + std::to_string(o.n_slots) +
                                " is outside [1, 65536]");
    if (o.max_tokens < 1) return invalid_argument("max_tokens must be positive");
    if (!dtype_is_float(o.dtype) || !dtype_is_float(o.state_dtype))
        return invalid_argument("dtype and state_dtype must be f32, f16 or bf16");
    return Status::ok();
}

Result<std::unique_ptr<Model>> make(ModelConfig config, ModelWeights* weights, uint64_t seed,
                                    const LoadOptions& o) {
    if (o.device == Device::kCuda) return make_cuda_model(std::move(config), weights, seed, o);
    const int n_threads = o.n_threads > 0 ? o.n_threads : omp_get_max_threads();
    cpu::set_blas_threads(n_threads);  // (process-wide: the last CPU model made sets it)
    ModelWeights w = weights ? std::move(*weights) : random_weights(config, seed);
    return make_cpu_model(std::move(config), std::move(w), n_threads, o.n_slots, o.sample_vocab);
}

}  // namespace

int cuda_device_count() {
    return cuda_devices();
}

Result<std::unique_ptr<Model>> Model::load(const std::filesystem::path& dir,
                                           const LoadOptions& options) {
    DUALITY_RETURN_IF_ERROR(check_options(options));
    DUALITY_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(dir));
    DUALITY_ASSIGN_OR_RETURN(TensorStore store, load_tensor_store(dir));
    DUALITY_ASSIGN_OR_RETURN(ModelWeights weights, load_weights(store, config));
    return make(std::move(config), &weights, 0, options);
}

Result<std::unique_ptr<Model>> Model::random(const ModelConfig& config, const LoadOptions& options,
                                             uint64_t seed) {
    DUALITY_RETURN_IF_ERROR(check_options(options));
    return make(config, nullptr, seed, options);
}

SequenceState Model::new_state() const {
    const ModelConfig& c = config();
    SequenceState s;
    s.n_layer = c.n_layer;
    s.d_conv = c.d_conv;
    s.conv_dim = c.conv_dim();
    s.n_head = c.n_head;
    s.head_dim = c.head_dim;
    s.d_state = c.d_state;
    s.conv.assign(static_cast<size_t>(s.n_layer * (s.d_conv - 1) * s.conv_dim), 0.0f);
    s.ssm.assign(static_cast<size_t>(s.n_layer * s.n_head * s.head_dim * s.d_state), 0.0f);
    return s;
}

Status Model::check_greedy_steps(std::span<const SeqInput> batch, int n_steps) {
    if (n_steps < 0) return invalid_argument("decode_greedy: n_steps is negative");
    for (const SeqInput& in : batch)
        if (in.tokens.size() != 1)
            return invalid_argument("decode_greedy: every sequence takes exactly one token");
    return Status::ok();
}

Result<std::vector<int32_t>> Model::decode_greedy(std::span<const SeqInput> batch, int n_steps) {
    DUALITY_RETURN_IF_ERROR(check_greedy_steps(batch, n_steps));
    const size_t n = batch.size();
    SamplingParams greedy;
    greedy.greedy = true;
    const std::vector<SamplingParams> params(n, greedy);
    const std::vector<uint64_t> draws(n, 0);  // (argmax draws nothing)
    std::vector<int32_t> ids;                 // {n_steps, n}
    ids.reserve(static_cast<size_t>(n_steps) * n);
    std::vector<SeqInput> in(batch.begin(), batch.end());
    std::vector<int32_t> next;  // the ids the next step feeds
    for (int k = 0; k < n_steps; ++k) {
        DUALITY_ASSIGN_OR_RETURN(next, step_sample(in, params, draws));
        ids.insert(ids.end(), next.begin(), next.end());
        for (size_t i = 0; i < n; ++i) in[i].tokens = std::span<const int32_t>(&next[i], 1);
    }
    return ids;
}

Result<std::vector<float>> Model::step_all_logits(int slot, std::span<const int32_t> tokens) {
    if (tokens.empty()) return invalid_argument("step_all_logits: no tokens");
    SequenceState state;
    DUALITY_RETURN_IF_ERROR(read_slot(slot, state));
    DUALITY_ASSIGN_OR_RETURN(std::vector<float> logits, forward(tokens, state, LogitsMode::kAll));
    DUALITY_RETURN_IF_ERROR(write_slot(slot, state));
    return logits;
}

Status Model::start_step_sample(std::span<const SeqInput> batch,
                                std::span<const SamplingParams> params,
                                std::span<const uint64_t> draws) {
    if (started_) return invalid_argument("start_step_sample: a step is already started");
    started_ = step_sample(batch, params, draws);
    return Status::ok();
}

Result<std::vector<int32_t>> Model::finish_step_sample() {
    if (!started_) return invalid_argument("finish_step_sample: no step was started");
    Result<std::vector<int32_t>> ids = std::move(*started_);
    started_.reset();
    return ids;
}

}  // namespace duality
