#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "duality/sampling.h"

namespace duality {
namespace {

// Logits whose softmax (temperature 1) is exactly `probs`.
std::vector<float> logits_for(const std::vector<double>& probs) {
    std::vector<float> l;
    for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
    return l;
}

std::vector<int32_t> kept(const std::vector<float>& logits, const SamplingParams& p) {
    std::vector<int32_t> ids;
    std::vector<float> probs;
    sampling::filter(logits, p, &ids, &probs);
    double sum = 0;
    for (float v : probs) sum += v;
    EXPECT_NEAR(sum, 1.0, 1e-6);
    std::sort(ids.begin(), ids.end());
    return ids;
}

const std::vector<double> kProbs = {0.05, 0.40, 0.10, 0.25, 0.20};  // order: 1, 3, 4, 2, 0

TEST(Sampling, TopKKeepsTheKMostLikely) {
    SamplingParams p;
    p.top_k = 2;
    EXPECT_EQ(kept(logits_for(kProbs), p), (std::vector<int32_t>{1, 3}));
    p.top_k = 10;  // larger than the vocabulary: everything
    EXPECT_EQ(kept(logits_for(kProbs), p).size(), 5u);
}

TEST(Sampling, TopPKeepsTheSmallestNucleus) {
    SamplingParams p;
    p.top_p = 0.65f;  // 0.40 + 0.25 = 0.65 reaches it
    EXPECT_EQ(kept(logits_for(kProbs), p), (std::vector<int32_t>{1, 3}));
    p.top_p = 0.66f;  // needs the third token (0.20)
    EXPECT_EQ(kept(logits_for(kProbs), p), (std::vector<int32_t>{1, 3, 4}));
    p.top_p = 0.01f;  // always at least one
    EXPECT_EQ(kept(logits_for(kProbs), p), (std::vector<int32_t>{1}));
}

TEST(Sampling, MinPKeepsTokensAboveAFractionOfTheMax) {
    SamplingParams p;
    p.min_p = 0.5f;  // p >= 0.20: tokens 1 (0.40), 3 (0.25), 4 (0.20)
    EXPECT_EQ(kept(logits_for(kProbs), p), (std::vector<int32_t>{1, 3, 4}));
    p.min_p = 0.51f;
    EXPECT_EQ(kept(logits_for(kProbs), p), (std::vector<int32_t>{1, 3}));
}

TEST(Sampling, TemperatureSharpensBeforeTruncation) {
    SamplingParams p;
    p.temperature = 0.5f;  // probs ∝ p²: 0.16, 0.0625, 0.04, 0.01, 0.0025 → token 1 has 0.58
    p.top_p = 0.55f;
    EXPECT_EQ(kept(logits_for(kProbs), p), (std::vector<int32_t>{1}));
}

TEST(Sampling, PenaltiesChangeExactlyThePenalizedLogits) {
    const std::vector<float> base = {2.0f, -2.0f, 1.0f, 0.5f, -1.0f};
    SamplingParams p;
    p.repetition_penalty = 2.0f;
    std::vector<float> l = base;
    const std::vector<int32_t> prompt = {0, 1}, output = {3, 3, 1};
    sampling::apply_penalties(l, prompt, output, p);
    EXPECT_EQ(l, (std::vector<float>{1.0f, -4.0f, 1.0f, 0.25f, -1.0f}));

    SamplingParams q;
    q.presence_penalty = 0.5f;
    q.frequency_penalty = 0.25f;
    l = base;
    sampling::apply_penalties(l, prompt, output, q);
    // Only output tokens: 3 (twice) and 1 (once). The prompt-only token 0 is untouched.
    EXPECT_EQ(l, (std::vector<float>{2.0f, -2.0f - 0.75f, 1.0f, 0.5f - 1.0f, -1.0f}));
}

TEST(Sampling, GreedyIsArgmaxAfterPenalties) {
    SamplingParams p;
    p.greedy = true;
    p.repetition_penalty = 4.0f;
    Sampler s(p);
    std::vector<float> l = {3.0f, 2.0f, 1.0f};
    const std::vector<int32_t> prompt = {0};
    EXPECT_EQ(s.sample(l, prompt, {}), 1);  // 3/4 < 2
    SamplingParams t0;
    t0.temperature = 0.0f;
    Sampler s0(t0);
    std::vector<float> l2 = {0.0f, 5.0f, 1.0f};
    EXPECT_EQ(s0.sample(l2, {}, {}), 1);
}

// A temperature so small that 1 / T is infinite (1e-40) made the softmax NaN and the draw pick the
// least likely token; below kGreedyBelowTemperature sampling is the argmax, its T → 0 limit.
TEST(Sampling, TinyTemperaturesAreGreedy) {
    for (float t : {1e-40f, 1e-20f, 5e-7f}) {
        SamplingParams p;
        p.temperature = t;
        p.seed = 7;
        ASSERT_TRUE(p.validate().is_ok()) << t;
        EXPECT_TRUE(p.is_greedy()) << t;
        Sampler s(p);
        for (int i = 0; i < 20; ++i) {
            std::vector<float> l = {0.0f, 5.0f, 1.0f, 4.999f};
            EXPECT_EQ(s.sample(l, {}, {}), 1) << t;
        }
    }
    SamplingParams warm;
    warm.temperature = 1e-6f;
    EXPECT_FALSE(warm.is_greedy());
}

// has_penalties: what the engine and `duality generate` test before sampling on the device.
TEST(Sampling, HasPenaltiesSeesEachPenalty) {
    EXPECT_FALSE(SamplingParams{}.has_penalties());
    SamplingParams rep, presence, frequency;
    rep.repetition_penalty = 1.1f;
    presence.presence_penalty = 0.5f;
    frequency.frequency_penalty = -0.5f;
    EXPECT_TRUE(rep.has_penalties());
    EXPECT_TRUE(presence.has_penalties());
    EXPECT_TRUE(frequency.has_penalties());
}

TEST(Sampling, SameSeedSameTokensAndTheDistributionIsRight) {
    SamplingParams p;
    p.seed = 1234;
    auto draw = [&](uint64_t seed, int n) {
        SamplingParams q = p;
        q.seed = seed;
        Sampler s(q);
        std::vector<int32_t> out;
        for (int i = 0; i < n; ++i) {
            std::vector<float> l = logits_for(kProbs);
            out.push_back(s.sample(l, {}, {}));
        }
        return out;
    };
    EXPECT_EQ(draw(1234, 200), draw(1234, 200));
    EXPECT_NE(draw(1234, 200), draw(1235, 200));
    std::map<int32_t, int> hist;
    for (int32_t t : draw(99, 20000)) ++hist[t];
    for (size_t i = 0; i < kProbs.size(); ++i)
        EXPECT_NEAR(hist[static_cast<int32_t>(i)] / 20000.0, kProbs[i], 0.015) << i;
}

TEST(Sampling, LogprobsAreTheLogOfTheSoftmaxAndTheTopIsSorted) {
    // Known probabilities, shifted by a large constant: log_softmax must not care.
    std::vector<float> l = logits_for(kProbs);
    for (float& v : l) v += 80.0f;  // exp(80) overflows float, not the max-subtracted sum
    const TokenLogprobs lp = sampling::logprobs(l, 2, 3);
    EXPECT_EQ(lp.id, 2);
    EXPECT_NEAR(lp.logprob, std::log(0.10), 1e-5);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].first, 1);
    EXPECT_EQ(lp.top[1].first, 3);
    EXPECT_EQ(lp.top[2].first, 4);
    EXPECT_NEAR(lp.top[0].second, std::log(0.40), 1e-5);
    EXPECT_NEAR(lp.top[1].second, std::log(0.25), 1e-5);
    EXPECT_NEAR(lp.top[2].second, std::log(0.20), 1e-5);
    // The chosen token's value is computed as the top's are: equal where it is the argmax.
    EXPECT_EQ(sampling::logprobs(l, 1, 1).logprob, sampling::logprobs(l, 1, 1).top[0].second);
    // No alternatives; more than the row holds; ties go to the smaller id.
    EXPECT_TRUE(sampling::logprobs(l, 0, 0).top.empty());
    EXPECT_EQ(sampling::logprobs(l, 0, kMaxTopLogprobs).top.size(), kProbs.size());
    const std::vector<float> flat(4, 1.0f);
    const TokenLogprobs tie = sampling::logprobs(flat, 3, 2);
    EXPECT_NEAR(tie.logprob, std::log(0.25), 1e-6);
    EXPECT_EQ(tie.top[0].first, 0);
    EXPECT_EQ(tie.top[1].first, 1);
}

