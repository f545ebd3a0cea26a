// The scheduler and the state cache against the mock model (tests/engine/mock_model.h): every
// sequence's output must equal its continuation computed alone, whatever else shares the steps.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "duality/engine.h"
#include "engine/mock_model.h"

namespace duality {
namespace {

using testing::MockModel;
using namespace std::chrono_literals;

// Collects a sequence's tokens until it finishes (fails the test after 20 s).
std::vector<int32_t> drain(Sequence& seq) {
    std::vector<int32_t> out;
    const auto give_up = SteadyClock::now() + 20s;
    while (!seq.wait(&out, SteadyClock::now() + 100ms)) {
        if (SteadyClock::now() > give_up) {
            ADD_FAILURE() << "sequence did not finish";
            break;
        }
    }
    return out;
}

GenerateRequest greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
    GenerateRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.sampling.greedy = true;
    return r;
}

// Runs a greedy request to its end, expecting the mock's continuation; returns the sequence.
std::shared_ptr<Sequence> run_greedy(Engine& engine, const std::vector<int32_t>& prompt,
                                     int64_t n) {
    auto seq = engine.submit(greedy(prompt, n));
    EXPECT_TRUE(seq.is_ok()) << seq.status().message();
    if (!seq.is_ok()) return std::make_shared<Sequence>(0);
    EXPECT_EQ(drain(**seq), MockModel::continuation(prompt, n));
    return *seq;
}

std::vector<int32_t> random_prompt(std::mt19937& rng, int64_t len) {
    std::vector<int32_t> p(static_cast<size_t>(len));
    for (auto& t : p) t = static_cast<int32_t>(rng() % MockModel::kVocab);
    return p;
}

TEST(Engine, OneSequenceEqualsItsContinuation) {
    MockModel model(4);
    EngineOptions o;
    o.max_seqs = 4;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok()) << engine.status().message();
    const std::vector<int32_t> prompt = {5, 17, 3, 90, 44};
    auto seq = run_greedy(**engine, prompt, 12);
    EXPECT_EQ(seq->finish_reason(), FinishReason::kLength);
    EXPECT_EQ(seq->cached_tokens(), 0);
}

TEST(Engine, ManyConcurrentSequencesEachEqualTheirContinuation) {
    MockModel model(8);
    EngineOptions o;
    o.max_seqs = 8;
    o.max_batch_tokens = 64;
    o.prefill_chunk = 16;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    std::mt19937 rng(7);
    struct Job {
        std::vector<int32_t> prompt;
        int64_t n;
        std::shared_ptr<Sequence> seq;
    };
    std::vector<Job> jobs;
    for (int i = 0; i < 40; ++i) {
        Job j;
        j.prompt = random_prompt(rng, 1 + static_cast<int64_t>(rng() % 150));
        j.n = 1 + static_cast<int64_t>(rng() % 20);
        auto seq = (*engine)->submit(greedy(j.prompt, j.n));
        ASSERT_TRUE(seq.is_ok());
        j.seq = *seq;
        jobs.push_back(std::move(j));
    }
    for (Job& j : jobs) EXPECT_EQ(drain(*j.seq), MockModel::continuation(j.prompt, j.n));

    // Admission control and the token budget held at every step; prefill pieces end on chunk
    // boundaries (so they never exceed prefill_chunk).
    for (const auto& step : model.steps()) {
        EXPECT_LE(step.slots.size(), 8u);
        std::vector<int> slots = step.slots;
        std::sort(slots.begin(), slots.end());
        EXPECT_EQ(std::adjacent_find(slots.begin(), slots.end()), slots.end()) << "slot twice";
        int64_t tokens = 0, pieces = 0;
        for (int64_t len : step.lengths) {
            tokens += len;
            pieces += len > 1;
            EXPECT_LE(len, 16);
        }
        if (pieces > 1) {
            EXPECT_LE(tokens, 64);
        }
    }
    const EngineStats s = (*engine)->stats();
    EXPECT_EQ(s.finished[static_cast<size_t>(FinishReason::kLength)], 40u);
    EXPECT_EQ(s.running, 0);
    EXPECT_EQ(s.queue_depth, 0);
}

