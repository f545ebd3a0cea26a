// Randomized corruption of real checkpoint files: thousands of mutated copies (bit flips, byte
// overwrites, truncations, insertions) go through the parsers and the weight validation. Each
// must either load or fail with a Status; crashes and sanitizer reports fail the run (CI runs
// this under ASan/UBSan). The libFuzzer targets in tests/fuzz explore further.
#include <gtest/gtest.h>

#include <random>

#include "duality/config.h"
#include "loader/safetensors.h"
#include "loader/torch_bin.h"
#include "loader/torch_pickle.h"
#include "model/weights.h"
#include "test_util.h"

namespace duality {
namespace {

std::string mutate(std::string s, std::mt19937& rng) {
    std::uniform_int_distribution<int> kind(0, 4);
    const int n_edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < n_edits && !s.empty(); ++e) {
        const size_t pos = rng() % s.size();
        switch (kind(rng)) {
            case 0: s[pos] = static_cast<char>(s[pos] ^ (1 << (rng() % 8))); break;
            case 1: s[pos] = static_cast<char>(rng()); break;
            case 2: s.resize(pos); break;
            case 3: s.insert(pos, std::string(1 + rng() % 8, static_cast<char>(rng()))); break;
            case 4: {  // bias edits toward the header, where the structure lives
                const size_t p = rng() % std::min<size_t>(s.size(), 512);
                s[p] = static_cast<char>(rng());
                break;
            }
        }
    }
    return s;
}

TEST(RandomCorruption, SafetensorsCheckpoint) {
    const auto dir = test::golden_dir() / "hf_tiny_f32";
    const std::string original = test::read_file(dir / "model.safetensors");
    auto config = load_model_config(dir);
    ASSERT_TRUE(config.is_ok());
    std::mt19937 rng(1);
    int loaded = 0;
    for (int i = 0; i < 3000; ++i) {
        const std::string bytes = mutate(original, rng);
        auto parsed = parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()),
                                        bytes.size(), "m.safetensors");
        if (!parsed.is_ok()) {
            EXPECT_FALSE(parsed.status().message().empty());
            continue;
        }
        TensorStore store;
        bool ok = true;
        for (auto& [name, t] : *parsed) ok = ok && store.add(name, t).is_ok();
        if (ok && load_weights(store, *config).is_ok()) ++loaded;
    }
    // Mutations in the data section leave a valid file: some must load, or the test is not
    // exercising the success path.
    EXPECT_GT(loaded, 0);
}

TEST(RandomCorruption, TorchBinCheckpoint) {
    const auto dir = test::golden_dir() / "ssm_bin_f32";
    const std::string original = test::read_file(dir / "pytorch_model.bin");
    std::mt19937 rng(2);
    for (int i = 0; i < 1500; ++i) {
        const std::string bytes = mutate(original, rng);
        TensorStore store;
        Status s = add_torch_bin(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                 "pytorch_model.bin", store);
        if (!s.is_ok()) {
            EXPECT_FALSE(s.message().empty());
        }
    }
}

TEST(RandomCorruption, Pickle) {
    // Mutate data.pkl itself (zip entries carry CRCs, so damage inside the archive would stop at
    // the zip layer): the unpickler meets every corruption directly.
    const std::string original = test::read_zip_entry(
        test::read_file(test::golden_dir() / "ssm_bin_f32" / "pytorch_model.bin"), "data.pkl");
    ASSERT_FALSE(original.empty());
    auto clean = unpickle_state_dict(reinterpret_cast<const uint8_t*>(original.data()),
                                     original.size(), "data.pkl");
    ASSERT_TRUE(clean.is_ok()) << clean.status().message();
    std::mt19937 rng(3);
    for (int i = 0; i < 5000; ++i) {
        const std::string bytes = mutate(original, rng);
        auto r = unpickle_state_dict(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                     "data.pkl");
        if (r.is_ok()) {
            for (const auto& t : *r) EXPECT_LE(t.offset, t.storage_numel);
        }
    }
}

TEST(RandomCorruption, Config) {
    const std::string original =
        test::read_file(test::golden_dir() / "hf_groups_bf16_untied" / "config.json");
    std::mt19937 rng(4);
    for (int i = 0; i < 3000; ++i) {
        const std::string text = mutate(original, rng);
        auto c = parse_model_config(text, "config.json");
        if (c.is_ok()) {
            EXPECT_GT(c->d_model, 0);
            EXPECT_EQ(c->n_head % c->n_group, 0);
            EXPECT_EQ(c->d_inner, c->n_head * c->head_dim);
        }
    }
}

}  // namespace
}  // namespace duality
