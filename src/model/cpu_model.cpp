// Forward pass of the Mamba-2 LM on the CPU (spec sections 4-5, 8):
//   h = Emb[tokens]; per layer: u = RMSNorm(residual += h); zxbcdt = u·W_inᵀ;
//   xBC = silu(conv1d(xBC_raw)); Δ = softplus(dt + dt_bias) clamped; y = SSD(x, Δ, A, B, C) + D·x;
//   h = GatedRMSNorm(y, z)·W_outᵀ;  logits = RMSNorm(residual + h)·W_headᵀ.
#include <algorithm>
#include <string>
#include <vector>

#include "model/cpu_model.h"
#include "ops/cpu/ops.h"

namespace duality {
namespace {

class CpuModel final : public Model {
public:
    CpuModel(ModelConfig config, ModelWeights weights, int n_threads, int n_slots)
        : config_(std::move(config)), weights_(std::move(weights)), n_threads_(n_threads) {
        slots_.resize(static_cast<size_t>(n_slots));
        for (SequenceState& s : slots_) s = new_state();
    }

    const ModelConfig& config() const override { return config_; }

    SequenceState new_state() const override {
        SequenceState s;
        s.n_layer = config_.n_layer;
        s.d_conv = config_.d_conv;
        s.conv_dim = config_.conv_dim();
        s.n_head = config_.n_head;
        s.head_dim = config_.head_dim;
        s.d_state = config_.d_state;
        s.conv.assign(static_cast<size_t>(s.n_layer * (s.d_conv - 1) * s.conv_dim), 0.0f);
        s.ssm.assign(static_cast<size_t>(s.n_layer * s.n_head * s.head_dim * s.d_state), 0.0f);
        return s;
    }

