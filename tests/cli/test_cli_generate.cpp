// `duality generate`, `perplexity` and `inspect` on the bundled model, run as a user would.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace duality {
namespace {

std::vector<int32_t> parse_ids(const std::string& line) {
    std::vector<int32_t> ids;
    size_t pos = 0;
    while (pos < line.size()) {
        size_t end = line.find_first_of(",\n", pos);
        if (end == std::string::npos) end = line.size();
        if (end > pos) ids.push_back(std::stoi(line.substr(pos, end - pos)));
        pos = end + 1;
    }
    return ids;
}

// First line of the output (the ids); the speed report follows on stderr.
std::string first_line(const std::string& s) {
    return s.substr(0, s.find('\n'));
}

TEST(CliGenerate, GreedyReproducesTheTrainLogSamples) {
    const auto log =
        nlohmann::json::parse(test::read_file(test::bundled_model_dir() / "train_log.json"));
    ASSERT_EQ(log.at("samples").size(), 3u);
    for (const auto& sample : log.at("samples")) {
        const auto expected = sample.at("greedy_ids").get<std::vector<int32_t>>();
        const std::string prompt = sample.at("prompt").get<std::string>();
        // No --model: the bundled model is the default.
        auto r = test::run_duality("generate --greedy --ids -n " + std::to_string(expected.size()) +
                                   " --prompt '" + prompt + "'");
        ASSERT_EQ(r.exit_code, 0) << r.out;
        EXPECT_EQ(parse_ids(first_line(r.out)), expected) << prompt;
        EXPECT_NE(r.out.find("tokens/s"), std::string::npos) << r.out;
    }
}

TEST(CliGenerate, TextOutputStreamsThePromptAndContinuation) {
    const auto log =
        nlohmann::json::parse(test::read_file(test::bundled_model_dir() / "train_log.json"));
    const auto& sample = log.at("samples")[1];
    auto r = test::run_duality(
        "generate --greedy -n 60 --prompt '" + sample.at("prompt").get<std::string>() + "'",
        /*merge_stderr=*/false);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    // train_log's text is prompt + continuation, as we print it (plus a final newline).
    EXPECT_EQ(r.out, sample.at("text").get<std::string>() + "\n");
}

TEST(CliGenerate, PromptIsAlsoTheFirstArgumentOrDashP) {
    const std::string base = "generate --greedy --ids -n 12 ";
    auto long_flag = test::run_duality(base + "--prompt 'It was a dark night'");
    auto short_flag = test::run_duality(base + "-p 'It was a dark night'");
    auto positional = test::run_duality(base + "'It was a dark night'");
    auto other = test::run_duality(base + "'Once upon a time'");
    ASSERT_EQ(long_flag.exit_code, 0) << long_flag.out;
    ASSERT_EQ(short_flag.exit_code, 0) << short_flag.out;
    ASSERT_EQ(positional.exit_code, 0) << positional.out;
    EXPECT_EQ(parse_ids(first_line(long_flag.out)).size(), 12u);
    EXPECT_EQ(first_line(short_flag.out), first_line(long_flag.out));
    EXPECT_EQ(first_line(positional.out), first_line(long_flag.out));
    EXPECT_NE(first_line(other.out), first_line(long_flag.out));
    // A positional prompt and --prompt-ids together are refused like --prompt and --prompt-ids.
    auto both = test::run_duality("generate 'It was' --prompt-ids 1,2");
    EXPECT_NE(both.exit_code, 0);
    EXPECT_NE(both.out.find("excludes"), std::string::npos) << both.out;
}

TEST(CliGenerate, LogitBiasSteersAndBansTokens) {
    const std::string base = "generate --greedy --ids -n 8 --ignore-eos --prompt 'The sea' ";
    auto plain = test::run_duality(base);
    ASSERT_EQ(plain.exit_code, 0) << plain.out;
    const auto ids = parse_ids(first_line(plain.out));
    ASSERT_EQ(ids.size(), 8u);
    // +100 on one id makes it every greedy choice; -100 on the first choice removes it.
    auto forced = test::run_duality(base + "--logit-bias 510=100");
    ASSERT_EQ(forced.exit_code, 0) << forced.out;
    EXPECT_EQ(parse_ids(first_line(forced.out)), std::vector<int32_t>(8, 510));
    auto banned = test::run_duality(base + "--logit-bias " + std::to_string(ids[0]) + "=-100");
    ASSERT_EQ(banned.exit_code, 0) << banned.out;
    const auto without = parse_ids(first_line(banned.out));
    ASSERT_EQ(without.size(), 8u);
    EXPECT_EQ(std::count(without.begin(), without.end(), ids[0]), 0) << banned.out;
    // The prompt may follow the option: a vector option must not swallow it (nor --stop's).
    auto after = test::run_duality(
        "generate --greedy --ids -n 8 --ignore-eos --logit-bias 510=100 'The sea'");
    ASSERT_EQ(after.exit_code, 0) << after.out;
    EXPECT_EQ(parse_ids(first_line(after.out)), std::vector<int32_t>(8, 510));
    auto stop = test::run_duality("generate --greedy -n 8 --stop zzz 'The sea'", false);
    ASSERT_EQ(stop.exit_code, 0) << stop.out;
    EXPECT_EQ(stop.out.rfind("The sea", 0), 0u) << stop.out;
    for (const char* bad : {"510", "=5", "510=", "x=1", "510=1e9", "510=abc", "-3=1", "99999999=1",
                            "-4294967295=5", "-99999999999999999999=5"}) {
        auto r = test::run_duality(base + "--logit-bias '" + bad + "'");
        EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.out;
        EXPECT_NE(r.out.find("logit"), std::string::npos) << bad << ": " << r.out;
    }
}

TEST(CliGenerate, SeedMakesSamplingReproducible) {
    const std::string base =
        "generate --ids -n 24 --temperature 1.0 --top-p 0.9 --prompt 'It was' ";
    auto a = test::run_duality(base + "--seed 7");
    auto b = test::run_duality(base + "--seed 7");
    auto c = test::run_duality(base + "--seed 8");
    ASSERT_EQ(a.exit_code, 0) << a.out;
    EXPECT_EQ(first_line(a.out), first_line(b.out));
    EXPECT_NE(first_line(a.out), first_line(c.out));
    EXPECT_EQ(parse_ids(first_line(a.out)).size(), 24u);
}

TEST(CliGenerate, StopStringEndsTheOutput) {
    auto r = test::run_duality(
        "generate --greedy -n 60 --prompt 'Once upon a time' --stop ', I' "
        "",
        /*merge_stderr=*/false);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    // The greedy text is "Once upon a time, and I was so glad to see him again, that I could..."
    EXPECT_EQ(r.out,
              "Once upon a time, and I was so glad to see him again, that I could not "
              "help thinking of him, and thinking it over\n");
}

TEST(CliGenerate, BadFlagsAreNamed) {
    struct Case {
        std::string args;
        const char* must_mention;
    };
    for (const Case& c : std::vector<Case>{
             {"generate", "--prompt"},
             {"generate --prompt hi --top-p 1.5", "--top-p"},
             {"generate --prompt hi --temperature -1", "--temperature"},
             {"generate --prompt hi -n 0", "--max-tokens"},
             {"generate --prompt hi --prompt-ids 1,2", "excludes"},
             {"generate --prompt-ids 1,abc", "--prompt-ids: \"abc\" is not a token id"},
             {"generate --prompt-ids ''", "--prompt-ids"},
             {"generate --prompt-ids 99999999", "outside the vocabulary"},
             {"generate --prompt hi --model /no/such/dir", "/no/such/dir"},
             {"generate --prompt hi --ids --stop x", "--stop"},
             {"generate --prompt hi --repetition-penalty 1e-38", "repetition_penalty"},
             {"generate --prompt hi --threads -1", "--threads"},
             {"serve --request-timeout nan", "--request-timeout"},
             {"serve --request-timeout 1e10", "--request-timeout"},
             {"serve --shutdown-grace -1", "--shutdown-grace"},
             {"serve --template-max-output 0", "--template-max-output"},
             {"serve --state-memory -1", "--state-memory"},
             {"serve --state-memory nan", "--state-memory"},
             {"serve --state-memory 1e10", "--state-memory"},
             {"serve --cache-memory 1e10", "--cache-memory"},
             {"serve --cache-memory inf", "--cache-memory"},
             {"serve --device cpu --state-memory 1e9",
              "more than 65536 (the most --max-seqs allows)"},
             {"serve --device cpu --max-seqs 65536 --cache-slots 1",
              "--max-seqs 65536 + --cache-slots 1 = 65537 state slots, more than 65536"},
             {"perplexity --file /no/such/file.txt", "/no/such/file.txt"},
             {"perplexity --file /tmp", "/tmp: is a directory"},
             {"tokenize --file /tmp", "/tmp: is a directory"},
             {"chat-template --messages /tmp", "/tmp: is a directory"},
             {"chat-template --template /tmp --messages '[{\"role\": \"user\", \"content\": "
              "\"x\"}]'",
              "/tmp: is a directory"},
             {"inspect /no/such/dir", "/no/such/dir"},
         }) {
        auto r = test::run_duality(c.args);
        EXPECT_NE(r.exit_code, 0) << c.args;
        EXPECT_NE(r.out.find(c.must_mention), std::string::npos) << c.args << "\n" << r.out;
    }
}

// A tokenizer whose ids go past the model's vocabulary (another model's) is refused before any
// id reaches the embedding: by the text commands and by serve (the bundled tokenizer's 50277 ids
// against Codestral's 32768 rows with --random-weights).
TEST(CliGenerate, ATokenizerLargerThanTheModelIsRefused) {
    test::TempDir dir;
    test::copy_dir(test::golden_dir() / "hf_tiny_f32", dir.path());  // vocab_size 128
    std::filesystem::copy_file(test::bundled_model_dir() / "tokenizer.json",
                               dir.path() / "tokenizer.json");
    for (const std::string& args :
         {"generate --prompt hi -n 1 --model " + dir.path().string(),
          "perplexity --file " + (test::bundled_model_dir() / "config.json").string() +
              " --model " + dir.path().string()}) {
        auto r = test::run_duality(args);
        EXPECT_NE(r.exit_code, 0) << args;
        EXPECT_NE(r.out.find((dir.path() / "tokenizer.json").string() +
                             ": the tokenizer has ids up to 50276 but the model's vocabulary "
                             "has 128 rows"),
                  std::string::npos)
            << args << "\n"
            << r.out;
    }
    auto r =
        test::run_duality("serve --device cpu --port 0 --random-weights --config codestral-7b");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.out.find("the model's vocabulary has 32768 rows"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--random-weights"), std::string::npos) << r.out;
}

// A window runs through the model in pieces of --piece tokens with the state carried over: the
// perplexity must not depend on the piece size (whole window, chunk-sized pieces, ragged pieces,
// single tokens through the decode step), and every scored token must be counted once.
TEST(CliPerplexity, PiecesOfAWindowGiveTheSamePerplexity) {
    test::TempDir dir;
    std::string text;
    for (int i = 0; i < 40; ++i)
        text += "The lighthouse keeper counted " + std::to_string(i * 7) +
                " ships before the storm reached the harbour. ";
    test::write_file(dir.path() / "t.txt", text);
    const std::string base =
        "perplexity -q --context 600 --file '" + (dir.path() / "t.txt").string() + "' --piece ";
    auto run = [&](int piece) {
        auto r = test::run_duality(base + std::to_string(piece));
        EXPECT_EQ(r.exit_code, 0) << r.out;
        const size_t at = r.out.find("perplexity = ");
        EXPECT_NE(at, std::string::npos) << r.out;
        return r.out.substr(at);  // "perplexity = X over N tokens"
    };
    const std::string whole = run(600);
    const double ppl = std::stod(whole.substr(13));
    const std::string count = whole.substr(whole.find(" over "));
    EXPECT_GT(ppl, 1.0);
    for (int piece : {256, 77, 1}) {
        const std::string got = run(piece);
        EXPECT_EQ(got.substr(got.find(" over ")), count) << piece;
        EXPECT_NEAR(std::stod(got.substr(13)), ppl, 1e-3 * ppl) << piece << ": " << got;
    }
}

TEST(CliInspect, CountsTheBundledModelsParameters) {
    auto r = test::run_duality("inspect");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const auto log =
        nlohmann::json::parse(test::read_file(test::bundled_model_dir() / "train_log.json"));
    // train_log.json records the parameter count of the trained model (tied head counted once).
    EXPECT_NE(r.out.find(std::to_string(log.at("params").get<int64_t>())), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("all tensors present"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace duality