TEST(Engine, StopsAtEos) {
    MockModel model(2);
    EngineOptions o;
    o.max_seqs = 2;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    const std::vector<int32_t> prompt = {1, 2, 3};
    const auto expected = MockModel::continuation(prompt, 30);
    GenerateRequest r = greedy(prompt, 30);
    r.eos_id = expected[4];
    auto seq = (*engine)->submit(r);
    ASSERT_TRUE(seq.is_ok());
    const auto got = drain(**seq);
    const auto first = std::find(expected.begin(), expected.end(), expected[4]);
    EXPECT_EQ(got, std::vector<int32_t>(expected.begin(), first + 1));
    EXPECT_EQ((*seq)->finish_reason(), FinishReason::kStop);
}

TEST(Engine, StopsAfterAnyStopId) {
    MockModel model(1);
    EngineOptions o;
    o.max_seqs = 1;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    const std::vector<int32_t> prompt = {4, 8, 15};
    const auto expected = MockModel::continuation(prompt, 30);
    GenerateRequest r = greedy(prompt, 30);
    r.stop_ids = {MockModel::kVocab - 1, expected[6], expected[9]};
    auto seq = (*engine)->submit(r);
    ASSERT_TRUE(seq.is_ok());
    const auto got = drain(**seq);
    auto first = expected.begin() + 6;
    for (int32_t id : r.stop_ids)
        first = std::min(first, std::find(expected.begin(), expected.end(), id));
    EXPECT_EQ(got, std::vector<int32_t>(expected.begin(), first + 1));
    EXPECT_EQ((*seq)->finish_reason(), FinishReason::kStop);
    r.stop_ids = {MockModel::kVocab};
    EXPECT_EQ((*engine)->submit(r).status().code(), StatusCode::kInvalidArgument);
}

TEST(Engine, ConversationResumesFromTheCacheAndReadsOnlyNewTokens) {
    MockModel model(4);
    EngineOptions o;
    o.max_seqs = 4;
    o.prefill_chunk = 8;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    std::mt19937 rng(3);
    const std::vector<int32_t> turn1 = random_prompt(rng, 100);
    auto s1 = (*engine)->submit(greedy(turn1, 10));
    ASSERT_TRUE(s1.is_ok());
    const auto out1 = drain(**s1);
    ASSERT_EQ(out1, MockModel::continuation(turn1, 10));

    // Turn 2 = turn 1 + its answer + new tokens: resumes after all but the answer's last token.
    std::vector<int32_t> turn2 = turn1;
    turn2.insert(turn2.end(), out1.begin(), out1.end());
    const std::vector<int32_t> fresh = random_prompt(rng, 20);
    turn2.insert(turn2.end(), fresh.begin(), fresh.end());
    const int64_t before = model.tokens_consumed();
    auto s2 = run_greedy(**engine, turn2, 10);
    EXPECT_EQ(s2->cached_tokens(), 100 + 10 - 1);
    // Read: the answer's last token + the new tokens, then 9 generated tokens fed back.
    EXPECT_EQ(model.tokens_consumed() - before, 1 + 20 + 9);
    const EngineStats st = (*engine)->stats();
    EXPECT_EQ(st.cache_hits, 1u);
    EXPECT_EQ(st.cache_misses, 1u);
    EXPECT_EQ(st.cache_hit_tokens, 109u);
    EXPECT_EQ(st.prefill_tokens, 100u + 21u);

    // The same prompt again: its last token must run (its logits give the first token), so it
    // resumes from the longest shorter entry, turn 1's finish.
    auto s3 = run_greedy(**engine, turn2, 3);
    EXPECT_EQ(s3->cached_tokens(), 109);
    // One token more resumes from turn 2's prompt-end entry.
    std::vector<int32_t> turn2b = turn2;
    turn2b.push_back(42);
    auto s3b = run_greedy(**engine, turn2b, 3);
    EXPECT_EQ(s3b->cached_tokens(), static_cast<int64_t>(turn2.size()));

    // use_cache = false reads everything.
    GenerateRequest cold = greedy(turn2, 3);
    cold.use_cache = false;
    auto s4 = (*engine)->submit(cold);
    ASSERT_TRUE(s4.is_ok());
    EXPECT_EQ(drain(**s4), MockModel::continuation(turn2, 3));
    EXPECT_EQ((*s4)->cached_tokens(), 0);
}

