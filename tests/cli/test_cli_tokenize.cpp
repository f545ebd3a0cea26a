// Tests for `duality tokenize`: the output forms (plain, --json, --lines, --jsonl, --decode),
// the DUALITY_MODEL fallback, and errors that name the bad flag or file.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "test_util.h"

namespace duality {
namespace {

struct CliResult {
    int code;
    std::string out;  // stdout and stderr together
};

CliResult run(const std::string& args, const std::string& env = "env -u DUALITY_MODEL") {
    const std::string cmd = env + " " + DUALITY_BINARY + " tokenize " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return {-1, "popen failed"};
    std::string out;
    char buf[4096];
    size_t n = 0;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    const int status = pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string model() {
    return "--model '" + test::bundled_model_dir().string() + "'";
}

TEST(CliTokenize, JsonAndPlainOutput) {
    CliResult r = run(model() + " --json 'Hello world<|endoftext|>'");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.out, "[12092,1533,0]\n");
    r = run(model() + " 'Hello  world'");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("12092 50276 10186\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\"Hello\""), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\"  \""), std::string::npos) << r.out;
    r = run(model() + " --json --no-special '<|endoftext|>'");
    EXPECT_EQ(r.out, "[29,93,423,1171,1156,49651]\n");
}

TEST(CliTokenize, LinesJsonlAndDecode) {
    test::TempDir dir;
    const auto lines = dir.path() / "lines.txt";
    test::write_file(lines, "Hello world\n  Hello\n\n\xff\n");
    CliResult r = run(model() + " --lines --file '" + lines.string() + "'");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.out, "[12092,1533]\n[50276,12092]\n[]\n[21478]\n");

    const auto jsonl = dir.path() / "texts.jsonl";
    test::write_file(jsonl, "{\"text\": \"Hello\\nworld\"}\n\"Hello world\"\n");
    r = run(model() + " --jsonl --file '" + jsonl.string() + "'");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.out, "[12092,187,10186]\n[12092,1533]\n");

    r = run(model() + " --decode '[12092, 1533]'");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.out, "Hello world");
    const auto ids = dir.path() / "ids.txt";
    test::write_file(ids, "[12092,187,10186]\n12092 1533\n");
    r = run(model() + " --decode --lines --file '" + ids.string() + "'");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.out, "\"Hello\\nworld\"\n\"Hello world\"\n");
}

TEST(CliTokenize, ModelFromEnvironment) {
    const CliResult r = run("--json 'Hello world'",
                            "env DUALITY_MODEL='" + test::bundled_model_dir().string() + "'");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.out, "[12092,1533]\n");
}

TEST(CliTokenize, ErrorsNameTheFlagOrFile) {
    // Without --model or DUALITY_MODEL the bundled model is used.
    CliResult r = run("--json 'Hello world'");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.out, "[12092,1533]\n");

    r = run(model() + " --file /no/such/file.txt");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.out.find("--file"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("/no/such/file.txt"), std::string::npos) << r.out;

    r = run("--model /no/such/model 'Hello'");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.out.find("/no/such/model"), std::string::npos) << r.out;

    r = run(model() + " --decode '1,x'");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.out.find("\"x\""), std::string::npos) << r.out;

    // An id the tokenizer does not have is named, not skipped.
    r = run(model() + " --decode '15496 999999 11'");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.out.find("999999"), std::string::npos) << r.out;

    r = run(model() + " 'Hello' --file /etc/hostname");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.out.find("--file"), std::string::npos) << r.out;

    r = run(model());
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.out.find("--file"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace duality
