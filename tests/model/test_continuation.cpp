// Spec 8.4: a prefill that continues from given states equals one prefill of the concatenation,
// and prefill + single-token decode steps equal one prefill.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "duality/model.h"
#include "model/golden.h"
#include "test_util.h"

namespace duality {
namespace {

double rel_err(const float* a, const float* b, size_t n) {
    double err = 0, scale = 1e-30;
    for (size_t i = 0; i < n; ++i) {
        err = std::max(err, static_cast<double>(std::fabs(a[i] - b[i])));
        scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
    }
    return err / scale;
}

class Continuation : public ::testing::TestWithParam<std::string> {};

TEST_P(Continuation, SplitPrefillAndDecodeStepsEqualOnePrefill) {
    const std::string name = GetParam();
    auto loaded = Model::load(test::golden_dir() / name);
    ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
    Model& model = **loaded;
    const int64_t V = model.config().vocab_size;
    const std::vector<int32_t> ids = test::load_golden(name).i32("input_ids");
    const size_t T = ids.size();

    SequenceState whole = model.new_state();
    auto ref = model.forward(ids, whole, LogitsMode::kAll);
    ASSERT_TRUE(ref.is_ok());

    // Cuts inside a chunk, at W-1 boundaries, and 1 token before the end.
    for (size_t cut : {size_t{1}, size_t{2}, size_t{5}, T / 2, T - 1}) {
        SequenceState s = model.new_state();
        std::span<const int32_t> all(ids);
        auto a = model.forward(all.first(cut), s, LogitsMode::kAll);
        auto b = model.forward(all.subspan(cut), s, LogitsMode::kAll);
        ASSERT_TRUE(a.is_ok() && b.is_ok());
        a->insert(a->end(), b->begin(), b->end());
        EXPECT_LT(rel_err(a->data(), ref->data(), T * V), 1e-4) << "cut at " << cut;
        EXPECT_LT(rel_err(s.ssm.data(), whole.ssm.data(), s.ssm.size()), 1e-4) << cut;
        EXPECT_LT(rel_err(s.conv.data(), whole.conv.data(), s.conv.size()), 1e-5) << cut;
        EXPECT_EQ(s.n_tokens, whole.n_tokens);
    }

    // Prefill 3 tokens, then one decode step per remaining token.
    SequenceState s = model.new_state();
    std::span<const int32_t> all(ids);
    auto first = model.forward(all.first(3), s, LogitsMode::kAll);
    ASSERT_TRUE(first.is_ok());
    std::vector<float> stepped = *first;
    for (size_t t = 3; t < T; ++t) {
        auto step = model.forward(all.subspan(t, 1), s, LogitsMode::kLast);
        ASSERT_TRUE(step.is_ok());
        stepped.insert(stepped.end(), step->begin(), step->end());
    }
    EXPECT_LT(rel_err(stepped.data(), ref->data(), T * V), 1e-4);
    EXPECT_LT(rel_err(s.ssm.data(), whole.ssm.data(), s.ssm.size()), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Golden, Continuation, ::testing::ValuesIn(test::golden_cases()),
                         [](const auto& param_info) { return param_info.param; });

TEST(Forward, RejectsOutOfVocabularyTokensAndForeignStates) {
    auto loaded = Model::load(test::golden_dir() / "hf_tiny_f32");
    ASSERT_TRUE(loaded.is_ok());
    Model& model = **loaded;
    SequenceState s = model.new_state();
    const std::vector<int32_t> bad = {1, 2, static_cast<int32_t>(model.config().vocab_size)};
    auto r = model.forward(bad, s, LogitsMode::kLast);
    ASSERT_FALSE(r.is_ok());
    EXPECT_NE(r.status().message().find("position 2"), std::string::npos);
    const std::vector<int32_t> negative = {-1};
    EXPECT_FALSE(model.forward(negative, s, LogitsMode::kLast).is_ok());
    EXPECT_EQ(s.n_tokens, 0);  // a rejected call leaves the state untouched

    SequenceState foreign = s;
    foreign.ssm.pop_back();
    const std::vector<int32_t> ok = {1};
    EXPECT_FALSE(model.forward(ok, foreign, LogitsMode::kLast).is_ok());
}

}  // namespace
}  // namespace duality
