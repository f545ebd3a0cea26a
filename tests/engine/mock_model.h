// A Model without weights for scheduler tests: its state is a hash of the tokens a slot has
// consumed, and its "logits" put the largest value on a token derived from that hash. Outputs
// are a pure function of each sequence's own token history, so a test can predict them exactly
// and tell whether a state was restored, mixed up or lost. Every step is recorded.
#pragma once

#include <algorithm>
#include <atomic>
#include <mutex>
#include <vector>

#include "duality/model.h"

namespace duality::testing {

class MockModel final : public Model {
  public:
    static constexpr int64_t kVocab = 97;

    explicit MockModel(int n_slots) : slots_(static_cast<size_t>(n_slots), fresh()) {
        config_.vocab_size = kVocab;
        config_.vocab_padded = kVocab;
        config_.n_layer = 1;
    }

    // The state after consuming `tokens` from a fresh state, and the token it predicts.
    static SequenceState run(std::span<const int32_t> tokens) {
        SequenceState s = fresh();
        for (int32_t t : tokens) advance(s, t);
        return s;
    }
    static int32_t predict(const SequenceState& s) {
        return static_cast<int32_t>((static_cast<int64_t>(s.ssm[0]) * 7 + s.n_tokens) % kVocab);
    }
    // The greedy continuation of `prompt` by n tokens, computed without any engine.
    static std::vector<int32_t> continuation(std::vector<int32_t> prompt, int64_t n) {
        std::vector<int32_t> out;
        SequenceState s = run(prompt);
        for (int64_t i = 0; i < n; ++i) {
            const int32_t t = predict(s);
            out.push_back(t);
            advance(s, t);
        }
        return out;
    }

    const ModelConfig& config() const override { return config_; }
    SequenceState new_state() const override { return fresh(); }
    Result<std::vector<float>> forward(std::span<const int32_t> tokens, SequenceState& state,
                                       LogitsMode mode) override {
        std::vector<float> logits;
        for (int32_t t : tokens) {
            advance(state, t);
            if (mode == LogitsMode::kAll) {
                const std::vector<float> row = one_hot(predict(state));
                logits.insert(logits.end(), row.begin(), row.end());
            }
        }
        if (mode == LogitsMode::kLast && !tokens.empty()) logits = one_hot(predict(state));
        std::lock_guard lock(mu_);
        forward_tokens_ += static_cast<int64_t>(tokens.size());
        return logits;
    }
    // Tokens run through forward() (the default step_all_logits goes through it).
    int64_t forward_tokens() const {
        std::lock_guard lock(mu_);
        return forward_tokens_;
    }
    DeviceInfo device_info() const override { return {}; }
    int n_slots() const override { return static_cast<int>(slots_.size()); }
    Status reset_slot(int slot) override {
        slots_.at(static_cast<size_t>(slot)) = fresh();
        return Status::ok();
    }
    Status read_slot(int slot, SequenceState& out) const override {
        out = slots_.at(static_cast<size_t>(slot));
        return Status::ok();
    }
    Status write_slot(int slot, const SequenceState& s) override {
        slots_.at(static_cast<size_t>(slot)) = s;
        return Status::ok();
    }
    Status copy_slot(int from, int to) override {
        slots_.at(static_cast<size_t>(to)) = slots_.at(static_cast<size_t>(from));
        ++copies;
        return Status::ok();
    }

    Result<std::vector<float>> step(std::span<const SeqInput> batch) override {
        std::vector<int32_t> ids;
        if (Status s = run_batch(batch, &ids); !s.is_ok()) return s;
        std::vector<float> logits;
        for (int32_t id : ids) {
            std::vector<float> row = one_hot(id);
            logits.insert(logits.end(), row.begin(), row.end());
        }
        return logits;
    }
    Result<std::vector<int32_t>> step_sample(std::span<const SeqInput> batch,
                                             std::span<const SamplingParams>,
                                             std::span<const uint64_t>) override {
        std::vector<int32_t> ids;
        if (Status s = run_batch(batch, &ids); !s.is_ok()) return s;
        return ids;
    }

    // What the engine asked for.
    struct Step {
        std::vector<int> slots;
        std::vector<int64_t> lengths;
    };
    std::vector<Step> steps() const {
        std::lock_guard lock(mu_);
        return steps_;
    }
    int64_t tokens_consumed() const {
        std::lock_guard lock(mu_);
        return consumed_;
    }
    std::atomic<int> fail_next_steps{0};  // the next N steps fail (a device error)
    std::atomic<int> copies{0};

  private:
    static SequenceState fresh() {
        SequenceState s;
        s.ssm.assign(1, 0.0f);
        return s;
    }

  public:
    // The logits of a state whose prediction is `id`: 10 there, 5 on the next id, 0 elsewhere.
    static std::vector<float> one_hot(int32_t id) {
        std::vector<float> row(kVocab, 0.0f);
        row[static_cast<size_t>(id)] = 10.0f;
        row[static_cast<size_t>((id + 1) % kVocab)] = 5.0f;
        return row;
    }
    static void advance(SequenceState& s, int32_t t) {
        s.ssm[0] = static_cast<float>((static_cast<int64_t>(s.ssm[0]) * 31 + t + 1) % 65521);
        ++s.n_tokens;
    }

  private:
    Status run_batch(std::span<const SeqInput> batch, std::vector<int32_t>* ids) {
        std::lock_guard lock(mu_);
        if (fail_next_steps > 0) {
            --fail_next_steps;
            return Status(StatusCode::kInternal, "mock device error");
        }
        Step rec;
        for (const SeqInput& in : batch) {
            SequenceState& s = slots_.at(static_cast<size_t>(in.slot));
            for (int32_t t : in.tokens) advance(s, t);
            consumed_ += static_cast<int64_t>(in.tokens.size());
            ids->push_back(predict(s));
            rec.slots.push_back(in.slot);
            rec.lengths.push_back(static_cast<int64_t>(in.tokens.size()));
        }
        steps_.push_back(std::move(rec));
        return Status::ok();
    }

    ModelConfig config_;
    std::vector<SequenceState> slots_;
    mutable std::mutex mu_;
    std::vector<Step> steps_;
    int64_t consumed_ = 0, forward_tokens_ = 0;
};

}  // namespace duality::testing
