// The CPU sampling chain: penalties → (greedy | temperature → top-k → top-p → min-p → draw).
// The order of the truncations follows Hugging Face's logits warpers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <unordered_map>

#include "duality/sampling.h"

namespace duality {

Status SamplingParams::validate() const {
    auto bad = [](const std::string& m) { return invalid_argument(m); };
    if (!(temperature >= 0.0f) || !std::isfinite(temperature))
        return bad("temperature must be >= 0, got " + std::to_string(temperature));
    if (top_k < 0) return bad("top_k must be >= 0, got " + std::to_string(top_k));
    if (!(top_p > 0.0f && top_p <= 1.0f))
        return bad("top_p must be in (0, 1], got " + std::to_string(top_p));
    if (!(min_p >= 0.0f && min_p <= 1.0f))
        return bad("min_p must be in [0, 1], got " + std::to_string(min_p));
    if (!(repetition_penalty >= kMinRepetitionPenalty) || !std::isfinite(repetition_penalty)) {
        char lo[32];  // as the server writes it (%g): 0.01
        std::snprintf(lo, sizeof lo, "%g", static_cast<double>(kMinRepetitionPenalty));
        return bad("repetition_penalty must be >= " + std::string(lo) + ", got " +
                   std::to_string(repetition_penalty));
    }
    if (!(std::fabs(presence_penalty) <= 2.0f))
        return bad("presence_penalty must be in [-2, 2], got " + std::to_string(presence_penalty));
    if (!(std::fabs(frequency_penalty) <= 2.0f))
        return bad("frequency_penalty must be in [-2, 2], got " +
                   std::to_string(frequency_penalty));
    if (logit_bias.size() > static_cast<size_t>(kMaxLogitBias))
        return bad("logit_bias may hold at most " + std::to_string(kMaxLogitBias) +
                   " entries, got " + std::to_string(logit_bias.size()));
    for (const auto& [id, bias] : logit_bias) {
        if (id < 0) return bad("logit_bias: token id " + std::to_string(id) + " is negative");
        if (!(std::fabs(bias) <= kLogitBiasLimit))
            return bad("logit_bias[" + std::to_string(id) + "] must be in [-100, 100], got " +
                       std::to_string(bias));
    }
    return Status::ok();
}

namespace sampling {

int32_t argmax(std::span<const float> logits) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

void apply_penalties(std::span<float> logits, std::span<const int32_t> prompt,
                     std::span<const int32_t> output, const SamplingParams& p) {
    const auto n = static_cast<int32_t>(logits.size());
    for (const auto& [id, bias] : p.logit_bias)  // ids past the row (never sampled) are ignored
        if (id >= 0 && id < n) logits[static_cast<size_t>(id)] += bias;
    if (p.repetition_penalty != 1.0f) {
        std::vector<bool> seen(logits.size(), false);
        for (auto tokens : {prompt, output}) {
            for (int32_t t : tokens) {
                if (t < 0 || t >= n || seen[t]) continue;
                seen[t] = true;
                float& l = logits[t];
                l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
            }
        }
    }
    if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
        std::unordered_map<int32_t, int> count;
        for (int32_t t : output)
            if (t >= 0 && t < n) ++count[t];
        for (const auto& [t, c] : count)
            logits[t] -= p.presence_penalty + p.frequency_penalty * static_cast<float>(c);
    }
}

void filter(std::span<const float> logits, const SamplingParams& p, std::vector<int32_t>* ids,
            std::vector<float>* probs) {
    const float inv_t = 1.0f / p.temperature;
    ids->resize(logits.size());
    std::iota(ids->begin(), ids->end(), 0);
    auto by_logit = [&](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    size_t keep = ids->size();
    if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep) {
        keep = static_cast<size_t>(p.top_k);
        std::partial_sort(ids->begin(), ids->begin() + static_cast<ptrdiff_t>(keep), ids->end(),
                          by_logit);
    } else {
        std::sort(ids->begin(), ids->end(), by_logit);
    }
    ids->resize(keep);
    // Softmax over the survivors (max-subtracted, in double).
    probs->resize(keep);
    const double top = logits[(*ids)[0]] * static_cast<double>(inv_t);
    double sum = 0;
    for (size_t i = 0; i < keep; ++i) {
        const double e = std::exp(logits[(*ids)[i]] * static_cast<double>(inv_t) - top);
        (*probs)[i] = static_cast<float>(e);
        sum += e;
    }
    for (auto& v : *probs) v = static_cast<float>(v / sum);
    // top-p: the smallest prefix whose mass reaches top_p (at least one token).
    if (p.top_p < 1.0f) {
        double mass = 0;
        size_t n = 0;
        while (n < keep) {
            mass += (*probs)[n++];
            if (mass >= p.top_p) break;
        }
        keep = n;
    }
    // min-p: tokens at least min_p times as likely as the most likely one.
    if (p.min_p > 0.0f) {
        const float floor = p.min_p * (*probs)[0];
        size_t n = 1;
        while (n < keep && (*probs)[n] >= floor) ++n;
        keep = n;
    }
    ids->resize(keep);
    probs->resize(keep);
    double kept = 0;
    for (float v : *probs) kept += v;
    for (auto& v : *probs) v = static_cast<float>(v / kept);
}

double draw_uniform(uint64_t seed, uint64_t draw) {
    uint64_t z = seed + (draw + 1) * 0x9e3779b97f4a7c15ull;  // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;
}

int32_t sample_row(std::span<const float> logits, const SamplingParams& p, uint64_t draw) {
    if (p.is_greedy()) return argmax(logits);
    std::vector<int32_t> ids;
    std::vector<float> probs;
    filter(logits, p, &ids, &probs);
    const double u = draw_uniform(p.seed, draw);
    double acc = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
        acc += probs[i];
        if (u < acc) return ids[i];
    }
    return ids.back();
}