    Result<std::vector<float>> forward(std::span<const int32_t> tokens, SequenceState& state,
                                       LogitsMode mode) override {
        DUALITY_RETURN_IF_ERROR(check_state(state));
        for (size_t i = 0; i < tokens.size(); ++i) {
            if (tokens[i] < 0 || tokens[i] >= config_.vocab_size)
                return invalid_argument("token id " + std::to_string(tokens[i]) + " at position " +
                                        std::to_string(i) + " is outside the vocabulary [0, " +
                                        std::to_string(config_.vocab_size) + ")");
        }
        const int64_t T = static_cast<int64_t>(tokens.size());
        if (T == 0) return std::vector<float>{};
        const ModelConfig& c = config_;
        const int64_t D = c.d_model, E = c.d_inner, H = c.n_head, GN = c.n_group * c.d_state;
        const int64_t n_in = c.d_in_proj(), conv_dim = c.conv_dim();

        std::vector<float> h(T * D);          // {T, d_model}: block output / embedding
        std::vector<float> residual(T * D);   // {T, d_model}: fp32 residual stream
        std::vector<float> u(T * D);          // {T, d_model}: normed block input
        std::vector<float> zxbcdt(T * n_in);  // {T, d_in_proj}: [z | xBC | dt]
        std::vector<float> xbc(T * conv_dim); // {T, conv_dim}: conv + SiLU output [x | B | C]
        std::vector<float> dt(T * H);         // {T, n_head}: Δ
        std::vector<float> y(T * E);          // {T, d_inner}: SSD output
        std::vector<float> gated(T * E);      // {T, d_inner}: gated-norm output

        cpu::embedding(tokens.data(), T, weights_.embedding.data(), D, h.data());
        for (int64_t layer = 0; layer < c.n_layer; ++layer) {
            const LayerWeights& w = weights_.layers[static_cast<size_t>(layer)];
            cpu::add_rms_norm(h.data(), residual.data(), w.norm.data(),
                              static_cast<float>(c.norm_eps), u.data(), T, D, layer == 0,
                              n_threads_);
            cpu::gemm(u.data(), D, w.in_proj.data(), bias(w.in_proj_bias), zxbcdt.data(), T, n_in,
                      D);

            Conv1dParams conv;
            conv.seqlen = T;
            conv.channels = conv_dim;
            conv.width = c.d_conv;
            conv.x = zxbcdt.data() + E;
            conv.x_stride = n_in;
            conv.weight = w.conv_weight.data();
            conv.bias = bias(w.conv_bias);
            conv.state = state.conv_layer(layer);
            conv.out = xbc.data();
            cpu::conv1d_causal(conv, n_threads_);

            cpu::dt_softplus(zxbcdt.data() + E + conv_dim, n_in, w.dt_bias.data(), c.dt_min,
                             c.dt_max, dt.data(), T, H);

            SsdParams ssd;
            ssd.seqlen = T;
            ssd.n_head = H;
            ssd.head_dim = c.head_dim;
            ssd.d_state = c.d_state;
            ssd.n_group = c.n_group;
            ssd.chunk_size = c.chunk_size;
            ssd.x = xbc.data();
            ssd.x_stride = conv_dim;
            ssd.B = xbc.data() + E;
            ssd.C = xbc.data() + E + GN;
            ssd.bc_stride = conv_dim;
            ssd.dt = dt.data();
            ssd.A = w.A.data();
            ssd.D = w.D.data();
            ssd.state = state.ssm_layer(layer);
            ssd.y = y.data();
            if (T == 1) {
                cpu::ssd_sequential(ssd, n_threads_);  // the decode step
            } else {
                cpu::ssd_chunked(ssd, n_threads_);
            }

            cpu::gated_rms_norm(y.data(), zxbcdt.data(), n_in, w.gate_norm.data(),
                                static_cast<float>(c.norm_eps), gated.data(), T, E,
                                E / c.n_group, n_threads_);
            cpu::gemm(gated.data(), E, w.out_proj.data(), bias(w.out_proj_bias), h.data(), T, D,
                      E);
        }
        state.n_tokens += T;

        if (mode == LogitsMode::kNone) return std::vector<float>{};
        const int64_t first = mode == LogitsMode::kAll ? 0 : T - 1, rows = T - first;
        // Final residual add and norm, only for the rows whose logits are wanted.
        for (int64_t i = first * D; i < T * D; ++i) residual[i] += h[i];
        cpu::rms_norm(residual.data() + first * D, weights_.norm_f.data(),
                      static_cast<float>(c.norm_eps), u.data(), rows, D, n_threads_);
        std::vector<float> full(rows * c.vocab_padded);  // {rows, vocab_padded}
        cpu::gemm(u.data(), D, weights_.head(), nullptr, full.data(), rows, c.vocab_padded, D);
        if (c.vocab_padded == c.vocab_size) return full;
        std::vector<float> logits(rows * c.vocab_size);  // {rows, vocab_size}: padding dropped
        for (int64_t r = 0; r < rows; ++r)
            std::copy_n(full.data() + r * c.vocab_padded, c.vocab_size,
                        logits.data() + r * c.vocab_size);
        return logits;
    }

    DeviceInfo device_info() const override {
        DeviceInfo info;
        info.name = "CPU";
        info.weight_bytes = static_cast<int64_t>(weights_.bytes());
        for (const SequenceState& s : slots_)
            info.state_bytes += static_cast<int64_t>((s.conv.size() + s.ssm.size()) * 4);
        return info;
    }

    int n_slots() const override { return static_cast<int>(slots_.size()); }

    Status reset_slot(int slot) override {
        DUALITY_RETURN_IF_ERROR(check_slot(slot));
        slots_[static_cast<size_t>(slot)] = new_state();
        return Status::ok();
    }
    Status read_slot(int slot, SequenceState& out) const override {
        DUALITY_RETURN_IF_ERROR(check_slot(slot));
        out = slots_[static_cast<size_t>(slot)];
        return Status::ok();
    }
    Status write_slot(int slot, const SequenceState& state) override {
        DUALITY_RETURN_IF_ERROR(check_slot(slot));
        DUALITY_RETURN_IF_ERROR(check_state(state));
        slots_[static_cast<size_t>(slot)] = state;
        return Status::ok();
    }
    Status copy_slot(int from, int to) override {
        DUALITY_RETURN_IF_ERROR(check_slot(from));
        DUALITY_RETURN_IF_ERROR(check_slot(to));
        slots_[static_cast<size_t>(to)] = slots_[static_cast<size_t>(from)];
        return Status::ok();
    }

