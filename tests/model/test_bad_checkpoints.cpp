// Broken and inconsistent checkpoint folders: every one must fail to load with an error that
// names the file and the field or tensor at fault (and never crash).
#include <gtest/gtest.h>

#include <functional>

#include "duality/model.h"
#include "loader/safetensors.h"
#include "model/golden.h"
#include "test_util.h"

namespace duality {
namespace {

namespace fs = std::filesystem;

// Rewrites <dir>/model.safetensors after `edit` changes its entries.
void rewrite_safetensors(const fs::path& dir,
                         const std::function<void(std::vector<test::StEntry>&)>& edit) {
    const std::string bytes = test::read_file(dir / "model.safetensors");
    auto parsed = parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                    "model.safetensors");
    ASSERT_TRUE(parsed.is_ok());
    std::vector<test::StEntry> entries;
    for (const auto& [name, t] : *parsed) {
        const char* dtype = t.dtype == DType::kF32    ? "F32"
                            : t.dtype == DType::kBF16 ? "BF16"
                                                      : "F16";
        entries.push_back(
            {name, dtype, t.shape, std::string(reinterpret_cast<const char*>(t.data), t.nbytes)});
    }
    edit(entries);
    test::write_file(dir / "model.safetensors", test::make_safetensors(entries));
}

void replace_in_file(const fs::path& p, const std::string& from, const std::string& to) {
    std::string s = test::read_file(p);
    const size_t pos = s.find(from);
    ASSERT_NE(pos, std::string::npos) << from;
    s.replace(pos, from.size(), to);
    test::write_file(p, s);
}

struct BadCase {
    const char* name;
    const char* fixture;
    std::function<void(const fs::path&)> corrupt;
    std::vector<const char*> must_mention;
};

std::vector<BadCase> bad_cases() {
    return {
        {"no_weights",
         "hf_tiny_f32",
         [](const fs::path& d) { fs::remove(d / "model.safetensors"); },
         {"no weights found"}},
        {"no_config",
         "hf_tiny_f32",
         [](const fs::path& d) { fs::remove(d / "config.json"); },
         {"config.json"}},
        {"empty_config",
         "hf_tiny_f32",
         [](const fs::path& d) { test::write_file(d / "config.json", ""); },
         {"config.json", "invalid JSON"}},
        {"empty_weights",
         "hf_tiny_f32",
         [](const fs::path& d) { test::write_file(d / "model.safetensors", ""); },
         {"model.safetensors", "too short"}},
        {"truncated_weights",
         "hf_tiny_f32",
         [](const fs::path& d) {
             const std::string s = test::read_file(d / "model.safetensors");
             test::write_file(d / "model.safetensors", s.substr(0, s.size() / 2));
         },
         {"model.safetensors"}},
        {"garbage_weights",
         "hf_tiny_f32",
         [](const fs::path& d) {
             test::write_file(d / "model.safetensors", std::string(4096, 'z'));
         },
         {"model.safetensors", "header length"}},
        {"config_wider_than_weights",
         "hf_tiny_f32",
         [](const fs::path& d) {
             replace_in_file(d / "config.json", "\"state_size\": 16", "\"state_size\": 32");
         },
         {"backbone.layers.0.mixer.in_proj.weight", "shape"}},
        {"config_more_layers",
         "hf_tiny_f32",
         [](const fs::path& d) {
             replace_in_file(d / "config.json", "\"num_hidden_layers\": 2",
                             "\"num_hidden_layers\": 3");
         },
         {"missing tensor", "backbone.layers.2."}},
        {"config_fewer_layers",
         "hf_tiny_f32",
         [](const fs::path& d) {
             replace_in_file(d / "config.json", "\"num_hidden_layers\": 2",
                             "\"num_hidden_layers\": 1");
         },
         {"unexpected tensor", "backbone.layers.1."}},
        {"config_untied_without_head",
         "hf_tiny_f32",
         [](const fs::path& d) {
             replace_in_file(d / "config.json", "\"tie_word_embeddings\": true",
                             "\"tie_word_embeddings\": false");
         },
         {"lm_head.weight"}},
        {"missing_tensor",
         "hf_tiny_f32",
         [](const fs::path& d) {
             rewrite_safetensors(d, [](auto& e) {
                 std::erase_if(
                     e, [](const auto& x) { return x.name == "backbone.layers.1.mixer.A_log"; });
             });
         },
         {"missing tensor", "backbone.layers.1.mixer.A_log"}},
        {"integer_dtype",
         "hf_tiny_f32",
         [](const fs::path& d) {
             rewrite_safetensors(d, [](auto& e) {
                 for (auto& x : e)
                     if (x.name == "backbone.norm_f.weight") x.dtype = "I32";
             });
         },
         {"backbone.norm_f.weight", "dtype i32"}},
        {"wrong_shape",
         "hf_tiny_f32",
         [](const fs::path& d) {
             rewrite_safetensors(d, [](auto& e) {
                 for (auto& x : e)
                     if (x.name == "backbone.layers.0.mixer.D") x.shape = {2, x.shape[0] / 2};
             });
         },
         {"backbone.layers.0.mixer.D", "shape"}},
        {"nan_weight",
         "hf_tiny_f32",
         [](const fs::path& d) {
             rewrite_safetensors(d, [](auto& e) {
                 for (auto& x : e)
                     if (x.name == "backbone.norm_f.weight")
                         x.bytes.replace(0, 4, "\x00\x00\xc0\x7f", 4);
             });
         },
         {"backbone.norm_f.weight", "non-finite"}},
        {"shard_missing",
         "hf_sharded_f32_dtlimit",
         [](const fs::path& d) { fs::remove(d / "model-00002-of-00002.safetensors"); },
         {"model-00002-of-00002.safetensors", "no such file"}},
        {"index_points_elsewhere",
         "hf_sharded_f32_dtlimit",
         [](const fs::path& d) {
             replace_in_file(d / "model.safetensors.index.json",
                             "\"backbone.norm_f.weight\": \"model-00002",
                             "\"backbone.norm_f.weight\": \"model-00001");
         },
         {"backbone.norm_f.weight", "listed in"}},
        {"index_path_traversal",
         "hf_sharded_f32_dtlimit",
         [](const fs::path& d) {
             replace_in_file(d / "model.safetensors.index.json",
                             "\"backbone.norm_f.weight\": \"model-00002",
                             "\"backbone.norm_f.weight\": \"../model-00002");
         },
         {"plain file name"}},
        {"index_name_with_nul",
         "hf_sharded_f32_dtlimit",  // opened the name before the NUL
         [](const fs::path& d) {
             replace_in_file(d / "model.safetensors.index.json",
                             "\"backbone.norm_f.weight\": \"model-00002-of-00002.safetensors\"",
                             "\"backbone.norm_f.weight\": "
                             "\"model-00002-of-00002.safetensors\\u0000x\"");
         },
         {"plain file name", "\\u0000"}},
        {"bin_truncated",
         "ssm_bin_f32",
         [](const fs::path& d) {
             const std::string s = test::read_file(d / "pytorch_model.bin");
             test::write_file(d / "pytorch_model.bin", s.substr(0, s.size() - 100));
         },
         {"pytorch_model.bin"}},
        {"bin_empty",
         "ssm_bin_f32",
         [](const fs::path& d) { test::write_file(d / "pytorch_model.bin", ""); },
         {"pytorch_model.bin", "not a zip"}},
        {"ssm_config_missing_key",
         "ssm_bin_f32",
         [](const fs::path& d) {
             replace_in_file(d / "config.json", "\"n_layer\"", "\"n_layers\"");
         },
         {"config.json", "n_layer", "missing"}},
        {"ssm_config_wrong_ngroups",
         "ssm_bin_bf16_groups",
         [](const fs::path& d) {
             replace_in_file(d / "config.json", "\"ngroups\": 4", "\"ngroups\": 2");
         },
         {"in_proj.weight", "shape"}},
    };
}

class BadCheckpoint : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadCheckpoint, FailsWithANamedError) {
    const BadCase& c = GetParam();
    test::TempDir tmp;
    const fs::path dir = tmp.path() / c.fixture;
    test::copy_dir(test::golden_dir() / c.fixture, dir);
    c.corrupt(dir);
    auto model = Model::load(dir);
    ASSERT_FALSE(model.is_ok()) << "loaded a broken checkpoint: " << c.name;
    const std::string& m = model.status().message();
    for (const char* word : c.must_mention) EXPECT_NE(m.find(word), std::string::npos) << m;
}

INSTANTIATE_TEST_SUITE_P(Model, BadCheckpoint, ::testing::ValuesIn(bad_cases()),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace duality