TEST(Sampling, LogprobsOfNonFiniteLogitsAreFlooredNotUndefined) {
    const float nan = std::nanf(""), inf = INFINITY;
    const std::vector<float> l = {nan, 1.0f, -inf, 2.0f, nan};
    const TokenLogprobs a = sampling::logprobs(l, 0, 5);
    EXPECT_EQ(a.logprob, kMinLogprob);
    EXPECT_EQ(sampling::logprobs(l, 2, 0).logprob, kMinLogprob);
    ASSERT_EQ(a.top.size(), 5u);
    EXPECT_EQ(a.top[0].first, 3);
    EXPECT_EQ(a.top[1].first, 1);
    EXPECT_NEAR(a.top[0].second, -std::log1p(std::exp(-1.0)), 1e-6);
    for (const auto& [id, v] : a.top) EXPECT_TRUE(std::isfinite(v)) << id;
    const std::vector<float> all_nan(3, nan);
    EXPECT_EQ(sampling::logprobs(all_nan, 1, 2).logprob, kMinLogprob);
}

TEST(Sampling, LogitBiasIsAddedBeforeThePenaltiesAndIsValidated) {
    SamplingParams p;
    EXPECT_FALSE(p.has_penalties());
    p.logit_bias = {{1, -2.0f}, {3, 4.5f}, {9, 50.0f}};  // id 9: past the row, ignored
    EXPECT_TRUE(p.has_penalties()) << "a bias changes the logits on the host";
    EXPECT_TRUE(p.validate().is_ok());
    std::vector<float> logits = {1, 2, 3, 4, -5};
    sampling::apply_penalties(logits, {}, {}, p);
    EXPECT_EQ(logits, (std::vector<float>{1, 0, 3, 8.5f, -5}));
    // Before a repetition penalty: 2 + 1 = 3, then divided by 2.
    p.logit_bias = {{1, 1.0f}};
    p.repetition_penalty = 2.0f;
    logits = {1, 2, 3, 4, -5};
    const std::vector<int32_t> prompt = {1};
    sampling::apply_penalties(logits, prompt, {}, p);
    EXPECT_EQ(logits[1], 1.5f);
    p = {};
    p.logit_bias = {{4, 100.5f}};
    EXPECT_NE(p.validate().message().find("logit_bias"), std::string::npos);
    p.logit_bias = {{-1, 1.0f}};
    EXPECT_NE(p.validate().message().find("logit_bias"), std::string::npos);
    p.logit_bias.assign(kMaxLogitBias + 1, {0, 1.0f});
    EXPECT_NE(p.validate().message().find("at most"), std::string::npos);
}

