// Forward pass of the Mamba-2 LM on the CPU (spec sections 4-5, 8):
//   h = Emb[tokens]; per layer: u = RMSNorm(residual += h); zxbcdt = u·W_inᵀ;
//   xBC = silu(conv1d(xBC_raw)); Δ = softplus(dt + dt_bias) clamped; y = SSD(x, Δ, A, B, C) + D·x;
//   h = GatedRMSNorm(y, z)·W_outᵀ;  logits = RMSNorm(residual + h)·W_headᵀ.
// A batched step packs its sequences into one set of rows without padding: norms and GEMMs run
// over all rows at once (batched decode is a GEMM, not B GEMVs); conv1d and the SSD run per
// sequence from its own state, so no state crosses a sequence boundary.
#include <algorithm>
#include <string>
#include <vector>

#include "model/cpu_model.h"
#include "ops/cpu/blas_core.h"
#include "ops/cpu/ops.h"

namespace duality {
namespace {

class CpuModel final : public Model {
  public:
    CpuModel(ModelConfig config, ModelWeights weights, int n_threads, int n_slots,
             int64_t sample_vocab)
        : config_(std::move(config)),
          weights_(std::move(weights)),
          n_threads_(n_threads),
          sample_vocab_(sample_vocab) {
        slots_.resize(static_cast<size_t>(n_slots));
        for (SequenceState& s : slots_) s = new_state();
    }

    const ModelConfig& config() const override { return config_; }

    Result<std::vector<float>> forward(std::span<const int32_t> tokens, SequenceState& state,
                                       LogitsMode mode) override {
        DUALITY_RETURN_IF_ERROR(check_state(state));
        DUALITY_RETURN_IF_ERROR(check_tokens(tokens));
        if (tokens.empty()) return std::vector<float>{};
        SequenceState* states[] = {&state};
        const Segment seg{tokens, 0};
        return forward_packed(std::span<const Segment>(&seg, 1), states, mode);
    }

    DeviceInfo device_info() const override {
        DeviceInfo info;
        info.name = "CPU (OpenBLAS " + cpu::blas_core() + ")";
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
        std::vector<Segment> segs;
        std::vector<SequenceState*> states;
        int64_t offset = 0;
        for (const SeqInput& in : batch) {
            DUALITY_RETURN_IF_ERROR(check_tokens(in.tokens));
            segs.push_back(Segment{in.tokens, offset});
            states.push_back(&slots_[static_cast<size_t>(in.slot)]);
            offset += static_cast<int64_t>(in.tokens.size());
        }
        return forward_packed(segs, states, LogitsMode::kLast);
    }

    Result<std::vector<int32_t>> step_sample(std::span<const SeqInput> batch,
                                             std::span<const SamplingParams> params,
                                             std::span<const uint64_t> draws) override {
        if (params.size() != batch.size() || draws.size() != batch.size())
            return invalid_argument("step_sample: one SamplingParams and draw number per sequence");
        DUALITY_ASSIGN_OR_RETURN(std::vector<float> logits, step(batch));
        std::vector<int32_t> ids(batch.size());
        const size_t V = static_cast<size_t>(config_.vocab_size);
        const size_t n = sample_vocab_ > 0 ? std::min(V, static_cast<size_t>(sample_vocab_)) : V;
        for (size_t i = 0; i < batch.size(); ++i)
            ids[i] = sampling::sample_row(std::span<const float>(logits.data() + i * V, n),
                                          params[i], draws[i]);
        return ids;
    }

  private:
    // One sequence of a packed batch: its tokens, at rows [offset, offset + tokens.size()).
    struct Segment {
        std::span<const int32_t> tokens;
        int64_t offset = 0;
    };

