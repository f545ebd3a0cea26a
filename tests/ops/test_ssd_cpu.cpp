// CPU reference ops against their oracles: the chunked SSD against the sequential recurrence, and
// split (continued) runs of the conv and the SSD against one run over the whole input.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <sstream>
#include <vector>

#include "core/half.h"
#include "ops/cpu/ops.h"
#include "test_util.h"

namespace duality {
namespace {

struct SsdShape {
    int64_t seqlen, n_head, head_dim, d_state, n_group, chunk_size;
};

struct SsdInputs {
    SsdShape s;
    std::vector<float> x, B, C, dt, A, D, state0;
};

SsdInputs make_inputs(const SsdShape& s, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> dt_dist(1e-3f, 0.1f), a_dist(1.0f, 16.0f);
    SsdInputs in{s, {}, {}, {}, {}, {}, {}, {}};
    auto fill = [&](std::vector<float>& v, size_t n, auto&& gen) {
        v.resize(n);
        for (auto& e : v) e = gen();
    };
    fill(in.x, s.seqlen * s.n_head * s.head_dim, [&] { return normal(rng); });
    fill(in.B, s.seqlen * s.n_group * s.d_state, [&] { return normal(rng); });
    fill(in.C, s.seqlen * s.n_group * s.d_state, [&] { return normal(rng); });
    fill(in.dt, s.seqlen * s.n_head, [&] { return dt_dist(rng); });
    fill(in.A, s.n_head, [&] { return -a_dist(rng); });
    fill(in.D, s.n_head, [&] { return 1.0f + 0.1f * normal(rng); });
    fill(in.state0, s.n_head * s.head_dim * s.d_state, [&] { return 0.5f * normal(rng); });
    return in;
}

// Runs rows [t0, t1) from `state`.
std::vector<float> run(const SsdInputs& in, bool chunked, std::vector<float>& state, int64_t t0,
                       int64_t t1) {
    const SsdShape& s = in.s;
    std::vector<float> y((t1 - t0) * s.n_head * s.head_dim);
    SsdParams p;
    p.seqlen = t1 - t0;
    p.n_head = s.n_head;
    p.head_dim = s.head_dim;
    p.d_state = s.d_state;
    p.n_group = s.n_group;
    p.chunk_size = s.chunk_size;
    p.x = in.x.data() + t0 * s.n_head * s.head_dim;
    p.x_stride = s.n_head * s.head_dim;
    p.B = in.B.data() + t0 * s.n_group * s.d_state;
    p.C = in.C.data() + t0 * s.n_group * s.d_state;
    p.bc_stride = s.n_group * s.d_state;
    p.dt = in.dt.data() + t0 * s.n_head;
    p.A = in.A.data();
    p.D = in.D.data();
    p.state = state.data();
    p.y = y.data();
    if (chunked) {
        cpu::ssd_chunked(p, 2);
    } else {
        cpu::ssd_sequential(p, 2);
    }
    return y;
}

using test::rel_max_err;

class SsdChunkedVsSequential : public ::testing::TestWithParam<SsdShape> {};

TEST_P(SsdChunkedVsSequential, AgreeWithAndWithoutInitialState) {
    const SsdInputs in = make_inputs(GetParam(), 42);
    for (bool with_state : {false, true}) {
        std::vector<float> s_seq = with_state ? in.state0 : std::vector<float>(in.state0.size());
        std::vector<float> s_chk = s_seq;
        auto y_seq = run(in, false, s_seq, 0, in.s.seqlen);
        auto y_chk = run(in, true, s_chk, 0, in.s.seqlen);
        // f32 policy for SSD ops (docs/numerics.md): max error <= 1e-5 of the output's range.
        EXPECT_LT(rel_max_err(y_chk, y_seq), 1e-5) << "y, with_state=" << with_state;
        EXPECT_LT(rel_max_err(s_chk, s_seq), 1e-5) << "state, with_state=" << with_state;
    }
}

TEST_P(SsdChunkedVsSequential, SplitRunEqualsOneRun) {
    const SsdInputs in = make_inputs(GetParam(), 7);
    const int64_t L = in.s.seqlen, cut = L / 3;
    std::vector<float> whole_state(in.state0.size()), split_state(in.state0.size());
    auto y_whole = run(in, true, whole_state, 0, L);
    auto y_a = run(in, true, split_state, 0, cut);
    auto y_b = run(in, true, split_state, cut, L);
    y_a.insert(y_a.end(), y_b.begin(), y_b.end());
    EXPECT_LT(rel_max_err(y_a, y_whole), 1e-5);
    EXPECT_LT(rel_max_err(split_state, whole_state), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SsdChunkedVsSequential,
    ::testing::Values(SsdShape{1, 4, 16, 16, 1, 8}, SsdShape{7, 4, 16, 16, 1, 8},
                      SsdShape{37, 8, 16, 24, 2, 8},  // d_state not a power of two, G = 2
                      SsdShape{255, 8, 32, 64, 1, 64}, SsdShape{256, 8, 32, 64, 1, 64},
                      SsdShape{257, 8, 32, 64, 1, 64}, SsdShape{300, 8, 16, 32, 8, 256},
                      SsdShape{1000, 4, 64, 128, 1, 256},  // the Mamba-2 head shape
                      SsdShape{130, 6, 80, 20, 3, 32}),    // head_dim 80
    [](const auto& param_info) {
        const SsdShape& s = param_info.param;
        std::ostringstream name;  // (ostringstream: GCC 12 warns falsely on string concatenation)
        name << "L" << s.seqlen << "_H" << s.n_head << "_P" << s.head_dim << "_N" << s.d_state
             << "_G" << s.n_group << "_Q" << s.chunk_size;
        return name.str();
    });

// SsdParams::passed_f16 (the twin of the fused SSD's f16 passed states): one run over three
// chunks equals three one-chunk runs with the state rounded to f16 between them (the final state
// not), and differs from the f32 run by about one f16 rounding of the states it passed.
TEST(SsdChunkedCpu, PassedF16RoundsEachPassedState) {
    const SsdShape shape{96, 4, 16, 32, 2, 32};
    const SsdInputs in = make_inputs(shape, 11);
    std::vector<float> s_one = in.state0, s_f32 = in.state0, s_steps = in.state0;
    std::vector<float> y_one(shape.seqlen * shape.n_head * shape.head_dim);
    {
        SsdParams p;
        p.seqlen = shape.seqlen;
        p.n_head = shape.n_head;
        p.head_dim = shape.head_dim;
        p.d_state = shape.d_state;
        p.n_group = shape.n_group;
        p.chunk_size = shape.chunk_size;
        p.x = in.x.data();
        p.x_stride = shape.n_head * shape.head_dim;
        p.B = in.B.data();
        p.C = in.C.data();
        p.bc_stride = shape.n_group * shape.d_state;
        p.dt = in.dt.data();
        p.A = in.A.data();
        p.D = in.D.data();
        p.state = s_one.data();
        p.y = y_one.data();
        p.passed_f16 = true;
        cpu::ssd_chunked(p, 2);
    }
    std::vector<float> y_steps;
    for (int64_t t0 = 0; t0 < shape.seqlen; t0 += shape.chunk_size) {
        const std::vector<float> y = run(in, true, s_steps, t0, t0 + shape.chunk_size);
        y_steps.insert(y_steps.end(), y.begin(), y.end());
        if (t0 + shape.chunk_size < shape.seqlen)
            round_to_dtype(DType::kF16, s_steps.data(), s_steps.size());
    }
    EXPECT_LT(rel_max_err(y_one, y_steps), 1e-6);
    EXPECT_LT(rel_max_err(s_one, s_steps), 1e-6);
    const std::vector<float> y_f32 = run(in, true, s_f32, 0, shape.seqlen);
    EXPECT_NE(y_one, y_f32) << "no state was rounded";
    EXPECT_LT(rel_max_err(y_one, y_f32), 1e-3);
}

TEST(Conv1dCpu, MatchesTheDefinitionAndContinues) {
    const int64_t T = 9, C = 5, W = 4;
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    std::vector<float> x(T * C), w(C * W), b(C);
    for (auto& v : x) v = normal(rng);
    for (auto& v : w) v = normal(rng);
    for (auto& v : b) v = normal(rng);
    // Definition (spec 5.3): out[t,c] = silu(b[c] + Σ_k w[c,k] x[t-(W-1)+k, c]), zero padding.
    std::vector<float> expect(T * C);
    for (int64_t t = 0; t < T; ++t) {
        for (int64_t c = 0; c < C; ++c) {
            double acc = b[c];
            for (int64_t k = 0; k < W; ++k) {
                const int64_t tau = t - (W - 1) + k;
                if (tau >= 0) acc += static_cast<double>(w[c * W + k]) * x[tau * C + c];
            }
            expect[t * C + c] = static_cast<float>(acc / (1.0 + std::exp(-acc)));
        }
    }
    // One call, and the same input split 2 + 1 + 6 (L < W, L = 1, L > W) through the state.
    for (const std::vector<int64_t>& splits : {std::vector<int64_t>{9}, {2, 1, 6}, {1, 1, 1, 6}}) {
        std::vector<float> state((W - 1) * C, 0.0f), out(T * C);
        int64_t t0 = 0;
        for (int64_t len : splits) {
            Conv1dParams p;
            p.seqlen = len;
            p.channels = C;
            p.width = W;
            p.x = x.data() + t0 * C;
            p.x_stride = C;
            p.weight = w.data();
            p.bias = b.data();
            p.state = state.data();
            p.out = out.data() + t0 * C;
            cpu::conv1d_causal(p, 1);
            t0 += len;
        }
        for (int64_t i = 0; i < T * C; ++i) EXPECT_NEAR(out[i], expect[i], 1e-5) << i;
        // The state holds the last W-1 raw rows, oldest first.
        for (int64_t r = 0; r < W - 1; ++r)
            for (int64_t c = 0; c < C; ++c)
                EXPECT_EQ(state[r * C + c], x[(T - (W - 1) + r) * C + c]);
    }
}

TEST(GatedRmsNormCpu, NormalizesPerGroup) {
    // Two groups of 2 channels: each group is normalized on its own (mamba_ssm semantics).
    const std::vector<float> y = {1, 2, 30, 40}, z = {50, 50, 50, 50}, w = {1, 1, 1, 1};
    std::vector<float> out(4);
    cpu::gated_rms_norm(y.data(), z.data(), 4, w.data(), 0.0f, out.data(), 1, 4, 2, 1);
    // silu(50) == 50 to f32 precision; group 1: (1,2)*50 / rms, group 2 likewise.
    const float r1 = std::sqrt((1.0f + 4.0f) / 2.0f), r2 = std::sqrt((900.0f + 1600.0f) / 2.0f);
    EXPECT_NEAR(out[0], 1.0f / r1, 1e-5);
    EXPECT_NEAR(out[1], 2.0f / r1, 1e-5);
    EXPECT_NEAR(out[2], 30.0f / r2, 1e-5);
    EXPECT_NEAR(out[3], 40.0f / r2, 1e-5);
}

// The deferred normalization behind ssd_fused's gate epilogue: gate_partials, a linear map W (as
// out_proj) and add_rms_norm's RowScale give what gated_rms_norm (one group) then W give.
TEST(GatedRmsNormCpu, DeferredScaleCommutesWithALinearMap) {
    const int64_t rows = 3, n_head = 4, head_dim = 8, dim = n_head * head_dim, z_stride = 40;
    const int64_t d_out = 5;
    const float eps = 1e-5f;
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto draw = [&](int64_t n) {
        std::vector<float> v(static_cast<size_t>(n));
        for (float& x : v) x = normal(rng);
        return v;
    };
    const std::vector<float> y = draw(rows * dim), z = draw(rows * z_stride), w = draw(dim);
    const std::vector<float> W = draw(d_out * dim), res0 = draw(rows * d_out);
    const std::vector<float> ones(static_cast<size_t>(d_out), 1.0f);

    // Reference: normalize, project, add.
    std::vector<float> normed(static_cast<size_t>(rows * dim)),
        h(static_cast<size_t>(rows * d_out));
    cpu::gated_rms_norm(y.data(), z.data(), z_stride, w.data(), eps, normed.data(), rows, dim, dim,
                        1);
    cpu::gemm(normed.data(), dim, W.data(), nullptr, h.data(), rows, d_out, dim);
    std::vector<float> res_ref = res0, out_ref(static_cast<size_t>(rows * d_out));
    cpu::add_rms_norm(h.data(), res_ref.data(), ones.data(), eps, out_ref.data(), rows, d_out,
                      false, 1);

    // Deferred: gate partials, project the unnormalized rows, scale in the add.
    std::vector<float> g(static_cast<size_t>(rows * dim)), ssq(static_cast<size_t>(rows * n_head));
    cpu::gate_partials(y.data(), z.data(), z_stride, w.data(), g.data(), ssq.data(), rows, n_head,
                       head_dim);
    std::vector<float> hg(static_cast<size_t>(rows * d_out));
    cpu::gemm(g.data(), dim, W.data(), nullptr, hg.data(), rows, d_out, dim);
    std::vector<float> res = res0, out(static_cast<size_t>(rows * d_out));
    cpu::add_rms_norm(hg.data(), res.data(), ones.data(), eps, out.data(), rows, d_out, false, 1,
                      RowScale{ssq.data(), n_head, static_cast<float>(dim), eps});
    for (size_t i = 0; i < res.size(); ++i) {
        EXPECT_NEAR(res[i], res_ref[i], 1e-4f * (1.0f + std::fabs(res_ref[i]))) << i;
        EXPECT_NEAR(out[i], out_ref[i], 1e-4f * (1.0f + std::fabs(out_ref[i]))) << i;
    }
    // The scale changes the result: without it h is the unnormalized projection.
    std::vector<float> res_plain = res0;
    cpu::add_rms_norm(hg.data(), res_plain.data(), ones.data(), eps, out.data(), rows, d_out, false,
                      1);
    EXPECT_GT(std::fabs(res_plain[0] - res_ref[0]) + std::fabs(res_plain[1] - res_ref[1]), 1e-3f);
}

TEST(DtSoftplusCpu, ThresholdAndClamp) {
    const std::vector<float> raw = {-30.0f, 0.0f, 25.0f}, bias = {0.0f, 0.0f, 0.0f};
    std::vector<float> dt(3);
    cpu::dt_softplus(raw.data(), 3, bias.data(), 0.0f, INFINITY, dt.data(), 1, 3);
    EXPECT_NEAR(dt[0], std::exp(-30.0f), 1e-18);
    EXPECT_NEAR(dt[1], std::log(2.0f), 1e-7);
    EXPECT_EQ(dt[2], 25.0f);  // identity above the threshold 20
    cpu::dt_softplus(raw.data(), 3, bias.data(), 0.01f, 0.5f, dt.data(), 1, 3);
    EXPECT_EQ(dt[0], 0.01f);
    EXPECT_EQ(dt[2], 0.5f);
}

}  // namespace
}  // namespace duality

namespace duality {
namespace {

TEST(CrossEntropyCpu, MatchesADoublePrecisionLogSumExp) {
    const int64_t rows = 5, V = 1000;
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 4.0f);
    std::vector<float> logits(rows * V);
    for (auto& v : logits) v = normal(rng);
    logits[3 * V + 7] = 90.0f;  // a dominant logit: other terms underflow towards 0
    const std::vector<int32_t> targets = {0, 999, 500, 7, 42};
    std::vector<double> nll(rows);
    cpu::cross_entropy(logits.data(), rows, V, targets.data(), nll.data(), 2);
    for (int64_t r = 0; r < rows; ++r) {
        const float* row = logits.data() + r * V;
        const double mx = *std::max_element(row, row + V);
        double sum = 0;
        for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
        const double expect = std::log(sum) + mx - row[targets[r]];
        EXPECT_NEAR(nll[r], expect, 1e-5 * std::max(1.0, std::fabs(expect))) << r;
    }
}

}  // namespace
}  // namespace duality