TEST(Sampling, ValidateNamesTheField) {
    SamplingParams p;
    EXPECT_TRUE(p.validate().is_ok());
    p.top_p = 0.0f;
    EXPECT_NE(p.validate().message().find("top_p"), std::string::npos);
    p = {};
    p.temperature = -1.0f;
    EXPECT_NE(p.validate().message().find("temperature"), std::string::npos);
    p = {};
    p.min_p = 2.0f;
    EXPECT_NE(p.validate().message().find("min_p"), std::string::npos);
    p = {};
    p.top_k = -3;
    EXPECT_NE(p.validate().message().find("top_k"), std::string::npos);
    p = {};
    p.repetition_penalty = 1e-38f;  // dividing a logit by it overflowed
    EXPECT_NE(p.validate().message().find("repetition_penalty"), std::string::npos);
}

}  // namespace
}  // namespace duality

#include "sampling/stop_strings.h"

namespace duality {
namespace {

TEST(StopStrings, HoldsBackPossiblePrefixesAndStopsAtTheFirstMatch) {
    StopStrings s({"\n\n", "THE END"});
    EXPECT_EQ(s.push("Hello"), "Hello");
    EXPECT_EQ(s.push(" world\n"), " world");  // "\n" may start "\n\n"
    EXPECT_EQ(s.push("x"), "\nx");            // it did not
    EXPECT_EQ(s.push(" TH"), " ");
    EXPECT_EQ(s.push("E EN"), "");
    EXPECT_FALSE(s.stopped());
    EXPECT_EQ(s.push("D and more"), "");
    EXPECT_TRUE(s.stopped());
    EXPECT_EQ(s.push("ignored"), "");
    EXPECT_EQ(s.flush(), "");
}

TEST(StopStrings, MatchInsideOnePieceAndFlush) {
    StopStrings s({"stop"});
    EXPECT_EQ(s.push("a stop b"), "a ");
    EXPECT_TRUE(s.stopped());
    StopStrings t({"stop"});
    EXPECT_EQ(t.push("a st"), "a ");
    EXPECT_EQ(t.flush(), "st");  // the end came before the stop string completed
    StopStrings none({});
    EXPECT_EQ(none.push("anything"), "anything");
}

}  // namespace
}  // namespace duality
