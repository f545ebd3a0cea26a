// core/read_file.h: a whole file into memory, with errors that name the path.
#include "core/read_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>

#include "duality/config.h"
#include "duality/tokenizer.h"
#include "test_util.h"

namespace duality {
namespace {

TEST(ReadFile, ReadsEveryByte) {
    test::TempDir dir;
    std::string bytes(200000, '\0');
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 % 251);
    test::write_file(dir.path() / "f.bin", bytes);
    auto r = read_file(dir.path() / "f.bin");
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    EXPECT_EQ(*r, bytes);

    test::write_file(dir.path() / "empty", "");
    auto e = read_file(dir.path() / "empty");
    ASSERT_TRUE(e.is_ok()) << e.status().message();
    EXPECT_TRUE(e->empty());
}

TEST(ReadFile, AMissingFileIsNotFoundAndNamed) {
    test::TempDir dir;
    const auto path = dir.path() / "nope.txt";
    auto r = read_file(path);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
    EXPECT_NE(r.status().message().find(path.string()), std::string::npos) << r.status().message();
}

TEST(ReadFile, ADirectoryIsRefusedAsADirectory) {
    test::TempDir dir;
    auto r = read_file(dir.path());
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(dir.path().string()), std::string::npos);
    EXPECT_NE(r.status().message().find("is a directory"), std::string::npos)
        << r.status().message();
}

TEST(ReadFile, AStreamIsReadToItsEnd) {
    test::TempDir dir;
    const auto fifo = dir.path() / "fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    // The writer is a shell in the background: opening a FIFO blocks until both ends are open.
    ASSERT_EQ(std::system(("printf 'abc' > " + fifo.string() + " &").c_str()), 0);
    auto r = read_file(fifo);
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    EXPECT_EQ(*r, "abc");
}

// The loaders read their files through read_file: a directory where a file should be is named.
TEST(ReadFile, LoadersNameADirectoryInPlaceOfAFile) {
    test::TempDir dir;
    std::filesystem::create_directory(dir.path() / "config.json");
    auto c = load_model_config(dir.path());
    ASSERT_FALSE(c.is_ok());
    EXPECT_NE(c.status().message().find("config.json: is a directory"), std::string::npos)
        << c.status().message();
    auto t = Tokenizer::load(dir.path() / "config.json");  // a folder without tokenizer.json
    ASSERT_FALSE(t.is_ok());
    EXPECT_NE(t.status().message().find("tokenizer.json"), std::string::npos)
        << t.status().message();
    std::filesystem::create_directory(dir.path() / "tokenizer.json");
    auto t2 = Tokenizer::load(dir.path());
    ASSERT_FALSE(t2.is_ok());
    EXPECT_NE(t2.status().message().find("tokenizer.json: is a directory"), std::string::npos)
        << t2.status().message();
}

}  // namespace
}  // namespace duality