    Result<std::vector<float>> step(std::span<const SeqInput> batch) override {
        DUALITY_RETURN_IF_ERROR(check_batch(batch, n_slots()));
        std::vector<float> logits;  // {batch.size(), vocab_size}
        logits.reserve(batch.size() * static_cast<size_t>(config_.vocab_size));
        for (const SeqInput& in : batch) {
            DUALITY_ASSIGN_OR_RETURN(
                std::vector<float> row,
                forward(in.tokens, slots_[static_cast<size_t>(in.slot)], LogitsMode::kLast));
            logits.insert(logits.end(), row.begin(), row.end());
        }
        return logits;
    }

    Result<std::vector<int32_t>> step_sample(std::span<const SeqInput> batch,
                                             std::span<const SamplingParams> params,
                                             std::span<const uint64_t> draws) override {
        if (params.size() != batch.size() || draws.size() != batch.size())
            return invalid_argument("step_sample: one SamplingParams and draw number per sequence");
        DUALITY_ASSIGN_OR_RETURN(std::vector<float> logits, step(batch));
        std::vector<int32_t> ids(batch.size());
        const size_t V = static_cast<size_t>(config_.vocab_size);
        for (size_t i = 0; i < batch.size(); ++i)
            ids[i] = sampling::sample_row(std::span<const float>(logits.data() + i * V, V),
                                          params[i], draws[i]);
        return ids;
    }

private:
    static const float* bias(const HostBuffer& b) { return b.size() ? b.data() : nullptr; }

    Status check_state(const SequenceState& s) const {
        const ModelConfig& c = config_;
        if (s.n_layer != c.n_layer || s.d_conv != c.d_conv || s.conv_dim != c.conv_dim() ||
            s.n_head != c.n_head || s.head_dim != c.head_dim || s.d_state != c.d_state ||
            s.conv.size() != static_cast<size_t>(c.n_layer * (c.d_conv - 1) * c.conv_dim()) ||
            s.ssm.size() != static_cast<size_t>(c.n_layer * c.n_head * c.head_dim * c.d_state))
            return invalid_argument("sequence state does not belong to this model");
        return Status::ok();
    }

    Status check_slot(int slot) const {
        if (slot < 0 || slot >= n_slots())
            return invalid_argument("state slot " + std::to_string(slot) + " is outside [0, " +
                                    std::to_string(n_slots()) + ")");
        return Status::ok();
    }

    ModelConfig config_;
    ModelWeights weights_;
    int n_threads_;
    std::vector<SequenceState> slots_;  // {n_slots}: per-sequence state
};

}  // namespace

Status check_batch(std::span<const SeqInput> batch, int n_slots) {
    std::vector<bool> seen(static_cast<size_t>(n_slots), false);
    for (size_t i = 0; i < batch.size(); ++i) {
        const int slot = batch[i].slot;
        if (slot < 0 || slot >= n_slots)
            return invalid_argument("sequence " + std::to_string(i) + ": state slot " +
                                    std::to_string(slot) + " is outside [0, " +
                                    std::to_string(n_slots) + ")");
        if (seen[static_cast<size_t>(slot)])
            return invalid_argument("state slot " + std::to_string(slot) +
                                    " appears twice in one step");
        seen[static_cast<size_t>(slot)] = true;
        if (batch[i].tokens.empty())
            return invalid_argument("sequence " + std::to_string(i) + " of the step has no tokens");
    }
    return Status::ok();
}

std::unique_ptr<Model> make_cpu_model(ModelConfig config, ModelWeights weights, int n_threads,
                                      int n_slots) {
    return std::make_unique<CpuModel>(std::move(config), std::move(weights), n_threads, n_slots);
}

}  // namespace duality