    // Runs the sequences of `segs` as one packed batch (no padding): row-wise ops and GEMMs over
    // all rows at once, conv1d and SSD per sequence from and into its own state. Returns the
    // logits of every row (kAll, one sequence only), of each sequence's last row (kLast), or none.
    Result<std::vector<float>> forward_packed(std::span<const Segment> segs,
                                              std::span<SequenceState* const> states,
                                              LogitsMode mode) {
        const ModelConfig& c = config_;
        const int64_t T = segs.back().offset + static_cast<int64_t>(segs.back().tokens.size());
        const int64_t D = c.d_model, E = c.d_inner, H = c.n_head, GN = c.n_group * c.d_state;
        const int64_t n_in = c.d_in_proj(), conv_dim = c.conv_dim();

        std::vector<int32_t> ids(T);  // {T}: the packed tokens
        for (const Segment& sg : segs)
            std::copy(sg.tokens.begin(), sg.tokens.end(), &ids[sg.offset]);
        std::vector<float> h(T * D);           // {T, d_model}: block output / embedding
        std::vector<float> residual(T * D);    // {T, d_model}: fp32 residual stream
        std::vector<float> u(T * D);           // {T, d_model}: normed block input
        std::vector<float> zxbcdt(T * n_in);   // {T, d_in_proj}: [z | xBC | dt]
        std::vector<float> xbc(T * conv_dim);  // {T, conv_dim}: conv + SiLU output [x | B | C]
        std::vector<float> dt(T * H);          // {T, n_head}: Δ
        std::vector<float> y(T * E);           // {T, d_inner}: SSD output
        std::vector<float> gated(T * E);       // {T, d_inner}: gated-norm output

        std::vector<size_t> singles;  // the one-token sequences (decode rows)
        for (size_t i = 0; i < segs.size(); ++i)
            if (segs[i].tokens.size() == 1) singles.push_back(i);
        const auto n_single = static_cast<int64_t>(singles.size());

        cpu::embedding(ids.data(), T, weights_.embedding.data(), D, h.data());
        for (int64_t layer = 0; layer < c.n_layer; ++layer) {
            const LayerWeights& w = weights_.layers[static_cast<size_t>(layer)];
            cpu::add_rms_norm(h.data(), residual.data(), w.norm.data(),
                              static_cast<float>(c.norm_eps), u.data(), T, D, layer == 0,
                              n_threads_);
            cpu::gemm(u.data(), D, w.in_proj.data(), bias(w.in_proj_bias), zxbcdt.data(), T, n_in,
                      D, n_threads_);
            cpu::dt_softplus(zxbcdt.data() + E + conv_dim, n_in, w.dt_bias.data(), c.dt_min,
                             c.dt_max, dt.data(), T, H);
            // conv1d and the SSD run per sequence, from and into its own state. A one-token
            // sequence (a decode row) is a small serial job: they run as one parallel loop, not
            // a parallel region each; longer sequences parallelize inside.
            const auto conv_of = [&](size_t i) {
                const int64_t t0 = segs[i].offset;
                Conv1dParams conv;
                conv.seqlen = static_cast<int64_t>(segs[i].tokens.size());
                conv.channels = conv_dim;
                conv.width = c.d_conv;
                conv.x = zxbcdt.data() + t0 * n_in + E;
                conv.x_stride = n_in;
                conv.weight = w.conv_weight.data();
                conv.bias = bias(w.conv_bias);
                conv.state = states[i]->conv_layer(layer);
                conv.out = xbc.data() + t0 * conv_dim;
                return conv;
            };
            const auto ssd_of = [&](size_t i) {
                const int64_t t0 = segs[i].offset;
                SsdParams ssd;
                ssd.seqlen = static_cast<int64_t>(segs[i].tokens.size());
                ssd.n_head = H;
                ssd.head_dim = c.head_dim;
                ssd.d_state = c.d_state;
                ssd.n_group = c.n_group;
                ssd.chunk_size = c.chunk_size;
                ssd.x = xbc.data() + t0 * conv_dim;
                ssd.x_stride = conv_dim;
                ssd.B = xbc.data() + t0 * conv_dim + E;
                ssd.C = xbc.data() + t0 * conv_dim + E + GN;
                ssd.bc_stride = conv_dim;
                ssd.dt = dt.data() + t0 * H;
                ssd.A = w.A.data();
                ssd.D = w.D.data();
                ssd.state = states[i]->ssm_layer(layer);
                ssd.y = y.data() + t0 * E;
                return ssd;
            };
            for (size_t i = 0; i < segs.size(); ++i) {
                if (segs[i].tokens.size() == 1) continue;  // (in singles)
                cpu::conv1d_causal(conv_of(i), n_threads_);
                cpu::ssd_chunked(ssd_of(i), n_threads_);
            }
            if (n_single == 1) {  // (the heads in parallel)
                cpu::conv1d_causal(conv_of(singles[0]), n_threads_);
                cpu::ssd_sequential(ssd_of(singles[0]), n_threads_);
            } else {
#pragma omp parallel for num_threads(n_threads_) schedule(static)
                for (int64_t k = 0; k < n_single; ++k) {
                    const size_t i = singles[static_cast<size_t>(k)];
                    cpu::conv1d_causal(conv_of(i), 1);
                    cpu::ssd_sequential(ssd_of(i), 1);  // the decode step
                }
            }
            cpu::gated_rms_norm(y.data(), zxbcdt.data(), n_in, w.gate_norm.data(),
                                static_cast<float>(c.norm_eps), gated.data(), T, E, E / c.n_group,
                                n_threads_);
            cpu::gemm(gated.data(), E, w.out_proj.data(), bias(w.out_proj_bias), h.data(), T, D, E,
                      n_threads_);
        }
        for (size_t i = 0; i < segs.size(); ++i)
            states[i]->n_tokens += static_cast<int64_t>(segs[i].tokens.size());

        if (mode == LogitsMode::kNone) return std::vector<float>{};
        // The rows whose logits are wanted: every row, or each sequence's last.
        std::vector<int64_t> wanted;
        if (mode == LogitsMode::kAll) {
            for (int64_t t = 0; t < T; ++t) wanted.push_back(t);
        } else {
            for (const Segment& sg : segs)
                wanted.push_back(sg.offset + static_cast<int64_t>(sg.tokens.size()) - 1);
        }
        const int64_t rows = static_cast<int64_t>(wanted.size());
        // Final residual add and norm, only for those rows.
        std::vector<float> last(rows * D);  // {rows, d_model}
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t d = 0; d < D; ++d)
                last[r * D + d] = residual[wanted[r] * D + d] + h[wanted[r] * D + d];
        cpu::rms_norm(last.data(), weights_.norm_f.data(), static_cast<float>(c.norm_eps), u.data(),
                      rows, D, n_threads_);
        std::vector<float> full(rows * c.vocab_padded);  // {rows, vocab_padded}
        cpu::gemm(u.data(), D, weights_.head(), nullptr, full.data(), rows, c.vocab_padded, D,
                  n_threads_);
        if (c.vocab_padded == c.vocab_size) return full;
        std::vector<float> logits(rows * c.vocab_size);  // {rows, vocab_size}: padding dropped
        for (int64_t r = 0; r < rows; ++r)
            std::copy_n(full.data() + r * c.vocab_padded, c.vocab_size,
                        logits.data() + r * c.vocab_size);
        return logits;
    }

    Status check_tokens(std::span<const int32_t> tokens) const {
        for (size_t i = 0; i < tokens.size(); ++i) {
            if (tokens[i] < 0 || tokens[i] >= config_.vocab_size)
                return invalid_argument("token id " + std::to_string(tokens[i]) + " at position " +
                                        std::to_string(i) + " is outside the vocabulary [0, " +
                                        std::to_string(config_.vocab_size) + ")");
        }
        return Status::ok();
    }

    static const float* bias(const HostBuffer& b) {
        return b.size() ? b.data() : nullptr;
    }

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
    int64_t sample_vocab_;              // step_sample draws ids below this (0: all)
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
                                      int n_slots, int64_t sample_vocab) {
    return std::make_unique<CpuModel>(std::move(config), std::move(weights), n_threads, n_slots,
                                      sample_vocab);
}

}  // namespace duality
