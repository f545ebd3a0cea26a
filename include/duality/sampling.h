// Token sampling: penalties, temperature, top-k, top-p, min-p and a seeded draw.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "duality/status.h"

namespace duality {

inline constexpr int kMaxLogitBias = 300;         // entries of SamplingParams::logit_bias
inline constexpr float kLogitBiasLimit = 100.0f;  // |bias| at most this (OpenAI's range)

// Temperatures below this sample greedily: argmax is the limit of softmax(logits / T) as T → 0,
// and 1 / T stays finite (a temperature of 1e-40 made it infinite, and the softmax NaN).
inline constexpr float kGreedyBelowTemperature = 1e-6f;
// The smallest repetition penalty: dividing a logit by less could overflow it.
inline constexpr float kMinRepetitionPenalty = 0.01f;

struct SamplingParams {
    bool greedy = false;              // argmax (also when temperature < kGreedyBelowTemperature)
    float temperature = 1.0f;         // divides the logits; 0 (or below 1e-6) means greedy
    int top_k = 0;                    // keep the k most likely tokens; 0 = off
    float top_p = 1.0f;               // nucleus: smallest set with probability mass >= top_p
    float min_p = 0.0f;               // drop tokens with p < min_p * p_max
    float repetition_penalty = 1.0f;  // CTRL-style, over prompt and output tokens
    float presence_penalty = 0.0f;    // OpenAI-style, over output tokens
    float frequency_penalty = 0.0f;   // OpenAI-style, over output tokens
    // OpenAI's logit_bias: added to these ids' logits before the penalties; at most
    // kMaxLogitBias entries, each in [-kLogitBiasLimit, kLogitBiasLimit].
    std::vector<std::pair<int32_t, float>> logit_bias;
    uint64_t seed = 0;

    // Names the first out-of-range field ("top_p must be in (0, 1]", ...).
    Status validate() const;
    // Whether sampling takes the argmax: greedy, or a temperature below kGreedyBelowTemperature.
    bool is_greedy() const { return greedy || temperature < kGreedyBelowTemperature; }
    // Whether sampling changes the logits on the host first: a penalty (which reads the
    // sequence's history) or a logit bias.
    bool has_penalties() const {
        return repetition_penalty != 1.0f || presence_penalty != 0.0f ||
               frequency_penalty != 0.0f || !logit_bias.empty();
    }
};

// The model's log-probabilities at one position: log_softmax of the raw logits (before penalties
// and temperature, as vLLM's default), over the ids that may be sampled.
inline constexpr int kMaxTopLogprobs = 20;      // the most alternatives a request may ask for
inline constexpr float kMinLogprob = -9999.0f;  // log-probabilities are floored here (as OpenAI's)
struct TokenLogprobs {
    int32_t id = -1;                             // the token chosen (generated) or given (prompt)
    float logprob = 0;                           // its log-probability
    std::vector<std::pair<int32_t, float>> top;  // the most likely ids, most likely first (ties:
                                                 // smaller id first)
};

// Applies the sampling chain to one row of logits. One Sampler per sequence: its random stream is
// a pure function of the seed, so the same seed and inputs give the same tokens.
class Sampler {
  public:
    explicit Sampler(const SamplingParams& params);

    // `logits` holds exactly the ids that may be sampled (padded vocabulary rows already cut
    // off); it is modified in place. `prompt` and `output` are the sequence's tokens so far.
    int32_t sample(std::span<float> logits, std::span<const int32_t> prompt,
                   std::span<const int32_t> output);

    const SamplingParams& params() const { return params_; }

  private:
    double uniform();  // [0, 1), platform-independent

    SamplingParams params_;
    std::mt19937_64 rng_;
    std::vector<int32_t> order_;  // scratch: candidate ids
    std::vector<float> probs_;    // scratch
};

// The steps of the chain, exposed for tests.
namespace sampling {
void apply_penalties(std::span<float> logits, std::span<const int32_t> prompt,
                     std::span<const int32_t> output, const SamplingParams& p);
// Candidate ids after temperature, top-k, top-p and min-p, with their renormalized
// probabilities, most likely first.
void filter(std::span<const float> logits, const SamplingParams& p, std::vector<int32_t>* ids,
            std::vector<float>* probs);
int32_t argmax(std::span<const float> logits);

// Draw number `draw` of the stream of `seed`: uniform in [0, 1), a pure function of both
// (splitmix64), shared by the CPU and GPU samplers.
double draw_uniform(uint64_t seed, uint64_t draw);

// One stateless draw from a row of logits (no penalties): argmax when greedy, else the chain of
// filter() and draw_uniform(p.seed, draw). What Model::step_sample does per row.
int32_t sample_row(std::span<const float> logits, const SamplingParams& p, uint64_t draw);

// log_softmax(logits)[id] and the n_top most likely ids (0 <= n_top <= kMaxTopLogprobs), in
// double precision (log-sum-exp with the max subtracted), floored at kMinLogprob (NaN logits count
// as -inf); `logits` holds the ids that may be sampled, and id must be one of them.
TokenLogprobs logprobs(std::span<const float> logits, int32_t id, int n_top);
}  // namespace sampling

}  // namespace duality
