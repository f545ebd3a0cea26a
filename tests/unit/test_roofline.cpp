// The roofline formulas (src/engine/roofline.h) against the numbers the spec publishes (section
// 1: parameter counts; 10.1: prefill FLOPs; 10.3: decode bytes and bounds), each within the
// rounding of its printed digits.
#include <gtest/gtest.h>

#include "duality/config.h"
#include "engine/roofline.h"

namespace duality {
namespace {

ModelConfig preset(const std::string& name) {
    auto c = preset_config(name);
    EXPECT_TRUE(c.is_ok()) << c.status().message();
    return *c;
}

constexpr double kH100 = 3.35e12, kH200 = 4.8e12;

TEST(Roofline, ParameterCountsOfTheSpec) {
    EXPECT_EQ(roofline::param_count(preset("mamba2-130m")), 128989632);
    EXPECT_EQ(roofline::param_count(preset("mamba2-370m")), 368346624);
    EXPECT_EQ(roofline::param_count(preset("mamba2-780m")), 780161280);
    EXPECT_EQ(roofline::param_count(preset("mamba2-1.3b")), 1343757312);
    EXPECT_EQ(roofline::param_count(preset("mamba2-2.7b")), 2702599680);
    EXPECT_EQ(roofline::param_count(preset("codestral-7b")), 7285403648);
}

// Spec 10.3: weight bytes per token, SSM state r+w (fp32 / bf16), and the H100 / H200 bounds:
// weights only, + fp32 state, + bf16 state (tokens/s, batch 1). The table counts the conv state
// as (d_conv-1)·conv_dim·4 bytes per layer in all: conv_state_bytes = 2 per value, read + write.
struct DecodeRow {
    const char* model;
    double weight_gb, ssm_f32_mb, ssm_bf16_mb;
    double h100[3], h200[3];
};
constexpr DecodeRow kDecodeTable[] = {
    {"mamba2-130m", 0.258, 37.7, 18.9, {12986, 11308, 12078}, {18606, 16203, 17305}},
    {"mamba2-370m", 0.737, 100.7, 50.3, {4547, 3994, 4249}, {6516, 5723, 6089}},
    {"mamba2-780m", 1.560, 151.0, 75.5, {2147, 1955, 2046}, {3076, 2802, 2931}},
    {"mamba2-1.3b", 2.688, 201.3, 100.7, {1247, 1159, 1200}, {1786, 1660, 1720}},
    {"mamba2-2.7b", 5.405, 335.5, 167.8, {620, 583, 601}, {888, 836, 861}},
};

TEST(Roofline, DecodeBytesAndBoundsOfTheSpecTable) {
    for (const DecodeRow& r : kDecodeTable) {
        SCOPED_TRACE(r.model);
        const ModelConfig c = preset(r.model);
        const auto f32 = roofline::decode_bytes(c, DType::kBF16, DType::kF32, 2.0);
        const auto bf16 = roofline::decode_bytes(c, DType::kBF16, DType::kBF16, 2.0);
        EXPECT_NEAR(f32.weights / 1e9, r.weight_gb, 0.0005 + 1e-9);
        EXPECT_NEAR(f32.ssm_state / 1e6, r.ssm_f32_mb, 0.05 + 1e-9);
        EXPECT_NEAR(bf16.ssm_state / 1e6, r.ssm_bf16_mb, 0.05 + 1e-9);
        auto weights_only = f32;
        weights_only.ssm_state = weights_only.conv_state = 0;
        const double peaks[2] = {kH100, kH200};
        const double* published[2] = {r.h100, r.h200};
        for (int g = 0; g < 2; ++g) {
            const double bw = peaks[g];
            EXPECT_NEAR(roofline::decode_bound_tokens_per_s(weights_only, 1, bw), published[g][0],
                        0.5 + 1e-6);
            EXPECT_NEAR(roofline::decode_bound_tokens_per_s(f32, 1, bw), published[g][1],
                        0.5 + 1e-6);
            EXPECT_NEAR(roofline::decode_bound_tokens_per_s(bf16, 1, bw), published[g][2],
                        0.5 + 1e-6);
        }
        // Our engine keeps the conv state in f32: twice the table's conv bytes, < 0.3% slower.
        const auto ours = roofline::decode_bytes(c, DType::kBF16, DType::kF32);
        EXPECT_DOUBLE_EQ(ours.conv_state, 2.0 * f32.conv_state);
        EXPECT_NEAR(roofline::decode_bound_tokens_per_s(ours, 1, kH100) / r.h100[1], 1.0, 0.003);
    }
}

TEST(Roofline, BatchedDecodeBoundsOf2p7b) {
    // Spec 10.3: H100 bound at B = 8, 32, 64, 256: fp32 state 3.3k / 6.6k / 7.9k / 9.3k,
    // bf16 state 4.0k / 9.8k / 13.1k / 17.4k tokens/s; fp32 asymptote ≈ 10k.
    const ModelConfig c = preset("mamba2-2.7b");
    const auto f32 = roofline::decode_bytes(c, DType::kBF16, DType::kF32, 2.0);
    const auto bf16 = roofline::decode_bytes(c, DType::kBF16, DType::kBF16, 2.0);
    const int64_t batches[] = {8, 32, 64, 256};
    const double f32_k[] = {3.3, 6.6, 7.9, 9.3}, bf16_k[] = {4.0, 9.8, 13.1, 17.4};
    for (int i = 0; i < 4; ++i) {
        EXPECT_NEAR(roofline::decode_bound_tokens_per_s(f32, batches[i], kH100) / 1e3, f32_k[i],
                    0.05 + 1e-9);
        EXPECT_NEAR(roofline::decode_bound_tokens_per_s(bf16, batches[i], kH100) / 1e3, bf16_k[i],
                    0.05 + 1e-9);
    }
    EXPECT_NEAR(kH100 / f32.ssm_state / 1e3, 10.0, 0.05);
}

TEST(Roofline, PrefillFlopsOfTheSpec) {
    // Spec 10.1 at the 2.7B shape: MFLOP per token per layer.
    const ModelConfig c = preset("mamba2-2.7b");
    const auto f = roofline::prefill_flops_per_token(c, 8192);
    EXPECT_NEAR(f.in_proj / 1e6, 54.15, 0.005);
    EXPECT_NEAR(f.out_proj / 1e6, 26.21, 0.005);
    EXPECT_NEAR(f.conv / 1e6, 0.043, 0.0005);
    EXPECT_NEAR(f.ssd / 1e6, 4.003, 0.0005);
    EXPECT_NEAR(f.layer() / 1e6, 84.4, 0.05);
    // Whole model: 5.40 GFLOP per token, 0.257 GFLOP per logit row; the SSD is 4.7%.
    EXPECT_NEAR(64 * f.layer() / 1e9, 5.40, 0.005);
    EXPECT_NEAR(roofline::logits_row_flops(c) / 1e9, 0.257, 0.0005);
    EXPECT_NEAR(100 * f.ssd / f.layer(), 4.7, 0.05);
    // Compute-bound prefill on H100: 5.46 µs per token, at most 183k tokens/s.
    const double tokens_per_s = 989e12 / (64 * f.layer());
    EXPECT_NEAR(tokens_per_s / 1e3, 183, 0.5);
    // prefill_flops: batch · L tokens plus one logit row per sequence.
    EXPECT_DOUBLE_EQ(roofline::prefill_flops(c, 8, 8192),
                     8.0 * 8192 * 64 * f.layer() + 8 * roofline::logits_row_flops(c));
    // Sequences shorter than a chunk have shorter chunks.
    const auto short_seq = roofline::prefill_flops_per_token(c, 64);
    EXPECT_LT(short_seq.ssd, f.ssd);
    EXPECT_EQ(short_seq.in_proj, f.in_proj);
}

TEST(Roofline, GpuTable) {
    auto peak = [](const char* name) { return roofline::known_gpu_peak(name); };
    ASSERT_TRUE(peak("NVIDIA H100 80GB HBM3"));
    EXPECT_EQ(peak("NVIDIA H100 80GB HBM3")->bytes_per_s, 3.35e12);
    EXPECT_EQ(peak("NVIDIA H100 80GB HBM3")->flops_per_s, 989e12);
    EXPECT_EQ(peak("NVIDIA H100 PCIe")->bytes_per_s, 2.0e12);
    EXPECT_EQ(peak("NVIDIA H100 PCIe")->flops_per_s, 756e12);
    EXPECT_EQ(peak("NVIDIA H200")->bytes_per_s, 4.8e12);
    EXPECT_EQ(peak("NVIDIA H200")->flops_per_s, 989e12);
    EXPECT_EQ(peak("NVIDIA A100-SXM4-80GB")->bytes_per_s, 2.039e12);
    EXPECT_EQ(peak("NVIDIA A100-SXM4-40GB")->bytes_per_s, 1.555e12);
    EXPECT_EQ(peak("NVIDIA A100-SXM4-40GB")->flops_per_s, 312e12);
    EXPECT_EQ(peak("NVIDIA L40S")->bytes_per_s, 0.864e12);
    EXPECT_EQ(peak("NVIDIA L40S")->flops_per_s, 362e12);
    EXPECT_FALSE(peak("NVIDIA GeForce RTX 4090"));
    EXPECT_FALSE(peak("CPU"));
}

}  // namespace
}  // namespace duality