TEST(Engine, CheckpointsEveryKTokensServeADivergingPrompt) {
    MockModel model(2);
    EngineOptions o;
    o.max_seqs = 2;
    o.prefill_chunk = 16;
    o.checkpoint_every = 32;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    std::mt19937 rng(11);
    const auto long_prompt = random_prompt(rng, 200);
    ASSERT_TRUE(drain(**(*engine)->submit(greedy(long_prompt, 2))).size() == 2);
    // Shares the first 150 tokens only: the checkpoint at 128 serves it.
    std::vector<int32_t> other(long_prompt.begin(), long_prompt.begin() + 150);
    const auto tail = random_prompt(rng, 30);
    other.insert(other.end(), tail.begin(), tail.end());
    auto seq = run_greedy(**engine, other, 5);
    EXPECT_EQ(seq->cached_tokens(), 128);
}

TEST(Engine, HostBudgetEvictsLeastRecentlyUsed) {
    MockModel model(2);
    EngineOptions o;
    o.max_seqs = 2;
    // A mock state is 4 bytes + 4 per key token: room for about two 100-token entries.
    o.cache_host_bytes = 900;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    std::mt19937 rng(5);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 4; ++i) {
        prompts.push_back(random_prompt(rng, 100));
        drain(**(*engine)->submit(greedy(prompts.back(), 1)));
    }
    const EngineStats s = (*engine)->stats();
    EXPECT_GT(s.cache_evictions, 0u);
    EXPECT_LE(s.cache_bytes, 900u);
    // The newest prompt is still cached; the oldest is gone.
    prompts[3].push_back(1);
    auto newest = (*engine)->submit(greedy(prompts[3], 1));
    drain(**newest);
    EXPECT_EQ((*newest)->cached_tokens(), 100);
    prompts[0].push_back(1);
    auto oldest = (*engine)->submit(greedy(prompts[0], 1));
    drain(**oldest);
    EXPECT_EQ((*oldest)->cached_tokens(), 0);
}

TEST(Engine, DeviceCacheSlotsSpillToHost) {
    MockModel model(3);  // 1 running slot + 2 cache slots
    EngineOptions o;
    o.max_seqs = 1;
    o.cache_slots = 2;
    o.cache_host_bytes = 1 << 20;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    std::mt19937 rng(9);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 5; ++i) {
        prompts.push_back(random_prompt(rng, 40));
        drain(**(*engine)->submit(greedy(prompts.back(), 2)));
    }
    EXPECT_GT(model.copies, 0);
    // Every prompt's state is still somewhere (device or host) and gives the right answer.
    for (auto p : prompts) {
        p.push_back(7);
        auto seq = (*engine)->submit(greedy(p, 4));
        EXPECT_EQ(drain(**seq), MockModel::continuation(p, 4));
        EXPECT_EQ((*seq)->cached_tokens(), 40);
    }
}

