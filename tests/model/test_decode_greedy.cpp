// Model::decode_greedy on the CPU model: n greedy steps, each fed the previous step's ids, against
// each sequence decoded alone through forward() and sampling::argmax; the slots advance n tokens;
// malformed calls are refused. (The CUDA model's device-fed loop: test_cuda_model.cpp.)
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "duality/model.h"
#include "duality/sampling.h"
#include "test_util.h"

namespace duality {
namespace {

// The bundled model on the CPU with n_slots state slots.
std::unique_ptr<Model> bundled(int n_slots) {
    LoadOptions o;
    o.n_slots = n_slots;
    o.n_threads = 2;
    auto loaded = Model::load(test::bundled_model_dir(), o);
    EXPECT_TRUE(loaded.is_ok()) << loaded.status().message();
    return loaded.is_ok() ? std::move(*loaded) : nullptr;
}

TEST(DecodeGreedy, EqualsEachSequenceDecodedAlone) {
    const std::unique_ptr<Model> model = bundled(3);
    ASSERT_TRUE(model);
    Model& m = *model;
    const size_t V = static_cast<size_t>(m.config().vocab_size);
    const std::vector<std::vector<int32_t>> prompts = {{510, 1010, 89, 4}, {2, 7}, {41}};
    constexpr int kSteps = 12;

    // Each slot holds its prompt but the last token, which decode_greedy feeds.
    std::vector<SeqInput> in;
    for (size_t i = 0; i < prompts.size(); ++i) {
        const int slot = static_cast<int>(i);
        ASSERT_TRUE(m.reset_slot(slot).is_ok());
        const std::span<const int32_t> p(prompts[i]);
        if (p.size() > 1) {
            const SeqInput pre{slot, p.first(p.size() - 1)};
            ASSERT_TRUE(m.step(std::span<const SeqInput>(&pre, 1)).is_ok());
        }
        in.push_back({slot, p.last(1)});
    }
    auto ids = m.decode_greedy(in, kSteps);
    ASSERT_TRUE(ids.is_ok()) << ids.status().message();
    ASSERT_EQ(ids->size(), kSteps * prompts.size());

    for (size_t i = 0; i < prompts.size(); ++i) {
        // Alone: the prompt, then each argmax fed back, kSteps ids in all.
        SequenceState alone = m.new_state();
        auto logits = m.forward(prompts[i], alone, LogitsMode::kLast);
        ASSERT_TRUE(logits.is_ok());
        for (int k = 0; k < kSteps; ++k) {
            const int32_t want = sampling::argmax(std::span<const float>(logits->data(), V));
            EXPECT_EQ((*ids)[static_cast<size_t>(k) * prompts.size() + i], want)
                << "sequence " << i << ", step " << k;
            if (k + 1 < kSteps) {
                logits = m.forward(std::span<const int32_t>(&want, 1), alone, LogitsMode::kLast);
                ASSERT_TRUE(logits.is_ok());
            }
        }
        // The slot took the same tokens: the prompt and the first kSteps - 1 ids.
        SequenceState slot;
        ASSERT_TRUE(m.read_slot(static_cast<int>(i), slot).is_ok());
        EXPECT_EQ(slot.n_tokens, alone.n_tokens) << i;
        EXPECT_LT(test::rel_max_err(slot.ssm, alone.ssm), 1e-4) << i;
        EXPECT_LT(test::rel_max_err(slot.conv, alone.conv), 1e-5) << i;
    }
}

TEST(DecodeGreedy, RefusesMalformedCalls) {
    const std::unique_ptr<Model> model = bundled(2);
    ASSERT_TRUE(model);
    Model& m = *model;
    const std::vector<int32_t> two = {5, 6};
    const SeqInput multi{0, two};
    auto r = m.decode_greedy(std::span<const SeqInput>(&multi, 1), 3);
    ASSERT_FALSE(r.is_ok());
    EXPECT_NE(r.status().message().find("exactly one token"), std::string::npos)
        << r.status().message();

    const SeqInput one{0, std::span<const int32_t>(two).first(1)};
    r = m.decode_greedy(std::span<const SeqInput>(&one, 1), -1);
    ASSERT_FALSE(r.is_ok());
    EXPECT_NE(r.status().message().find("n_steps"), std::string::npos) << r.status().message();

    const SeqInput bad_slot{7, std::span<const int32_t>(two).first(1)};
    EXPECT_FALSE(m.decode_greedy(std::span<const SeqInput>(&bad_slot, 1), 2).is_ok());

    // No steps: no ids, and the slot is untouched.
    ASSERT_TRUE(m.reset_slot(0).is_ok());
    r = m.decode_greedy(std::span<const SeqInput>(&one, 1), 0);
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    EXPECT_TRUE(r->empty());
    SequenceState s;
    ASSERT_TRUE(m.read_slot(0, s).is_ok());
    EXPECT_EQ(s.n_tokens, 0);
}

}  // namespace
}  // namespace duality
