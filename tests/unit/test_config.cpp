#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "duality/config.h"
#include "test_util.h"

namespace duality {
namespace {

const char* kHfConfig = R"({
  "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2",
  "hidden_size": 256, "num_hidden_layers": 8, "num_heads": 8, "head_dim": 64, "expand": 2,
  "n_groups": 1, "state_size": 128, "conv_kernel": 4, "chunk_size": 256, "vocab_size": 50288,
  "tie_word_embeddings": true, "use_bias": false, "use_conv_bias": true,
  "layer_norm_epsilon": 1e-05, "time_step_limit": [0.0, {"__float__": "Infinity"}],
  "eos_token_id": 0, "some_unknown_key": {"nested": [1, 2, 3]}
})";

TEST(Config, HuggingFaceFields) {
    auto c = parse_model_config(kHfConfig, "config.json");
    ASSERT_TRUE(c.is_ok()) << c.status().message();
    EXPECT_EQ(c->format, CheckpointFormat::kHuggingFace);
    EXPECT_EQ(c->d_model, 256);
    EXPECT_EQ(c->d_inner, 512);
    EXPECT_EQ(c->n_head, 8);
    EXPECT_EQ(c->conv_dim(), 512 + 2 * 128);
    EXPECT_EQ(c->d_in_proj(), 2 * 512 + 2 * 128 + 8);
    EXPECT_EQ(c->vocab_padded, 50288);
    EXPECT_TRUE(c->tie_embeddings);
    EXPECT_EQ(c->dt_min, 0.0f);
    EXPECT_TRUE(std::isinf(c->dt_max));
    EXPECT_EQ(c->eos_token_id, 0);
}

TEST(Config, PythonInfinityAndNaNLiterals) {
    std::string text = kHfConfig;
    const std::string encoded = R"({"__float__": "Infinity"})";
    text.replace(text.find(encoded), encoded.size(), "Infinity");
    auto c = parse_model_config(text, "config.json");
    ASSERT_TRUE(c.is_ok()) << c.status().message();
    EXPECT_TRUE(std::isinf(c->dt_max));
    // NaN in a field we do not use is accepted; NaN where we need a number is an error.
    auto with_nan = parse_model_config(R"({"hidden_size": 64, "num_hidden_layers": 1,
        "vocab_size": 10, "n_groups": 1, "head_dim": 32, "initializer_range": NaN,
        "time_step_limit": [0.0, NaN]})",
                                       "cfg");
    ASSERT_FALSE(with_nan.is_ok());
    EXPECT_NE(with_nan.status().message().find("time_step_limit"), std::string::npos);
    // The literal inside a string is left alone.
    auto in_string = parse_model_config(R"({"hidden_size": 64, "num_hidden_layers": 1,
        "vocab_size": 10, "n_groups": 1, "head_dim": 32, "note": "NaN Infinity"})",
                                        "cfg");
    EXPECT_TRUE(in_string.is_ok()) << in_string.status().message();
}

TEST(Config, StateSpacesFormatPadsVocab) {
    auto c = parse_model_config(R"({"d_model": 768, "d_intermediate": 0, "n_layer": 24,
        "vocab_size": 50277, "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [],
        "attn_cfg": {}, "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
        "pad_vocab_size_multiple": 16, "tie_embeddings": true})",
                                "config.json");
    ASSERT_TRUE(c.is_ok()) << c.status().message();
    EXPECT_EQ(c->format, CheckpointFormat::kStateSpaces);
    EXPECT_EQ(c->vocab_size, 50277);
    EXPECT_EQ(c->vocab_padded, 50288);
    EXPECT_EQ(c->n_head, 24);  // mamba2-130m: E = 1536, headdim 64
    EXPECT_EQ(c->d_state, 128);
    EXPECT_EQ(c->n_group, 1);
    EXPECT_EQ(c->d_in_proj(), 3352);  // spec section 1
    EXPECT_EQ(c->conv_dim(), 1792);
}

struct BadConfig {
    const char* json;
    const char* must_mention;
};

class BadConfigs : public ::testing::TestWithParam<BadConfig> {};

TEST_P(BadConfigs, ErrorNamesTheField) {
    auto c = parse_model_config(GetParam().json, "dir/config.json");
    ASSERT_FALSE(c.is_ok());
    const std::string& m = c.status().message();
    EXPECT_NE(m.find("dir/config.json"), std::string::npos) << m;
    EXPECT_NE(m.find(GetParam().must_mention), std::string::npos) << m;
}