TokenLogprobs logprobs(std::span<const float> logits, int32_t id, int n_top) {
    // NaN counts as -inf (a broken row must not break the sort's ordering), and values are
    // floored at kMinLogprob so that JSON can carry them (it has no infinity).
    auto value = [&](size_t i) {
        const float l = logits[i];
        return std::isnan(l) ? -INFINITY : static_cast<double>(l);
    };
    auto finite = [](double v) { return static_cast<float>(std::max(v, double{kMinLogprob})); };
    const size_t n = logits.size();
    double top = -INFINITY;
    for (size_t i = 0; i < n; ++i) top = std::max(top, value(i));
    double sum = 0;
    if (std::isfinite(top))
        for (size_t i = 0; i < n; ++i) sum += std::exp(value(i) - top);
    const double lse = std::isfinite(top) ? top + std::log(sum) : top;
    auto logprob = [&](size_t i) {
        return std::isfinite(lse) ? finite(value(i) - lse) : kMinLogprob;
    };
    TokenLogprobs out;
    out.id = id;
    out.logprob = logprob(static_cast<size_t>(id));
    const size_t k = std::min(n, static_cast<size_t>(std::clamp(n_top, 0, kMaxTopLogprobs)));
    if (k == 0) return out;
    std::vector<int32_t> ids(n);
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(k), ids.end(),
                      [&](int32_t a, int32_t b) {
                          const double va = value(static_cast<size_t>(a));
                          const double vb = value(static_cast<size_t>(b));
                          return va > vb || (va == vb && a < b);
                      });
    out.top.reserve(k);
    for (size_t i = 0; i < k; ++i)
        out.top.emplace_back(ids[i], logprob(static_cast<size_t>(ids[i])));
    return out;
}

}  // namespace sampling

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

double Sampler::uniform() {
    return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> prompt,
                        std::span<const int32_t> output) {
    sampling::apply_penalties(logits, prompt, output, params_);
    if (params_.is_greedy()) return sampling::argmax(logits);
    sampling::filter(logits, params_, &order_, &probs_);
    const double u = uniform();
    double acc = 0;
    for (size_t i = 0; i < order_.size(); ++i) {
        acc += probs_[i];
        if (u < acc) return order_[i];
    }
    return order_.back();  // rounding left u just above the total mass
}

}  // namespace duality
