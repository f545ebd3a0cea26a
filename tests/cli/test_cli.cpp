// The real `duality` binary, run as a user would.
#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "model/golden.h"
#include "test_util.h"

namespace duality {
namespace {

TEST(Cli, LogitsJsonMatchesTheReference) {
    const std::string dir = (test::golden_dir() / "ssm_bin_f32").string();
    const test::Golden g = test::load_golden("ssm_bin_f32");
    const auto ids = g.i32("input_ids");
    const auto ref = g.f32("logits");
    std::string list;
    for (size_t i = 0; i < ids.size(); ++i) list += (i ? "," : "") + std::to_string(ids[i]);
    // Whole, and in pieces of 7 tokens with the state carried over (45 ids: a last piece of 3).
    for (const char* piece : {"", " --piece 7"}) {
        SCOPED_TRACE(piece);
        test::CliResult r =
            test::run_duality("logits --model " + dir + " --ids " + list + " --json" + piece);
        ASSERT_EQ(r.exit_code, 0) << r.out;
        auto j = nlohmann::json::parse(r.out);
        const auto argmax = j.at("argmax").get<std::vector<int64_t>>();
        const auto last = j.at("last").get<std::vector<float>>();
        const size_t V = 250;  // the real vocabulary: padded rows are never exposed
        ASSERT_EQ(argmax.size(), ids.size());
        ASSERT_EQ(last.size(), V);
        for (size_t t = 0; t < ids.size(); ++t) {
            const float* row = ref.data() + t * V;
            EXPECT_EQ(argmax[t], std::max_element(row, row + V) - row) << t;
        }
        for (size_t v = 0; v < V; ++v) EXPECT_NEAR(last[v], ref[(ids.size() - 1) * V + v], 1e-4);
    }
}

TEST(Cli, BadInputGivesAClearErrorAndNonZeroExit) {
    const std::string good = (test::golden_dir() / "hf_tiny_f32").string();
    struct Case {
        std::string args;
        const char* must_mention;
    };
    for (const Case& c : std::vector<Case>{
             {"logits --model /nonexistent/model --ids 1", "/nonexistent/model"},
             {"logits --model " + good + " --ids 1,x,3", "--ids: \"x\" is not a token id"},
             {"logits --model " + good + " --ids ''", "--ids"},
             {"logits --model " + good + " --ids 1,999999", "outside the vocabulary"},
             {"logits --ids 1", "--model"},
             {"frobnicate", "frobnicate"},
         }) {
        test::CliResult r = test::run_duality(c.args);
        EXPECT_NE(r.exit_code, 0) << c.args;
        EXPECT_NE(r.out.find(c.must_mention), std::string::npos) << c.args << "\n" << r.out;
    }
}

TEST(Cli, HelpListsTheCommands) {
    test::CliResult r = test::run_duality("--help");
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_NE(r.out.find("logits"), std::string::npos) << r.out;
    test::CliResult sub = test::run_duality("logits --help");
    EXPECT_EQ(sub.exit_code, 0);
    EXPECT_NE(sub.out.find("--ids"), std::string::npos) << sub.out;
}

}  // namespace
}  // namespace duality
