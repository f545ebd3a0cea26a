// The CUDA backend's prefill paths, whole model: the gate epilogues against the gated norm, the
// prefill folds, logits of every row in pieces, the trimmed last layer, the split out_proj, the
// fused SSD at d_state 256 (and the CPU model's logits in pieces). Skipped without a GPU.
#include <gtest/gtest.h>

#include "model/cuda_model_util.h"

namespace duality {
namespace {

using namespace cuda_test;  // the shared helpers (cuda_model_util.h)

// bf16 passes on the bundled model (one norm group) can take the gate epilogues: the fused SSD's
// in prefill (by default) and the decode step's in decode (DUALITY_DECODE_GATE=1; the bulk
// kernel at 64 sequences, the vector kernel at 1), the norm's row scale deferred to the next add
// + RMSNorm. Three models, loaded with GEMM tuning off so that their GEMMs pick the same
// algorithms: `plain` (the separate gated norm everywhere), `ssd_gate` (the default: the
// prefill gate) and `decode_gate` (the decode gate only). Against `plain`, every pass's logits
// agree within the bf16 policy (rel-L2 <= 3e-2, docs/numerics.md); `ssd_gate`'s prefill logits
// and `decode_gate`'s decode logits are not bit for bit equal (the gated path rounds v·w before
// the scale, the plain one after: proof that the gate ran), while `decode_gate`'s prefill logits
// are (the same kernels), so its decode difference comes from the decode gate alone.
TEST(CudaModel, Bf16GateEpiloguesMatchTheGatedNorm) {
    REQUIRE_GPU();
    constexpr int kSeqs = 64;
    auto load = [&](const char* ssd_gate, const char* decode_gate) {
        // The batch-1 GEMV epilogues off in all three: by default (auto) the bundled model's
        // batch-1 passes take the decode gate with them (batch1_whole), in `plain` too.
        return load_bundled_bf16(kSeqs, {{"DUALITY_SSD_GATE", ssd_gate},
                                         {"DUALITY_DECODE_GATE", decode_gate},
                                         {"DUALITY_GEMV_EPILOGUES", "0"}});
    };
    auto plain = load("0", "0"), ssd_gate = load("1", "0"), decode_gate = load("0", "1");
    ASSERT_TRUE(plain.is_ok() && ssd_gate.is_ok() && decode_gate.is_ok())
        << plain.status().message();
    const int64_t V = (*plain)->config().vocab_size;
    const std::vector<std::vector<int32_t>> tokens = prompts(kSeqs, 9, 5, 131, 17, V);
    for (int n_seq : {kSeqs, 1}) {
        for (auto* m : {&plain, &ssd_gate, &decode_gate})
            for (int s = 0; s < kSeqs; ++s) ASSERT_TRUE((**m)->reset_slot(s).is_ok());
        std::vector<float> p = step_logits(**plain, n_seq, tokens),
                           a = step_logits(**ssd_gate, n_seq, tokens),
                           d = step_logits(**decode_gate, n_seq, tokens);
        ASSERT_EQ(a.size(), p.size());
        ASSERT_EQ(d.size(), p.size());
        EXPECT_LE(rel_l2(a, p), 3e-2) << "prefill of " << n_seq;
        EXPECT_NE(a, p) << "prefill of " << n_seq << ": the SSD's gate epilogue did not run";
        EXPECT_EQ(d, p) << "prefill of " << n_seq << " without the SSD gate";
        for (int step = 0; step < 4; ++step) {
            // Every model continues with the plain model's greedy tokens.
            const std::vector<std::vector<int32_t>> next = greedy_pieces(p, n_seq, kSeqs, V);
            p = step_logits(**plain, n_seq, next);
            a = step_logits(**ssd_gate, n_seq, next);
            d = step_logits(**decode_gate, n_seq, next);
            ASSERT_EQ(a.size(), p.size());
            ASSERT_EQ(d.size(), p.size());
            EXPECT_LE(rel_l2(a, p), 3e-2) << "decode step " << step << " of " << n_seq;
            EXPECT_LE(rel_l2(d, p), 3e-2) << "decode step " << step << " of " << n_seq;
            EXPECT_NE(d, p) << "decode step " << step << " of " << n_seq
                            << ": the decode gate did not run";
        }
    }
}
// The prefill folds into the fused SSD (docs/numerics.md): Δ from in_proj's raw dt columns
// (DUALITY_SSD_DT) and x's conv1d from its raw rows (DUALITY_SSD_CONV) compute the same values
// with the same f32 operations as dt_softplus and conv1d, so a prefill's logits are bit for bit
// those of the separate kernels. Three bf16 models of the bundled one (GEMM tuning off): neither
// fold, Δ only, both (the conv forced on). Two packed prefill passes of 8 sequences (9-79 tokens,
// then 40-75 more: chunks after the first, and first chunks that start from a conv state), then
// one of a single sequence.
TEST(CudaModel, Bf16PrefillFoldsKeepTheBits) {
    REQUIRE_GPU();
    constexpr int kSeqs = 8;
    auto load = [&](const char* conv, const char* dt) {
        return load_bundled_bf16(kSeqs, {{"DUALITY_SSD_CONV", conv}, {"DUALITY_SSD_DT", dt}});
    };
    auto none = load("0", "0"), dt = load("0", "1"), both = load("1", "1");
    ASSERT_TRUE(none.is_ok() && dt.is_ok() && both.is_ok()) << none.status().message();
    EXPECT_FALSE((*none)->device_info().ssd_dt);
    EXPECT_FALSE((*none)->device_info().ssd_conv);
    EXPECT_TRUE((*dt)->device_info().ssd_dt);
    EXPECT_TRUE((*both)->device_info().ssd_conv) << "the conv prologue is not taken";
    const int64_t V = (*none)->config().vocab_size;
    const auto first = prompts(kSeqs, 9, 10, 131, 17, V), more = prompts(kSeqs, 40, 5, 7, 29, V);
    for (const auto* pieces : {&first, &more}) {
        const std::vector<float> n = step_logits(**none, kSeqs, *pieces),
                                 d = step_logits(**dt, kSeqs, *pieces),
                                 b = step_logits(**both, kSeqs, *pieces);
        ASSERT_FALSE(n.empty());
        EXPECT_EQ(d, n) << "Δ in the fused SSD";
        EXPECT_EQ(b, n) << "Δ and x's conv in the fused SSD";
    }
    for (auto* m : {&none, &dt, &both}) ASSERT_TRUE((**m)->reset_slot(0).is_ok());
    const std::vector<float> n = step_logits(**none, 1, first), b = step_logits(**both, 1, first);
    ASSERT_FALSE(n.empty());
    EXPECT_EQ(b, n) << "a single sequence";
}

// Trimmed against untrimmed logits (the trim tests below): f32 within 1e-4 of the largest logit,
// bf16 within the policy's rel-L2 3e-2 (docs/numerics.md; out_proj's rows then come from another
// GEMM shape).
void expect_trim_agrees(DType dtype, const std::vector<float>& t, const std::vector<float>& w,
                        const std::string& what) {
    ASSERT_FALSE(w.empty()) << what;
    ASSERT_EQ(t.size(), w.size()) << what;
    if (dtype == DType::kF32) {
        EXPECT_LE(max_err(t, w), 1e-4 * max_abs(w)) << what;
    } else {
        EXPECT_LE(rel_l2(t, w), 3e-2) << what;
    }
}

// Prefill and mixed passes run the last layer's out_proj on the rows whose logits are wanted
// only (DUALITY_TRIM_LAST, on by default): the logits must be those of the whole product, and the
// states it leaves must continue the same way. f32 and bf16 models of the bundled one, trimmed
// and not, GEMM tuning off: a packed prefill of 8 sequences (9-79 tokens), then a mixed pass (4
// prompts continued by 20 tokens, 4 by one token), then a decode step.
// Model::step_all_logits (prompt log-probabilities; the CUDA model's override runs on the slot
// itself, the CPU model takes the default) in pieces of 1, 37, 1, 64 and 97 tokens: every row's
// logits as one forward() of the whole prompt from a zero state gives them, and the slot then
// continues as that state does. f32; pieces (and the CUDA model's passes of 64 tokens) move the
// SSD's chunk boundaries, so equal up to rounding.
void expect_step_all_logits_match_forward(Model& model) {
    const int64_t V = model.config().vocab_size;
    const std::vector<int32_t> prompt = prompts(1, 200, 0, 1, 131, V)[0];
    SequenceState state = model.new_state();
    auto whole = model.forward(prompt, state, LogitsMode::kAll);
    ASSERT_TRUE(whole.is_ok()) << whole.status().message();
    ASSERT_TRUE(model.reset_slot(1).is_ok());
    std::vector<float> pieces;
    size_t at = 0;
    for (size_t len : {1, 37, 1, 64, 97}) {
        auto rows = model.step_all_logits(1, std::span<const int32_t>(prompt).subspan(at, len));
        ASSERT_TRUE(rows.is_ok()) << rows.status().message();
        ASSERT_EQ(rows->size(), len * static_cast<size_t>(V));
        pieces.insert(pieces.end(), rows->begin(), rows->end());
        at += len;
    }
    ASSERT_EQ(at, prompt.size());
    ASSERT_EQ(pieces.size(), whole->size());
    EXPECT_LE(max_err(pieces, *whole), 1e-4 * max_abs(*whole));
    for (size_t t = 0; t < prompt.size(); ++t)
        EXPECT_EQ(argmax(pieces.data() + t * V, V), argmax(whole->data() + t * V, V)) << t;
    SequenceState slot;
    ASSERT_TRUE(model.read_slot(1, slot).is_ok());
    EXPECT_EQ(slot.n_tokens, state.n_tokens);
    const int32_t next = 77;
    auto a = model.forward(std::span<const int32_t>(&next, 1), state, LogitsMode::kLast);
    auto b = model.forward(std::span<const int32_t>(&next, 1), slot, LogitsMode::kLast);
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    EXPECT_LE(max_err(*a, *b), 1e-4 * max_abs(*a));
    EXPECT_FALSE(model.step_all_logits(1, {}).is_ok());
    EXPECT_FALSE(model.step_all_logits(5, prompt).is_ok()) << "no such slot";
}

TEST(CudaModel, StepAllLogitsInPiecesMatchesOneForward) {
    REQUIRE_GPU();
    LoadOptions o = cuda_options(DType::kF32, 2);
    o.max_tokens = 64;
    auto loaded = Model::load(test::bundled_model_dir(), o);
    ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
    expect_step_all_logits_match_forward(**loaded);
}

// The CPU twin (the default implementation), which runs everywhere.
TEST(CpuModel, StepAllLogitsInPiecesMatchesOneForward) {
    LoadOptions o;
    o.n_slots = 2;
    auto loaded = Model::load(test::bundled_model_dir(), o);
    ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
    expect_step_all_logits_match_forward(**loaded);
}

TEST(CudaModel, TrimmedLastLayerMatchesEveryRow) {
    REQUIRE_GPU();
    constexpr int kSeqs = 8;
    for (DType dtype : {DType::kF32, DType::kBF16}) {
        auto load = [&](const char* trim) {
            ScopedEnv env({{"DUALITY_GEMM_TUNE", "0"}, {"DUALITY_TRIM_LAST", trim}});
            return Model::load(test::bundled_model_dir(), cuda_options(dtype, kSeqs));
        };
        auto whole = load("0"), trimmed = load("1");
        ASSERT_TRUE(whole.is_ok()) << whole.status().message();
        ASSERT_TRUE(trimmed.is_ok()) << trimmed.status().message();
        EXPECT_FALSE((*whole)->device_info().trim_last);
        EXPECT_TRUE((*trimmed)->device_info().trim_last);
        const int64_t V = (*whole)->config().vocab_size;
        const auto first = prompts(kSeqs, 9, 10, 131, 17, V);
        auto mixed = prompts(kSeqs, 20, 0, 7, 29, V);
        for (int s = 0; s < kSeqs; s += 2) mixed[static_cast<size_t>(s)].resize(1);
        const std::string name = dtype == DType::kF32 ? "f32" : "bf16";
        std::vector<float> w;
        for (const auto& [pieces, what] : {std::pair{&first, "prefill"}, {&mixed, "mixed"}}) {
            w = step_logits(**whole, kSeqs, *pieces);
            expect_trim_agrees(dtype, step_logits(**trimmed, kSeqs, *pieces), w, name + " " + what);
        }
        const auto next = greedy_pieces(w, kSeqs, kSeqs, V);
        w = step_logits(**whole, kSeqs, next);
        expect_trim_agrees(dtype, step_logits(**trimmed, kSeqs, next), w, name + " decode");
    }
}

// The same with passes of 64 tokens (LoadOptions::max_tokens), f32: a 200-token prompt through
// forward() (its first three passes want no logits, so the trimmed model skips the last
// out_proj there), then a step of 4 sequences of 40-70 tokens (passes cut inside sequences, each
// wanting the rows of the sequences that end in it: fewer than it holds), then a decode step.
TEST(CudaModel, TrimmedLastLayerMatchesEveryRowInShortPasses) {
    REQUIRE_GPU();
    constexpr int kSeqs = 4;
    auto load = [&](const char* trim) {
        ScopedEnv env({{"DUALITY_GEMM_TUNE", "0"}, {"DUALITY_TRIM_LAST", trim}});
        LoadOptions o = cuda_options(DType::kF32, kSeqs);
        o.max_tokens = 64;
        return Model::load(test::bundled_model_dir(), o);
    };
    auto whole = load("0"), trimmed = load("1");
    ASSERT_TRUE(whole.is_ok()) << whole.status().message();
    ASSERT_TRUE(trimmed.is_ok()) << trimmed.status().message();
    const int64_t V = (*whole)->config().vocab_size;
    const std::vector<int32_t> prompt = prompts(1, 200, 0, 3, 11, V)[0];
    SequenceState sw = (*whole)->new_state(), st = (*trimmed)->new_state();
    auto lw = (*whole)->forward(prompt, sw, LogitsMode::kLast);
    auto lt = (*trimmed)->forward(prompt, st, LogitsMode::kLast);
    ASSERT_TRUE(lw.is_ok()) << lw.status().message();
    ASSERT_TRUE(lt.is_ok()) << lt.status().message();
    expect_trim_agrees(DType::kF32, *lt, *lw, "forward in 64-token passes");

    const auto pieces = prompts(kSeqs, 40, 10, 5, 23, V);
    std::vector<float> w = step_logits(**whole, kSeqs, pieces);
    expect_trim_agrees(DType::kF32, step_logits(**trimmed, kSeqs, pieces), w,
                       "a step of 220 tokens in 64-token passes");
    const auto next = greedy_pieces(w, kSeqs, kSeqs, V);
    w = step_logits(**whole, kSeqs, next);
    expect_trim_agrees(DType::kF32, step_logits(**trimmed, kSeqs, next), w, "decode after it");
}

// DUALITY_PREFILL_Z_SIDE (on by default where it applies): in pure prefill passes with the gate
// epilogue but conv1d apart, in_proj runs as two products, z's on the side stream beside conv1d,
// joined before the SSD, whose gate epilogue reads it. Against the model with one product: bf16
// (the gate's dtype), GEMM tuning off, the fused SSD's conv prologue off (DUALITY_SSD_CONV=0, so
// that conv1d runs apart). A packed prefill of 8 sequences (150-290 tokens, 1,760 in all), a
// second prefill continuing them (the states the first left; 33-82 tokens), then a decode step,
// within the bf16 policy (the two products may take other cuBLASLt kernels than the whole one,
// so not bit for bit).
TEST(CudaModel, Bf16PrefillZBesideConvMatchesOneProduct) {
    REQUIRE_GPU();
    constexpr int kSeqs = 8;
    auto load = [&](const char* on) {
        ScopedEnv env({{"DUALITY_GEMM_TUNE", "0"},
                       {"DUALITY_SSD_CONV", "0"},
                       {"DUALITY_PREFILL_Z_SIDE", on}});
        return Model::load(test::bundled_model_dir(), cuda_options(DType::kBF16, kSeqs));
    };
    auto one = load("0"), side = load("1");
    ASSERT_TRUE(one.is_ok()) << one.status().message();
    ASSERT_TRUE(side.is_ok()) << side.status().message();
    EXPECT_FALSE((*one)->device_info().prefill_z_side);
    ASSERT_TRUE((*side)->device_info().prefill_z_side);
    const int64_t V = (*one)->config().vocab_size;
    const auto first = prompts(kSeqs, 150, 20, 131, 17, V);
    std::vector<float> w = step_logits(**one, kSeqs, first);
    expect_trim_agrees(DType::kBF16, step_logits(**side, kSeqs, first), w, "prefill");
    const auto more = prompts(kSeqs, 33, 7, 7, 29, V);
    w = step_logits(**one, kSeqs, more);
    expect_trim_agrees(DType::kBF16, step_logits(**side, kSeqs, more), w, "second prefill");
    const auto next = greedy_pieces(w, kSeqs, kSeqs, V);
    w = step_logits(**one, kSeqs, next);
    expect_trim_agrees(DType::kBF16, step_logits(**side, kSeqs, next), w, "decode after them");
}

// With DUALITY_OUT_PROJ_SPLIT=2, decode passes whose out_proj goes to cuBLASLt (17+
// rows) run it as split-k (Gemm::run_split_k: f32 parts that the next add + RMSNorm sums,
// cuda::HParts). Bf16 models of the bundled one, GEMM tuning off, the decode gate off and the
// decode GEMM at its default: `whole` (=1, forced), `split`, and `split_direct` (split,
// without CUDA graphs, so a batch of 20 runs 20 rows, not its bucket's 32). Prefill passes and
// batch-1 decode passes do not split, so their logits are bit for bit equal to `whole`'s; decode
// passes of 32 and 20 sequences agree within the bf16 policy (rel-L2 <= 3e-2, docs/numerics.md)
// but not bit for bit (the parts are added in f32 where the whole product rounds h to bf16:
// proof that the split ran).
TEST(CudaModel, Bf16SplitOutProjMatchesTheWholeProduct) {
    REQUIRE_GPU();
    constexpr int kSeqs = 32;
    auto load = [&](const char* splits, bool graphs) {
        ScopedEnv env({{"DUALITY_GEMM_TUNE", "0"},
                       {"DUALITY_OUT_PROJ_SPLIT", splits},
                       {"DUALITY_DECODE_GATE", "0"},
                       {"DUALITY_DECODE_GEMM", "auto"}});
        LoadOptions o = cuda_options(DType::kBF16, kSeqs);
        o.cuda_graphs = graphs;
        return Model::load(test::bundled_model_dir(), o);
    };
    auto whole = load("1", true), split = load("2", true), split_direct = load("2", false);
    ASSERT_TRUE(whole.is_ok() && split.is_ok() && split_direct.is_ok()) << whole.status().message();
    const int64_t V = (*whole)->config().vocab_size;
    const std::vector<std::vector<int32_t>> tokens = prompts(kSeqs, 5, 3, 97, 13, V);
    for (int n_seq : {kSeqs, 20, 1}) {
        for (auto* m : {&whole, &split, &split_direct})
            for (int s = 0; s < kSeqs; ++s) ASSERT_TRUE((**m)->reset_slot(s).is_ok());
        std::vector<float> w = step_logits(**whole, n_seq, tokens);
        std::vector<float> p = step_logits(**split, n_seq, tokens);
        std::vector<float> d = step_logits(**split_direct, n_seq, tokens);
        ASSERT_EQ(p.size(), w.size());
        ASSERT_EQ(d.size(), w.size());
        EXPECT_EQ(p, w) << "prefill of " << n_seq;
        EXPECT_LE(rel_l2(d, w), 3e-2) << "prefill of " << n_seq << " without graphs";
        for (int step = 0; step < 4; ++step) {
            const std::vector<std::vector<int32_t>> next = greedy_pieces(w, n_seq, kSeqs, V);
            w = step_logits(**whole, n_seq, next);
            p = step_logits(**split, n_seq, next);
            d = step_logits(**split_direct, n_seq, next);
            ASSERT_EQ(p.size(), w.size());
            ASSERT_EQ(d.size(), w.size());
            EXPECT_LE(rel_l2(p, w), 3e-2) << "decode step " << step << " of " << n_seq;
            EXPECT_LE(rel_l2(d, w), 3e-2) << "decode step " << step << " of " << n_seq;
            if (n_seq == 1) {
                EXPECT_EQ(p, w) << "decode step " << step << ": batch 1 does not split";
            } else {
                EXPECT_NE(p, w) << "decode step " << step << " of " << n_seq
                                << ": the split did not run";
                EXPECT_NE(d, w) << "decode step " << step << " of " << n_seq
                                << ": the split did not run without graphs";
            }
        }
    }
}

// DUALITY_OUT_PROJ_SPLIT=auto (the default) splits out_proj in two k-parts for models whose
// out_proj has 4 Mi weights or more (d_inner · d_model: the 780m's 3072 · 1536 and up), from the
// first decode bucket whose product goes to cuBLASLt; below that, and with =1, never.
// Two-layer random models of the 780m's and the 370m's widths.
TEST(CudaModel, OutProjSplitsByDefaultFromThe780mWidth) {
    REQUIRE_GPU();
    auto info = [](const char* preset, const char* env) {
        ScopedEnv scoped({{"DUALITY_OUT_PROJ_SPLIT", env},
                          {"DUALITY_GEMM_TUNE", "0"},
                          {"DUALITY_DECODE_GATE", "0"},
                          {"DUALITY_DECODE_GEMM", "auto"}});
        auto config = preset_config(preset);
        EXPECT_TRUE(config.is_ok());
        if (!config.is_ok()) return DeviceInfo{};
        config->n_layer = 2;
        auto m = Model::random(*config, cuda_options(DType::kBF16, 32), 7);
        EXPECT_TRUE(m.is_ok()) << m.status().message();
        return m.is_ok() ? (*m)->device_info() : DeviceInfo{};
    };
    const DeviceInfo wide = info("mamba2-780m", "auto");
    EXPECT_EQ(wide.out_proj_split, 2);
    // From where out_proj leaves our decode GEMM (2-16 rows by default), never at batch 1.
    EXPECT_GT(wide.out_proj_split_rows, 1);
    EXPECT_LE(wide.out_proj_split_rows, 32);
    EXPECT_EQ(info("mamba2-370m", "auto").out_proj_split, 1);
    EXPECT_EQ(info("mamba2-780m", "1").out_proj_split, 1);
    EXPECT_EQ(info("mamba2-370m", "4").out_proj_split, 4);
}

// d_state 256 (a two-layer model of the 130m's width): the fused SSD takes it with chunks of 128
// tokens (the config's 256 does not fit its shared memory). Its prefill and decode logits, and
// the five-step path's (DUALITY_SSD_PATH=five-step, the config's chunk 256), agree with the
// sequential scan's (DUALITY_SSD_PATH=scan, chunk-free) within the bf16 policy (rel-L2 <= 3e-2,
// docs/numerics.md). Prompts of 1-700 tokens, so chunk tables of 1-6 chunks per sequence, then
// two greedy decode steps.
TEST(CudaModel, Bf16FusedSsdTakesDState256) {
    REQUIRE_GPU();
    constexpr int kSeqs = 4;
    auto load = [](const char* path) {
        ScopedEnv env({{"DUALITY_GEMM_TUNE", "0"}, {"DUALITY_SSD_PATH", path}});
        auto config = preset_config("mamba2-130m");
        EXPECT_TRUE(config.is_ok());
        config->n_layer = 2;
        config->d_state = 256;
        return Model::random(*config, cuda_options(DType::kBF16, kSeqs), 11);
    };
    auto fused = load("fused"), five = load("five-step"), scan = load("scan");
    ASSERT_TRUE(fused.is_ok() && five.is_ok() && scan.is_ok()) << fused.status().message();
    EXPECT_EQ((*fused)->device_info().ssd_prefill, "fused");
    EXPECT_EQ((*fused)->device_info().ssd_chunk, 128);
    EXPECT_EQ((*five)->device_info().ssd_prefill, "five-step");
    EXPECT_EQ((*five)->device_info().ssd_chunk, 256);
    EXPECT_EQ((*scan)->device_info().ssd_prefill, "scan");
    const int64_t V = (*scan)->config().vocab_size;
    std::vector<std::vector<int32_t>> pieces = prompts(kSeqs, 1, 233, 17, 31, V);
    for (int step = 0; step < 3; ++step) {
        const std::vector<float> f = step_logits(**fused, kSeqs, pieces),
                                 c = step_logits(**five, kSeqs, pieces),
                                 r = step_logits(**scan, kSeqs, pieces);
        ASSERT_FALSE(r.empty());
        ASSERT_EQ(f.size(), r.size());
        ASSERT_EQ(c.size(), r.size());
        EXPECT_LE(rel_l2(f, r), 3e-2) << "fused, step " << step;
        EXPECT_LE(rel_l2(c, r), 3e-2) << "five-step, step " << step;
        if (step == 0) {
            EXPECT_NE(f, c) << "the same bits: did the fused SSD run?";
        }
        pieces = greedy_pieces(r, kSeqs, kSeqs, V);
    }
}

}  // namespace
}  // namespace duality