// With cache slots on the device, a finished sequence's slot becomes a cache slot (its final
// state cached without a copy) and the engine runs the next request in the slot the cache gave
// back; the prompt-end checkpoint is still a copy (its sequence keeps decoding in its slot).
TEST(Engine, FinishedSlotsAreAdoptedByTheCacheNotCopied) {
    MockModel model(3);  // 1 running slot + 2 cache slots
    EngineOptions o;
    o.max_seqs = 1;
    o.cache_slots = 2;
    o.cache_host_bytes = 0;  // device tier only: the third entry evicts the first
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    std::mt19937 rng(13);
    const std::vector<int32_t> turn1 = random_prompt(rng, 30);
    const auto out1 = drain(**(*engine)->submit(greedy(turn1, 5)));
    ASSERT_EQ(out1, MockModel::continuation(turn1, 5));
    EXPECT_EQ(model.copies, 1);  // the prompt-end checkpoint only
    const auto steps = model.steps();
    ASSERT_FALSE(steps.empty());
    EXPECT_EQ(steps.back().slots, std::vector<int>{0});

    // The next conversation turn resumes from the adopted state, in another slot.
    std::vector<int32_t> turn2 = turn1;
    turn2.insert(turn2.end(), out1.begin(), out1.end());
    turn2.push_back(11);
    auto s2 = run_greedy(**engine, turn2, 4);
    EXPECT_EQ(s2->cached_tokens(), 30 + 5 - 1);
    EXPECT_NE(model.steps().back().slots, std::vector<int>{0});
    // A new prompt in whatever slot came back starts from a clean state.
    auto s3 = run_greedy(**engine, random_prompt(rng, 25), 3);
    EXPECT_EQ(s3->cached_tokens(), 0);

    // A request that ends in the step that reads its prompt's end: its prompt-end checkpoint and
    // its finish are the same key, cached by adopting the slot, without any copy.
    const int copies = model.copies;
    std::vector<int32_t> one = random_prompt(rng, 20);
    run_greedy(**engine, one, 1);
    EXPECT_EQ(model.copies, copies);
    one.push_back(5);
    auto s4 = run_greedy(**engine, one, 2);
    EXPECT_EQ(s4->cached_tokens(), 20);
}

TEST(Engine, QueueLimitCancellationAndTimeout) {
    MockModel model(1);
    EngineOptions o;
    o.max_seqs = 1;
    o.max_queue = 2;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    GenerateRequest long_one = greedy({1, 2, 3}, 1'000'000);
    auto a = (*engine)->submit(long_one);
    ASSERT_TRUE(a.is_ok());
    // Wait until `a` holds the only slot, then fill the queue.
    std::vector<int32_t> got;
    (*a)->wait(&got, SteadyClock::now() + 5s);
    auto b = (*engine)->submit(greedy({4}, 2));
    auto c = (*engine)->submit(greedy({5}, 2));
    ASSERT_TRUE(b.is_ok());
    ASSERT_TRUE(c.is_ok());
    auto d = (*engine)->submit(greedy({6}, 2));
    ASSERT_FALSE(d.is_ok());
    EXPECT_EQ(d.status().code(), StatusCode::kResourceExhausted);

    (*c)->cancel();  // cancelled while waiting
    (*a)->cancel();  // cancelled while running: frees the slot for b
    drain(**a);
    EXPECT_EQ((*a)->finish_reason(), FinishReason::kCancelled);
    EXPECT_EQ(drain(**b), MockModel::continuation({4}, 2));
    drain(**c);
    EXPECT_EQ((*c)->finish_reason(), FinishReason::kCancelled);

    GenerateRequest late = greedy({7, 8}, 1'000'000);
    late.deadline = SteadyClock::now() + 50ms;
    auto e = (*engine)->submit(late);
    ASSERT_TRUE(e.is_ok());
    drain(**e);
    EXPECT_EQ((*e)->finish_reason(), FinishReason::kTimeout);
    EXPECT_EQ((*engine)->active(), 0);
}

