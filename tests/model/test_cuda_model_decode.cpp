// The CUDA backend's batch-1 and greedy decode paths, whole model: the z fork's orders, the GEMV
// epilogues, the decode stack and the device loop, each against the plain kernel chain. Skipped
// without a GPU.
#include <gtest/gtest.h>

#include "model/cuda_model_util.h"

namespace duality {
namespace {

using namespace cuda_test;  // the shared helpers (cuda_model_util.h)

// Whether a row's largest logit leads the second by more than 2% of the logit scale (argmax
// comparisons between two paths skip near-ties).
bool clear_top(const float* row, int64_t V) {
    float top = -INFINITY, second = -INFINITY, scale = 0.0f;
    for (int64_t v = 0; v < V; ++v) {
        scale = std::max(scale, std::fabs(row[v]));
        if (row[v] > top) {
            second = top;
            top = row[v];
        } else if (row[v] > second) {
            second = row[v];
        }
    }
    return top - second > 0.02f * scale;
}

// Two models of one checkpoint whose batch-1 decode passes take different paths (`a` the one
// under test, `b` the kernel chain): two sequences prefilled together, then steps of both (batch
// 2) and of one (batch 1), each continuing with b's greedy tokens, so that the slots go back and
// forth between the paths. Every step's logits agree within the bf16/f16 policy (rel-L2 <= 3e-2
// / 5e-3, docs/numerics.md) with the same argmax except at near-ties. Returns whether some
// batch-1 step's logits differed in any bit (proof that a's path ran).
bool compare_batch1_paths(Model& a, Model& b, DType dtype, int steps) {
    const int64_t V = b.config().vocab_size;
    const double max_rel = dtype == DType::kBF16 ? 3e-2 : 5e-3;
    std::vector<std::vector<int32_t>> next = {{11, 42, 7, 1999, 5}, {300, 301, 302}};
    bool differed = false;
    for (int step = 0; step < steps; ++step) {
        std::vector<SeqInput> batch;
        for (int s = 0; s < 2; ++s)
            if (step == 0 || step % 3 == 0 || step % 2 == s)
                batch.push_back({s, next[static_cast<size_t>(s)]});
        auto la = a.step(batch);
        auto lb = b.step(batch);
        EXPECT_TRUE(la.is_ok() && lb.is_ok()) << la.status().message();
        if (!la.is_ok() || !lb.is_ok() || la->size() != lb->size()) return false;
        EXPECT_LE(rel_l2(*la, *lb), max_rel) << dtype_name(dtype) << " step " << step;
        if (batch.size() == 1 && step > 0) differed |= *la != *lb;
        for (size_t i = 0; i < batch.size(); ++i) {
            const float* ra = la->data() + static_cast<int64_t>(i) * V;
            const float* rb = lb->data() + static_cast<int64_t>(i) * V;
            if (clear_top(rb, V)) {
                EXPECT_EQ(argmax(ra, V), argmax(rb, V)) << dtype_name(dtype) << " step " << step;
            }
            next[static_cast<size_t>(batch[i].slot)] = {static_cast<int32_t>(argmax(rb, V))};
        }
    }
    return differed;
}

// With DUALITY_Z_FORK=early, decode passes fork the side stream before the [xBC | dt] product, so
// that z's product (on a Gemm of its own) runs beside it; DUALITY_Z_FORK=auto (the default) does
// so for batch-1 passes of models whose z weights have DUALITY_Z_FORK_MIN_ELEMS elements or more
// (1 here, so that the bundled model qualifies). That changes the order of work on the GPU, not
// what is computed: bf16 models of the bundled one, GEMM tuning off (every Gemm then takes
// cuBLASLt's first choice), with the decode gate off and on (the step then waits for z instead
// of the gated norm) and with the batch-1 GEMV epilogues off and on in both models, must give
// bit for bit the logits of the late order at 32 sequences
// (cuBLASLt) and 1 (the batch-1 GEMV). A missing or misplaced join shows as a difference (a step
// or norm reading z before its product has written it); device_info() shows that the switch took.
TEST(CudaModel, ZForkEarlyMatchesTheLateOrder) {
    REQUIRE_GPU();
    constexpr int kSeqs = 32;
    // The batch-1 GEMV epilogues follow the fork by default (auto: on where z forks early), so
    // they are set to one value in both models: off, and on in every batch-1 pass.
    auto load = [&](const char* fork, const char* decode_gate, const char* epilogues) {
        return load_bundled_bf16(kSeqs, {{"DUALITY_Z_FORK", fork},
                                         {"DUALITY_Z_FORK_MIN_ELEMS", "1"},
                                         {"DUALITY_DECODE_GATE", decode_gate},
                                         {"DUALITY_GEMV_EPILOGUES", epilogues}});
    };
    for (const char* epilogues : {"0", "1"})
        for (const char* decode_gate : {"0", "1"}) {
            auto late = load("late", decode_gate, epilogues);
            ASSERT_TRUE(late.is_ok()) << late.status().message();
            ASSERT_EQ((*late)->device_info().z_fork, "late");
            for (const char* fork : {"early", "auto"}) {
                auto early = load(fork, decode_gate, epilogues);
                ASSERT_TRUE(early.is_ok()) << early.status().message();
                // The switch took: `early` runs z's product on a GEMM of its own in every decode
                // pass, `auto` in batch-1 passes only.
                ASSERT_EQ((*early)->device_info().z_fork,
                          std::string_view(fork) == "early" ? "early" : "early at batch 1");
                const int64_t V = (*late)->config().vocab_size;
                const std::vector<std::vector<int32_t>> tokens = prompts(kSeqs, 4, 2, 89, 23, V);
                for (int n_seq : {kSeqs, 1}) {
                    for (auto* m : {&late, &early})
                        for (int s = 0; s < kSeqs; ++s) ASSERT_TRUE((**m)->reset_slot(s).is_ok());
                    std::vector<float> l = step_logits(**late, n_seq, tokens);
                    std::vector<float> e = step_logits(**early, n_seq, tokens);
                    ASSERT_EQ(e, l) << fork << ", prefill of " << n_seq << ", decode gate "
                                    << decode_gate << ", epilogues " << epilogues;
                    for (int step = 0; step < 6; ++step) {
                        const std::vector<std::vector<int32_t>> next =
                            greedy_pieces(l, n_seq, kSeqs, V);
                        l = step_logits(**late, n_seq, next);
                        e = step_logits(**early, n_seq, next);
                        ASSERT_FALSE(l.empty());
                        EXPECT_EQ(e, l)
                            << fork << ", decode step " << step << " of " << n_seq
                            << ", decode gate " << decode_gate << ", epilogues " << epilogues;
                    }
                }
            }
        }
}

// Batch-1 decode passes fold the add + RMSNorm and conv1d into the products' epilogues
// (cuda::gemv_fused, DUALITY_GEMV_EPILOGUES=1; by default where z forks early, and where it
// forks late with in_proj whole and the decode gate; bf16 only).
// Two bf16 models of the bundled one, with and without (and both with the decode gate), GEMM tuning
// off, compared by compare_batch1_paths: a slot's
// conv state is left by the fused product in one step and read by conv1d in the next and the
// other way round; batch-1 logits differ in some bits (the fused path skips a rounding of the
// normed row): proof that it ran.
TEST(CudaModel, GemvEpiloguesMatchTheKernelChain) {
    REQUIRE_GPU();
    // bf16 only: f16 could overflow in out_proj's unnormalized u, so f16 models never take them.
    {
        ScopedEnv env({{"DUALITY_GEMV_EPILOGUES", "1"}});
        auto f16 = Model::load(test::bundled_model_dir(), cuda_options(DType::kF16, 2));
        ASSERT_TRUE(f16.is_ok()) << f16.status().message();
        EXPECT_FALSE((*f16)->device_info().gemv_epilogues);
    }
    // By default (auto) on both sides of z's fork: where z's product forks early at batch 1 (not
    // the bundled model's size, unless the fork's threshold is lowered) the split products take
    // them; where it forks late, in_proj runs whole with the decode gate (batch1_whole), and
    // that path must match the kernel chain too.
    for (const char* min_elems : {"", "1"}) {
        ScopedEnv env({{"DUALITY_Z_FORK_MIN_ELEMS", min_elems},
                       {"DUALITY_Z_FORK", "auto"},
                       {"DUALITY_GEMM_TUNE", "0"},
                       {"DUALITY_GEMV_EPILOGUES", "auto"}});
        const bool early = *min_elems != '\0';
        auto m = Model::load(test::bundled_model_dir(), cuda_options(DType::kBF16, 2));
        ASSERT_TRUE(m.is_ok()) << m.status().message();
        const DeviceInfo info = (*m)->device_info();
        EXPECT_TRUE(info.gemv_epilogues) << min_elems;
        EXPECT_EQ(info.batch1_whole, !early) << min_elems;
        EXPECT_FALSE(info.decode_gate) << "only batch-1 passes take the gate";
        EXPECT_EQ(info.z_fork, early ? "early at batch 1" : "late, none at batch 1");
        // The batch-1 products' L2 prefetch: 2 MiB where z forks early, 8 elsewhere, none with
        // bulk rows (docs/architecture.md, "A decode step on a timeline").
        EXPECT_EQ(info.gemv_prefetch_bytes, info.gemv_bulk ? 0
                                            : early        ? int64_t{2} << 20
                                                           : int64_t{8} << 20)
            << min_elems;
        if (early) {
            ScopedEnv mb({{"DUALITY_GEMM_PREFETCH_MB", "3"}});
            auto three = Model::load(test::bundled_model_dir(), cuda_options(DType::kBF16, 2));
            ASSERT_TRUE(three.is_ok()) << three.status().message();
            EXPECT_EQ((*three)->device_info().gemv_prefetch_bytes, int64_t{3} << 20)
                << "DUALITY_GEMM_PREFETCH_MB overrides the early fork's budget";
        }
        if (!early) {
            ScopedEnv off({{"DUALITY_GEMV_EPILOGUES", "0"}});
            auto chain = Model::load(test::bundled_model_dir(), cuda_options(DType::kBF16, 2));
            ASSERT_TRUE(chain.is_ok()) << chain.status().message();
            EXPECT_FALSE((*chain)->device_info().batch1_whole);
            EXPECT_TRUE(compare_batch1_paths(**m, **chain, DType::kBF16, 16))
                << "the three-kernel batch-1 layers did not run";
        }
    }
    // With the decode gate in both models, out_proj's input scale is the gate's. With in_proj
    // whole (DUALITY_SPLIT_IN_PROJ=0) the conv runs in the whole product's epilogue, after z's
    // columns.
    for (const char* gate : {"0", "1"}) {
        for (const char* split : {"1", "0"}) {
            auto load = [&](const char* on) {
                ScopedEnv env({{"DUALITY_GEMM_TUNE", "0"},
                               {"DUALITY_GEMV_EPILOGUES", on},
                               {"DUALITY_DECODE_GATE", gate},
                               {"DUALITY_SPLIT_IN_PROJ", split}});
                return Model::load(test::bundled_model_dir(), cuda_options(DType::kBF16, 2));
            };
            auto fused = load("1"), chain = load("0");
            ASSERT_TRUE(fused.is_ok() && chain.is_ok()) << fused.status().message();
            ASSERT_TRUE((*fused)->device_info().gemv_epilogues);
            ASSERT_FALSE((*chain)->device_info().gemv_epilogues);
            for (auto* m : {&fused, &chain}) {
                ASSERT_EQ((**m)->device_info().decode_gate, *gate == '1') << "decode gate " << gate;
                ASSERT_EQ((**m)->device_info().z_fork == "none", *split == '0') << split;
            }
            EXPECT_TRUE(compare_batch1_paths(**fused, **chain, DType::kBF16, 16))
                << "decode gate " << gate << ", split in_proj " << split
                << ": the epilogues did not run";
        }
    }
}

// Batch-1 decode passes run as one persistent kernel (cuda::decode_stack) on Hopper when asked to
// (DUALITY_DECODE_STACK=1). Two models of the bundled one, the stack on and off, GEMM tuning off,
// compared by compare_batch1_paths; batch-1 logits differ in some bits (summation order): proof
// that the stack ran.
TEST(CudaModel, DecodeStackMatchesTheKernelChain) {
    REQUIRE_GPU();
    for (DType dtype : {DType::kBF16, DType::kF16}) {
        auto load = [&](const char* on) {
            ScopedEnv env({{"DUALITY_GEMM_TUNE", "0"}, {"DUALITY_DECODE_STACK", on}});
            return Model::load(test::bundled_model_dir(), cuda_options(dtype, 2));
        };
        auto stack = load("1"), chain = load("0");
        ASSERT_TRUE(stack.is_ok() && chain.is_ok()) << stack.status().message();
        EXPECT_FALSE((*chain)->device_info().decode_stack);
        const bool differed = compare_batch1_paths(**stack, **chain, dtype, 12);
        // The bundled model's shape is one the stack takes: it must run on Hopper (the build's
        // sm_90a code; other devices run the compute_80 code, without it).
        const DeviceInfo info = (*stack)->device_info();
        EXPECT_EQ(info.decode_stack, info.compute_capability / 10 == 9) << info.name;
        if (info.decode_stack) {
            EXPECT_TRUE(differed) << dtype_name(dtype) << ": the decode stack did not run";
        }
    }
}

// decode_greedy fed on the device (DUALITY_DEVICE_LOOP=1: each later step's decode pass queued
// right behind the previous one, its argmax writing the next step's token ids) against one
// step_sample per step (DUALITY_DEVICE_LOOP=0): the same ids and the same slot states, at batch 1
// and at batch 3 (graph bucket 4, one padding row), bf16 and f32, with CUDA graphs (replayed) and
// without (enqueued), with the later steps one graph each or in graphs of up to 8 or 16 steps
// (DUALITY_LOOP_GRAPH_STEPS: 20 steps run as 1 + 8 + 8 + 2 + 1 or 1 + 16 + 2 + 1), followed by an
// ordinary step on the same slots. In bf16 with graphs of several steps, with the argmax folded
// into the batch-1 LM head (the default, the variable set empty: the same ids bit for bit, since
// the head stores the logits the key was taken from) and without it (DUALITY_ARGMAX_IN_HEAD=0).
TEST(CudaModel, DeviceLoopMatchesStepByStep) {
    REQUIRE_GPU();
    const std::vector<std::vector<int32_t>> prompts = {{510, 1010, 89, 4}, {2, 7, 9}, {41, 3}};
    constexpr int kSteps = 20;
    for (DType dtype : {DType::kBF16, DType::kF32}) {
        for (bool graphs : {true, false}) {
            for (const char* loop_steps : {"1", "8", "16"})
                for (const char* in_head : {"0", ""}) {  // "": the default
                    if (*in_head != '0' && (dtype != DType::kBF16 || !graphs || *loop_steps == '1'))
                        continue;
                    LoadOptions o = cuda_options(dtype, 4);
                    o.cuda_graphs = graphs;
                    auto load = [&](const char* on) {
                        return load_bundled(o, {{"DUALITY_DEVICE_LOOP", on},
                                                {"DUALITY_LOOP_GRAPH_STEPS", loop_steps},
                                                {"DUALITY_ARGMAX_IN_HEAD", in_head}});
                    };
                    auto on = load("1"), off = load("0");
                    ASSERT_TRUE(on.is_ok() && off.is_ok()) << on.status().message();
                    EXPECT_TRUE((*on)->device_info().device_loop);
                    EXPECT_FALSE((*off)->device_info().device_loop);
                    EXPECT_EQ((*on)->device_info().argmax_in_head, *in_head != '0');
                    for (size_t n : {size_t{1}, size_t{3}}) {
                        std::vector<int32_t> ids[2], after[2];
                        std::vector<SequenceState> states[2];
                        for (int which = 0; which < 2; ++which) {
                            Model& m = which == 0 ? **on : **off;
                            std::vector<SeqInput> in;
                            for (size_t i = 0; i < n; ++i) {
                                const int slot = static_cast<int>(i);
                                ASSERT_TRUE(m.reset_slot(slot).is_ok());
                                const std::span<const int32_t> p(prompts[i]);
                                const SeqInput pre{slot, p.first(p.size() - 1)};
                                ASSERT_TRUE(m.step(std::span<const SeqInput>(&pre, 1)).is_ok());
                                in.push_back({slot, p.last(1)});
                            }
                            auto r = m.decode_greedy(in, kSteps);
                            ASSERT_TRUE(r.is_ok()) << r.status().message();
                            ids[which] = *r;
                            ASSERT_EQ(ids[which].size(), kSteps * n);
                            for (size_t i = 0; i < n; ++i) {
                                states[which].push_back(m.new_state());
                                ASSERT_TRUE(
                                    m.read_slot(static_cast<int>(i), states[which].back()).is_ok());
                            }
                            // An ordinary step afterwards (its own description upload over the ids
                            // the loop left in it).
                            SamplingParams greedy;
                            greedy.greedy = true;
                            const std::vector<SamplingParams> params(n, greedy);
                            const std::vector<uint64_t> draws(n, 0);
                            for (size_t i = 0; i < n; ++i)
                                in[i].tokens =
                                    std::span<const int32_t>(&ids[which][(kSteps - 1) * n + i], 1);
                            auto next = m.step_sample(in, params, draws);
                            ASSERT_TRUE(next.is_ok()) << next.status().message();
                            after[which] = *next;
                        }
                        const std::string what =
                            std::string(dtype_name(dtype)) + (graphs ? ", graphs" : ", no graphs") +
                            ", batch " + std::to_string(n) + ", loop graphs of " + loop_steps +
                            ", argmax in the head " + (*in_head == '0' ? "off" : "by default");
                        EXPECT_EQ(ids[0], ids[1]) << what;
                        EXPECT_EQ(after[0], after[1]) << what;
                        for (size_t i = 0; i < n; ++i) {
                            EXPECT_EQ(states[0][i].n_tokens, states[1][i].n_tokens) << what;
                            EXPECT_EQ(states[0][i].n_tokens,
                                      static_cast<int64_t>(prompts[i].size()) - 1 + kSteps)
                                << what;
                            EXPECT_LE(max_err(states[0][i].ssm, states[1][i].ssm),
                                      1e-6 * std::max(1.0, max_abs(states[1][i].ssm)))
                                << what << ", sequence " << i;
                            EXPECT_LE(max_err(states[0][i].conv, states[1][i].conv),
                                      1e-6 * std::max(1.0, max_abs(states[1][i].conv)))
                                << what << ", sequence " << i;
                        }
                    }
                }
        }
    }
}

}  // namespace
}  // namespace duality