INSTANTIATE_TEST_SUITE_P(
    Config, BadConfigs,
    ::testing::Values(
        BadConfig{"", "invalid JSON"}, BadConfig{"{", "invalid JSON"},
        BadConfig{"[1, 2]", "not a JSON object"},
        BadConfig{R"({"num_hidden_layers": 2, "vocab_size": 10})", "hidden_size"},
        BadConfig{R"({"hidden_size": 64, "vocab_size": 10})", "num_hidden_layers"},
        BadConfig{R"({"hidden_size": "64", "num_hidden_layers": 2, "vocab_size": 10})",
                  "hidden_size"},
        BadConfig{R"({"hidden_size": -64, "num_hidden_layers": 2, "vocab_size": 10})",
                  "hidden_size"},
        BadConfig{R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10, "n_groups": 1,
                      "head_dim": 48})",
                  "head_dim"},
        BadConfig{R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10, "n_groups": 3,
                      "head_dim": 32})",
                  "n_groups"},
        BadConfig{R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10, "n_groups": 1,
                      "head_dim": 32, "num_heads": 5})",
                  "num_heads"},
        BadConfig{R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10,
                      "model_type": "mamba"})",
                  "model_type"},
        BadConfig{R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10,
                      "hidden_size": 32})",
                  "duplicate key"},
        BadConfig{R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10, "n_groups": 1,
                      "head_dim": 32, "time_step_limit": [1.0]})",
                  "time_step_limit"},
        BadConfig{R"({"d_model": 64, "n_layer": 2, "vocab_size": 10})", "ssm_cfg"},
        BadConfig{R"({"d_model": 64, "n_layer": 2, "vocab_size": 10, "ssm_cfg": {}})",
                  "ssm_cfg.layer"},
        BadConfig{R"({"d_model": 64, "n_layer": 2, "vocab_size": 10,
                      "ssm_cfg": {"layer": "Mamba2", "headdim": 48}})",
                  "headdim"},
        BadConfig{R"({"d_model": 64, "n_layer": 2, "vocab_size": 10, "d_intermediate": 128,
                      "ssm_cfg": {"layer": "Mamba2"}})",
                  "d_intermediate"},
        BadConfig{R"({"d_model": 64, "n_layer": 2, "vocab_size": 10, "attn_layer_idx": [1],
                      "ssm_cfg": {"layer": "Mamba2"}})",
                  "attn_layer_idx"},
        BadConfig{R"({"d_model": 64, "n_layer": 2, "vocab_size": 10,
                      "ssm_cfg": {"layer": "Mamba2", "ngroups": "two"}})",
                  "ssm_cfg.ngroups"},
        // chunk_size sizes the SSD's Q × Q tiles and no weight checks it.
        BadConfig{R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10, "n_groups": 1,
                      "head_dim": 32, "chunk_size": 16777216})",
                  "chunk_size"},
        BadConfig{R"({"d_model": 64, "n_layer": 2, "vocab_size": 10,
                      "ssm_cfg": {"layer": "Mamba2", "chunk_size": 8192}})",
                  "ssm_cfg.chunk_size"},
        // Special token ids must be rows of the vocabulary.
        BadConfig{R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10, "n_groups": 1,
                      "head_dim": 32, "eos_token_id": 10})",
                  "\"eos_token_id\" = 10 is not a token id: it must be below vocab_size = 10"},
        BadConfig{R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10, "n_groups": 1,
                      "head_dim": 32, "bos_token_id": 50000})",
                  "\"bos_token_id\" = 50000"}));

TEST(Config, SpecialTokenIdsInsideTheVocabularyAreKept) {
    auto c = parse_model_config(R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10,
                                    "n_groups": 1, "head_dim": 32, "eos_token_id": 9,
                                    "bos_token_id": -1})",
                                "config.json");
    ASSERT_TRUE(c.is_ok()) << c.status().message();
    EXPECT_EQ(c->eos_token_id, 9);
    EXPECT_EQ(c->bos_token_id, -1);
}

// A field holding a value nested 200,000 deep: the error describes it briefly (the whole value
// printed recursively overflowed the stack).
TEST(Config, DeeplyNestedFieldIsAnErrorNotACrash) {
    constexpr int kDepth = 200000;
    const std::string value = std::string(kDepth, '[') + std::string(kDepth, ']');
    for (const char* key : {"hidden_size", "time_step_limit"}) {
        std::string text = R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10})";
        if (std::string(key) == "hidden_size")
            text = R"({"hidden_size": )" + value + R"(, "num_hidden_layers": 2, "vocab_size": 10})";
        else
            text = R"({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10, "n_groups": 1,
                       "head_dim": 32, "time_step_limit": [)" +
                   value + ", 1]}";
        auto c = parse_model_config(text, "dir/config.json");
        ASSERT_FALSE(c.is_ok()) << key;
        const std::string& m = c.status().message();
        EXPECT_NE(m.find(key), std::string::npos) << m;
        EXPECT_NE(m.find("an array of 1 element"), std::string::npos) << m;
        EXPECT_LT(m.size(), 300u) << m;
    }
}

TEST(Config, MissingFileNamesThePath) {
    test::TempDir dir;
    auto c = load_model_config(dir.path());
    ASSERT_FALSE(c.is_ok());
    EXPECT_NE(c.status().message().find("config.json"), std::string::npos);
    auto c2 = load_model_config(dir.path() / "nope");
    ASSERT_FALSE(c2.is_ok());
    EXPECT_NE(c2.status().message().find("nope"), std::string::npos);
}

}  // namespace
}  // namespace duality