TEST(Engine, RejectsBadRequests) {
    MockModel model(1);
    EngineOptions o;
    o.max_seqs = 1;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    EXPECT_EQ((*engine)->submit(greedy({}, 1)).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ((*engine)->submit(greedy({1, MockModel::kVocab}, 1)).status().code(),
              StatusCode::kInvalidArgument);
    EXPECT_EQ((*engine)->submit(greedy({1}, 0)).status().code(), StatusCode::kInvalidArgument);
    GenerateRequest lp = greedy({1, 2}, 1);
    lp.logprobs = kMaxTopLogprobs + 1;
    EXPECT_EQ((*engine)->submit(lp).status().code(), StatusCode::kInvalidArgument);
    lp.logprobs = -1;
    lp.prompt_logprobs = true;
    EXPECT_EQ((*engine)->submit(lp).status().code(), StatusCode::kInvalidArgument);
    (*engine)->stop_accepting();
    EXPECT_EQ((*engine)->submit(greedy({1}, 1)).status().code(), StatusCode::kResourceExhausted);

    EngineOptions bad = o;
    bad.max_seqs = 2;  // the model has one slot
    EXPECT_FALSE(Engine::start(model, bad).is_ok());
    bad = o;
    bad.checkpoint_every = 100;  // not a multiple of prefill_chunk (256)
    EXPECT_FALSE(Engine::start(model, bad).is_ok());
}

TEST(Engine, AFailedStepEndsItsSequencesWithTheError) {
    MockModel model(2);
    model.fail_next_steps = 1;
    EngineOptions o;
    o.max_seqs = 2;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    auto seq = (*engine)->submit(greedy({1, 2}, 5));
    ASSERT_TRUE(seq.is_ok());
    drain(**seq);
    EXPECT_EQ((*seq)->finish_reason(), FinishReason::kError);
    EXPECT_NE((*seq)->error().find("mock device error"), std::string::npos);
    // The engine goes on serving.
    auto next = (*engine)->submit(greedy({1, 2}, 5));
    EXPECT_EQ(drain(**next), MockModel::continuation({1, 2}, 5));
}

TEST(Engine, PenaltiesSampleOnTheHost) {
    MockModel model(1);
    EngineOptions o;
    o.max_seqs = 1;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    GenerateRequest r = greedy({3, 1, 4, 1, 5, 9, 2, 6}, 40);
    r.sampling.repetition_penalty = 1e6f;
    auto seq = (*engine)->submit(r);
    ASSERT_TRUE(seq.is_ok());
    const auto out = drain(**seq);
    // Expected: the penalty chain over this sequence's own prompt and output.
    std::vector<int32_t> expected;
    SequenceState s = MockModel::run(r.prompt);
    for (int i = 0; i < 40; ++i) {
        std::vector<float> logits = MockModel::one_hot(MockModel::predict(s));
        sampling::apply_penalties(logits, r.prompt, expected, r.sampling);
        expected.push_back(sampling::argmax(logits));
        MockModel::advance(s, expected.back());
    }
    EXPECT_EQ(out, expected);
    EXPECT_NE(out, MockModel::continuation(r.prompt, 40)) << "the penalty changed nothing";
}

// log_softmax(row)[id] in double, and the ids of the k largest entries (the mock's rows have
// distinct top values).
double log_softmax_at(const std::vector<float>& row, int32_t id) {
    double sum = 0;
    for (float v : row) sum += std::exp(static_cast<double>(v));
    return static_cast<double>(row[static_cast<size_t>(id)]) - std::log(sum);
}

TEST(Engine, LogprobsComeWithEachTokenAndScoreTheRawLogits) {
    MockModel model(2);
    EngineOptions o;
    o.max_seqs = 2;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    // A penalty that changes every choice: the log-probabilities must still be the raw row's.
    GenerateRequest r = greedy({3, 1, 4, 1, 5, 9, 2, 6}, 24);
    r.sampling.repetition_penalty = 1e6f;
    r.logprobs = 2;
    auto seq = (*engine)->submit(r);
    ASSERT_TRUE(seq.is_ok());
    std::vector<int32_t> out;
    std::vector<TokenLogprobs> lps;
    const auto give_up = SteadyClock::now() + 20s;
    while (!(*seq)->wait(&out, SteadyClock::now() + 100ms, &lps))
        ASSERT_LT(SteadyClock::now(), give_up);
    ASSERT_EQ(out.size(), 24u);
    ASSERT_EQ(lps.size(), out.size());
    SequenceState s = MockModel::run(r.prompt);
    for (size_t i = 0; i < out.size(); ++i) {
        const int32_t pred = MockModel::predict(s);
        const std::vector<float> row = MockModel::one_hot(pred);
        EXPECT_EQ(lps[i].id, out[i]);
        EXPECT_NEAR(lps[i].logprob, log_softmax_at(row, out[i]), 1e-5) << "token " << i;
        ASSERT_EQ(lps[i].top.size(), 2u);
        EXPECT_EQ(lps[i].top[0].first, pred);
        EXPECT_EQ(lps[i].top[1].first, (pred + 1) % MockModel::kVocab);
        EXPECT_NEAR(lps[i].top[0].second, log_softmax_at(row, pred), 1e-5);
        EXPECT_NEAR(lps[i].top[1].second, log_softmax_at(row, (pred + 1) % MockModel::kVocab),
                    1e-5);
        MockModel::advance(s, out[i]);
    }
    EXPECT_TRUE((*seq)->prompt_logprobs().empty()) << "not asked for";
}

TEST(Engine, PromptLogprobsScoreEveryPromptTokenFromTheSecondWithoutTheCache) {
    MockModel model(3);
    EngineOptions o;
    o.max_seqs = 2;
    o.cache_slots = 1;
    o.prefill_chunk = 64;
    o.checkpoint_every = 64;
    auto engine = Engine::start(model, o);
    ASSERT_TRUE(engine.is_ok());
    std::mt19937 rng(7);
    const std::vector<int32_t> prompt = random_prompt(rng, 300);  // four pieces of 64 and a tail
    run_greedy(**engine, prompt, 3);  // caches states at 64, ..., 256 tokens
    EXPECT_EQ(run_greedy(**engine, prompt, 3)->cached_tokens(), 256) << "the control";
    const int64_t forwarded = model.forward_tokens();

    GenerateRequest r = greedy(prompt, 5);
    r.logprobs = 0;
    r.prompt_logprobs = true;
    auto seq = (*engine)->submit(r);
    ASSERT_TRUE(seq.is_ok());
    // Another sequence shares the steps meanwhile and is unaffected.
    const std::vector<int32_t> other = random_prompt(rng, 40);
    run_greedy(**engine, other, 30);
    EXPECT_EQ(drain(**seq), MockModel::continuation(prompt, 5));
    EXPECT_EQ((*seq)->cached_tokens(), 0) << "a cached prefix has no logits";
    EXPECT_EQ(model.forward_tokens() - forwarded, 299) << "all but the last prompt token";
    const std::vector<TokenLogprobs> lps = (*seq)->prompt_logprobs();
    ASSERT_EQ(lps.size(), prompt.size() - 1);
    for (size_t i = 1; i < prompt.size(); ++i) {
        const std::vector<float> row = MockModel::one_hot(
            MockModel::predict(MockModel::run(std::span<const int32_t>(prompt.data(), i))));
        EXPECT_EQ(lps[i - 1].id, prompt[i]);
        EXPECT_NEAR(lps[i - 1].logprob, log_softmax_at(row, prompt[i]), 1e-5) << "token " << i;
        EXPECT_TRUE(lps[i - 1].top.empty());
    }
}

TEST(Engine, DestructionCancelsRunningSequences) {
    MockModel model(1);
    EngineOptions o;
    o.max_seqs = 1;
    std::shared_ptr<Sequence> seq;
    {
        auto engine = Engine::start(model, o);
        ASSERT_TRUE(engine.is_ok());
        seq = *(*engine)->submit(greedy({1}, 1'000'000));
    }
    std::vector<int32_t> out;
    EXPECT_TRUE(seq->wait(&out, SteadyClock::now() + 1s));
    EXPECT_EQ(seq->finish_reason(), FinishReason::kCancelled);
}

}  // namespace
}  // namespace duality
