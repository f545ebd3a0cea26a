// Tests for the tokenizer.json byte-level BPE tokenizer: the GPT-NeoX-20B test vectors, round
// trips, added tokens and their flags, NFC, the streaming decoder, malformed files, invalid
// UTF-8 and large inputs. Expected ids come from Hugging Face `tokenizers` 0.23.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "duality/tokenizer.h"
#include "test_util.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/utf8.h"

namespace duality {
namespace {

using Ids = std::vector<int32_t>;

std::filesystem::path neox_dir() {
    return test::shared_dir() / "data/tokenizers/gpt-neox-20b";
}

const Tokenizer& neox() {
    static const Tokenizer t = [] {
        auto r = Tokenizer::load(test::bundled_model_dir());
        if (!r) throw std::runtime_error(r.status().message());
        return *r;
    }();
    return t;
}

// vectors.inp holds the inputs, each followed by a line "__ggml_vocab_test__" (the newline
// before that line is not part of the input); vectors.out one line of ids per input.
struct Vector {
    std::string input;
    Ids ids;
};

std::vector<Vector> read_vectors() {
    const std::string inp = test::read_file(neox_dir() / "vectors.inp");
    const std::string out = test::read_file(neox_dir() / "vectors.out");
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<Vector> v;
    size_t pos = 0;
    while (pos < inp.size()) {
        const size_t end = inp.find(sep, pos);
        if (end == std::string::npos) throw std::runtime_error("vectors.inp: missing separator");
        v.push_back({inp.substr(pos, end - pos), {}});
        pos = end + sep.size();
    }
    size_t line_start = 0;
    for (Vector& vec : v) {
        const size_t nl = out.find('\n', line_start);
        if (nl == std::string::npos) throw std::runtime_error("vectors.out: too few lines");
        std::istringstream line(out.substr(line_start, nl - line_start));
        int32_t id = 0;
        while (line >> id) vec.ids.push_back(id);
        line_start = nl + 1;
    }
    if (line_start != out.size()) throw std::runtime_error("vectors.out: too many lines");
    return v;
}

TEST(TokenizerVectors, AllCasesMatchHuggingFace) {
    const std::vector<Vector> vectors = read_vectors();
    ASSERT_EQ(vectors.size(), 46u);  // 46 separators; the text after the last one is empty
    for (size_t i = 0; i < vectors.size(); ++i) {
        SCOPED_TRACE("case " + std::to_string(i) + ": \"" + vectors[i].input + "\"");
        EXPECT_EQ(neox().encode(vectors[i].input), vectors[i].ids);
    }
}

TEST(TokenizerVectors, DecodeRoundTrips) {
    for (const Vector& v : read_vectors()) {
        EXPECT_EQ(neox().decode(neox().encode(v.input)), v.input);
        EXPECT_EQ(neox().decode(v.ids), v.input);
    }
}

TEST(Tokenizer, LoadsFromFolderOrFile) {
    auto from_file = Tokenizer::load(test::bundled_model_dir() / "tokenizer.json");
    ASSERT_TRUE(from_file) << from_file.status().message();
    EXPECT_EQ(from_file->vocab_size(), 50277);
    EXPECT_EQ(neox().vocab_size(), 50277);
    EXPECT_EQ(from_file->encode("Hello world"), (Ids{12092, 1533}));
    EXPECT_EQ(from_file->source(), (test::bundled_model_dir() / "tokenizer.json").string());
    auto shared = Tokenizer::load(neox_dir() / "tokenizer.json");
    ASSERT_TRUE(shared) << shared.status().message();
    EXPECT_EQ(shared->encode("Hello world"), (Ids{12092, 1533}));
}

TEST(Tokenizer, CheckFitsModelRefusesIdsBeyondTheModelsRows) {
    const Tokenizer& t = neox();  // ids 0 to 50276
    EXPECT_TRUE(t.check_fits_model(50288).is_ok());
    EXPECT_TRUE(t.check_fits_model(50277).is_ok());
    const Status s = t.check_fits_model(32768);  // Codestral's vocabulary
    ASSERT_FALSE(s.is_ok());
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    for (const std::string& part : {t.source(), std::string("50276"), std::string("32768")})
        EXPECT_NE(s.message().find(part), std::string::npos) << part << ": " << s.message();
    EXPECT_FALSE(t.check_fits_model(50276).is_ok());
}

TEST(Tokenizer, VocabularyLookups) {
    const Tokenizer& t = neox();
    EXPECT_EQ(t.token_to_id("ĠHello"), 24387);
    EXPECT_EQ(t.token_to_id("<|endoftext|>"), 0);
    EXPECT_EQ(t.token_to_id("  "), 50276);
    EXPECT_EQ(t.token_to_id("no such token"), std::nullopt);
    EXPECT_EQ(t.id_to_token(24387), "ĠHello");
    EXPECT_EQ(t.id_to_token(50254), std::string(24, ' '));
    EXPECT_EQ(t.id_to_token(-1), "");
    EXPECT_EQ(t.id_to_token(50277), "");
    EXPECT_EQ(t.eos_id(), 0);
    EXPECT_TRUE(t.is_special(0));
    EXPECT_TRUE(t.is_special(1));
    EXPECT_FALSE(t.is_special(50276));
    EXPECT_FALSE(t.is_special(12092));
    EXPECT_EQ(t.token_bytes(24387), " Hello");
    EXPECT_EQ(t.added_tokens().size(), 25u);
}

TEST(Tokenizer, AddedTokensMatchBeforePreTokenization) {
    const Tokenizer& t = neox();
    EXPECT_EQ(t.encode("<|endoftext|>Hello<|padding|>"), (Ids{0, 12092, 1}));
    EXPECT_EQ(t.encode("a<|endoftext|>b"), (Ids{66, 0, 67}));
    EXPECT_EQ(t.encode("<|endoftext|"), (Ids{29, 93, 423, 1171, 1156, 93}));
    // The multi-space tokens: leftmost-longest, up to 24 spaces.
    EXPECT_EQ(t.encode(std::string(25, ' ')), (Ids{50254, 209}));
    EXPECT_EQ(t.encode(std::string(50, ' ')), (Ids{50254, 50254, 50276}));
    EXPECT_EQ(t.encode("  Hello"), (Ids{50276, 12092}));
    // Untrusted text: special tokens are plain text, the space tokens still apply.
    EncodeOptions no_special;
    no_special.parse_special = false;
    EXPECT_EQ(t.encode("<|endoftext|>Hello<|padding|>  x", no_special),
              (Ids{29, 93, 423, 1171, 1156, 49651, 12092, 29, 93, 17333, 49651, 50276, 89}));
}

TEST(Tokenizer, NormalizesToNfcLikeHuggingFace) {
    const Tokenizer& t = neox();
    EXPECT_EQ(t.encode("e\u0301"), (Ids{860}));  // composed to é
    EXPECT_EQ(t.encode("\u00e9"), (Ids{860}));
    // U+1DF6 (Unicode 10) is unknown to Hugging Face's Unicode 9.0 NFC tables, so the
    // acute accent after it is not reordered in front of it.
    EXPECT_EQ(t.encode("x\u1df6\u0301"), (Ids{89, 157, 117, 116, 136, 212}));
    EXPECT_EQ(t.encode("\u3000\u3000\u3000\u3000\u3000"), (Ids{48503, 48503, 19409}));
}

TEST(Tokenizer, DecodeSkipsUnknownIdsAndOptionallySpecialTokens) {
    const Tokenizer& t = neox();
    const Ids ids{12092, -5, 0, 99999, 1533, 50277};
    EXPECT_EQ(t.decode(ids), "Hello<|endoftext|> world");
    EXPECT_EQ(t.decode(ids, /*skip_special_tokens=*/true), "Hello world");
    EXPECT_EQ(t.decode(Ids{}), "");
    EXPECT_EQ(t.token_bytes(-1), "");
    EXPECT_EQ(t.token_bytes(1 << 30), "");
}

TEST(Tokenizer, InvalidUtf8IsEncodedByteByByte) {
    const Tokenizer& t = neox();
    const std::string bad =
        "ab\x80"
        "cd \xe2\x82 x\xed\xa0\x80\xbf\xaf";
    const Ids ids = t.encode(bad);
    EXPECT_EQ(t.decode(ids), bad);
    // Each invalid byte is the single-byte token spelling it.
    const Ids lone = t.encode("\x80");
    ASSERT_EQ(lone.size(), 1u);
    EXPECT_EQ(t.id_to_token(lone[0]), std::string(byte_level::spell_byte(0x80)));
    // Valid text around a bad byte encodes as if the byte were a separator.
    Ids expected = t.encode("Hello");
    expected.push_back(lone[0]);
    for (const int32_t id : t.encode(" world")) expected.push_back(id);
    EXPECT_EQ(t.encode("Hello\x80 world"), expected);
    // GPT-NeoX has no token for the bytes that never occur in UTF-8: they become U+FFFD.
    for (const int b : {0xC0, 0xC1, 0xF5, 0xFF}) {
        const std::string s(1, static_cast<char>(b));
        EXPECT_EQ(t.encode(s), t.encode("\uFFFD")) << b;
    }
    EXPECT_EQ(t.decode(t.encode("a\xff\xff"
                                "b")),
              "a\uFFFD\uFFFD"
              "b");
}

// The round trip of arbitrary bytes: exact, except that valid stretches come back in NFC and
// the bytes without a token as U+FFFD.
TEST(Tokenizer, RandomBytesRoundTrip) {
    const Tokenizer& t = neox();
    std::mt19937 rng(1234);
    const std::string alphabet = "ab \n\t'sé世🦙<|endoftext|>";
    int changed_by_nfc = 0;
    for (int iter = 0; iter < 500; ++iter) {
        std::string s;
        const int len = static_cast<int>(rng() % 40);
        for (int i = 0; i < len; ++i) {
            s += (rng() % 3 == 0) ? static_cast<char>(rng() % 256)
                                  : alphabet[rng() % alphabet.size()];
        }
        std::string expected;
        for (size_t i = 0; i < s.size();) {
            const size_t good = utf8::valid_prefix(std::string_view(s).substr(i));
            nfc_append(std::string_view(s).substr(i, good), &expected);
            i += good;
            if (i == s.size()) break;
            const auto b = static_cast<unsigned char>(s[i++]);
            expected += (b == 0xC0 || b == 0xC1 || b >= 0xF5) ? std::string("\uFFFD")
                                                              : std::string(1, char(b));
        }
        changed_by_nfc += expected.find("\uFFFD") == std::string::npos && expected != s;
        const Ids ids = t.encode(s);
        for (const int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t.vocab_size());
        EXPECT_EQ(t.decode(ids), expected);
    }
    EXPECT_GT(changed_by_nfc, 0);  // random bytes did spell characters that NFC changes
}

TEST(Tokenizer, LargeInputs) {
    const Tokenizer& t = neox();
    const std::string a(1 << 20, 'a');
    EXPECT_EQ(t.decode(t.encode(a)), a);
    const std::string newlines(1 << 20, '\n');
    EXPECT_EQ(t.decode(t.encode(newlines)), newlines);
    std::string ideographic_spaces;
    for (int i = 0; i < 100000; ++i) ideographic_spaces += "\u3000";
    EXPECT_EQ(t.decode(t.encode(ideographic_spaces + "x")), ideographic_spaces + "x");
    const Ids spaces = t.encode(std::string(24 * 1000, ' '));
    EXPECT_EQ(spaces, Ids(1000, 50254));
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
    const std::string text =
        test::read_file(test::shared_dir() / "data/eval/wikitext-2-raw-test.txt").substr(0, 200000);
    auto fresh = Tokenizer::load(test::bundled_model_dir());  // its own, empty word cache
    ASSERT_TRUE(fresh);
    const Tokenizer& t = *fresh;
    std::vector<Ids> results(4);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < results.size(); ++i)
        threads.emplace_back([&, i] { results[i] = t.encode(text); });
    for (auto& th : threads) th.join();
    const Ids expected = neox().encode(text);
    for (const Ids& r : results) EXPECT_EQ(r, expected);
}

// ---- StreamDecoder ----------------------------------------------------------------------------

TEST(TokenizerStreamDecoder, NeverSplitsACharacter) {
    const Tokenizer& t = neox();
    const std::string text =
        "Hello 🦙🦙 世界! 👩‍👩‍👧 ꙮ é — naïve 日本語のテキスト "
        "🇫🇷";
    const Ids ids = t.encode(text);
    StreamDecoder stream(t);
    std::string all;
    int held_back = 0;
    for (const int32_t id : ids) {
        const std::string piece = stream.push(id);
        EXPECT_TRUE(utf8::is_valid(piece)) << "after id " << id;
        if (piece.empty() || stream.pending_bytes() > 0) ++held_back;
        all += piece;
    }
    all += stream.flush();
    EXPECT_EQ(all, text);
    EXPECT_GT(held_back, 3);  // the emoji and CJK really were spread over several tokens
    EXPECT_EQ(stream.pending_bytes(), 0u);
}

TEST(TokenizerStreamDecoder, RepairsInvalidBytes) {
    const Tokenizer& t = neox();
    StreamDecoder stream(t);
    // E2 82 is the start of "€" (E2 82 AC): held back, then repaired at flush.
    const Ids truncated = t.encode("x\xe2\x82");
    std::string out;
    for (const int32_t id : truncated) out += stream.push(id);
    EXPECT_EQ(out, "x");
    EXPECT_EQ(stream.flush(), "\xef\xbf\xbd");
    // A byte that can never start a character is replaced at once.
    EXPECT_EQ(stream.push(t.encode("\x80")[0]), "\xef\xbf\xbd");
    // Unknown ids are skipped, special tokens kept unless asked otherwise.
    EXPECT_EQ(stream.push(-1), "");
    EXPECT_EQ(stream.push(0), "<|endoftext|>");
    StreamDecoder skipping(t, /*skip_special_tokens=*/true);
    EXPECT_EQ(skipping.push(0), "");
    EXPECT_EQ(skipping.push(12092), "Hello");
}

// ---- a tiny tokenizer, for the added-token flags ----------------------------------------------

nlohmann::json tiny_tokenizer_json() {
    nlohmann::json vocab = nlohmann::json::object();
    for (int b = 0; b < 256; ++b)
        vocab[std::string(byte_level::spell_byte(static_cast<uint8_t>(b)))] = b;
    const std::vector<std::pair<std::string, std::string>> merges = {
        {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"Ġ", "w"}, {"Ġw", "o"}};
    nlohmann::json merge_list = nlohmann::json::array();
    for (size_t i = 0; i < merges.size(); ++i) {
        vocab[merges[i].first + merges[i].second] = 256 + static_cast<int>(i);
        merge_list.push_back(merges[i].first + " " + merges[i].second);
    }
    auto added = [](int id, const char* content, bool single_word, bool lstrip, bool rstrip,
                    bool normalized, bool special) {
        return nlohmann::json{
            {"id", id},          {"content", content}, {"single_word", single_word},
            {"lstrip", lstrip},  {"rstrip", rstrip},   {"normalized", normalized},
            {"special", special}};
    };
    const nlohmann::json byte_level = {
        {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}};
    return {
        {"version", "1.0"},
        {"truncation", nullptr},
        {"padding", nullptr},
        {"added_tokens",
         {added(261, "<mask>", false, true, false, false, true),
          added(262, "[R]", false, false, true, false, true),
          added(263, "word", true, false, false, true, false),
          added(264, "<|x|>", false, false, false, false, true)}},
        {"normalizer", {{"type", "NFC"}}},
        {"pre_tokenizer", byte_level},
        {"post_processor", byte_level},
        {"decoder", byte_level},
        {"model",
         {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"fuse_unk", false},
          {"vocab", vocab},
          {"merges", merge_list}}},
    };
}

TEST(Tokenizer, AddedTokenFlagsLikeHuggingFace) {
    auto t = Tokenizer::from_json(tiny_tokenizer_json().dump(), "tiny.json");
    ASSERT_TRUE(t) << t.status().message();
    EXPECT_EQ(t->vocab_size(), 265);
    EXPECT_EQ(t->eos_id(), std::nullopt);
    const std::vector<std::pair<std::string, Ids>> cases = {
        {"hello world", {258, 111, 260, 114, 108, 100}},
        {"a  <mask> b", {97, 261, 32, 98}},   // lstrip
        {"x [R]  y", {120, 32, 262, 121}},    // rstrip
        {"a word b", {97, 32, 263, 32, 98}},  // single_word
        {"swordfish word", {115, 119, 111, 114, 100, 102, 105, 115, 104, 32, 263}},
        {"word", {263}},
        {"wordy word_ word.", {119, 111, 114, 100, 121, 260, 114, 100, 95, 32, 263, 46}},
        {"hi<|x|>hello", {104, 105, 264, 258, 111}},
        {"<mask>", {261}},
        {"  <mask>[R]  ", {261, 262}},
        {"hello\u00e9", {258, 111, 195, 169}},
        {"e\u0301", {195, 169}},
    };
    for (const auto& [text, ids] : cases) EXPECT_EQ(t->encode(text), ids) << "\"" << text << "\"";
}

TEST(Tokenizer, MergesAsPairsAndUnkToken) {
    nlohmann::json j = tiny_tokenizer_json();
    nlohmann::json pairs = nlohmann::json::array();
    for (const auto& m : j["model"]["merges"]) {
        const std::string s = m.get<std::string>();
        pairs.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
    }
    j["model"]["merges"] = pairs;
    auto t = Tokenizer::from_json(j.dump(), "pairs.json");
    ASSERT_TRUE(t) << t.status().message();
    EXPECT_EQ(t->encode("hello world"), (Ids{258, 111, 260, 114, 108, 100}));

    // Without a token for byte 'z' (and with unk_token), 'z' becomes the unknown token.
    j["model"]["vocab"].erase("z");
    j["model"]["vocab"]["<unk>"] = 'z';
    j["model"]["unk_token"] = "<unk>";
    j["model"]["fuse_unk"] = true;
    t = Tokenizer::from_json(j.dump(), "unk.json");
    ASSERT_TRUE(t) << t.status().message();
    EXPECT_EQ(t->encode("azzb"), (Ids{'a', 'z', 'b'}));  // fused into one <unk>
}

// ---- malformed files ------------------------------------------------------------------------

Status load_text(const test::TempDir& dir, const std::string& name, const std::string& text) {
    const auto path = dir.path() / name;
    test::write_file(path, text);
    auto r = Tokenizer::load(path);
    return r ? Status::ok() : r.status();
}

TEST(TokenizerLoad, MalformedFilesNameTheFileAndField) {
    test::TempDir dir;
    struct Case {
        std::string name, text, field;
        StatusCode code;
    };
    nlohmann::json no_model = tiny_tokenizer_json();
    no_model.erase("model");
    nlohmann::json bad_merge = tiny_tokenizer_json();
    bad_merge["model"]["merges"].push_back("q zzz");
    nlohmann::json bad_merge_format = tiny_tokenizer_json();
    bad_merge_format["model"]["merges"][2] = "hell";
    nlohmann::json bad_merge_type = tiny_tokenizer_json();
    bad_merge_type["model"]["merges"][1] = 7;
    nlohmann::json wordpiece = tiny_tokenizer_json();
    wordpiece["model"]["type"] = "WordPiece";
    nlohmann::json bad_id = tiny_tokenizer_json();
    bad_id["model"]["vocab"]["a"] = -3;
    nlohmann::json shared_id = tiny_tokenizer_json();
    shared_id["model"]["vocab"]["a"] = 98;
    nlohmann::json no_content = tiny_tokenizer_json();
    no_content["added_tokens"][1].erase("content");
    nlohmann::json lowercase = tiny_tokenizer_json();
    lowercase["normalizer"] = {{"type", "Lowercase"}};
    nlohmann::json template_post = tiny_tokenizer_json();
    template_post["post_processor"] = {{"type", "TemplateProcessing"}};
    // A normalizer nested 200,000 deep: described briefly, not printed recursively (which
    // overflowed the stack).
    nlohmann::json deep = tiny_tokenizer_json();
    deep["normalizer"] = "DEEP";
    std::string deep_text = deep.dump();
    deep_text.replace(deep_text.find("\"DEEP\""), 6,
                      std::string(200000, '[') + std::string(200000, ']'));
    const std::vector<Case> cases = {
        {"empty.json", "", "empty", StatusCode::kCorrupt},
        {"not_json.json", "this is not JSON", "invalid JSON", StatusCode::kCorrupt},
        {"array.json", "[1, 2]", "top level", StatusCode::kCorrupt},
        {"no_model.json", no_model.dump(), "model", StatusCode::kCorrupt},
        {"bad_merge.json", bad_merge.dump(), "model.merges[5]", StatusCode::kCorrupt},
        {"bad_merge_format.json", bad_merge_format.dump(), "model.merges[2]", StatusCode::kCorrupt},
        {"bad_merge_type.json", bad_merge_type.dump(), "model.merges[1]", StatusCode::kCorrupt},
        {"wordpiece.json", wordpiece.dump(), "model.type", StatusCode::kUnsupported},
        {"bad_id.json", bad_id.dump(), "model.vocab", StatusCode::kCorrupt},
        {"shared_id.json", shared_id.dump(), "share id 98", StatusCode::kCorrupt},
        {"no_content.json", no_content.dump(), "added_tokens[1]", StatusCode::kCorrupt},
        {"lowercase.json", lowercase.dump(), "normalizer", StatusCode::kUnsupported},
        {"template.json", template_post.dump(), "post_processor", StatusCode::kUnsupported},
        {"deep.json", deep_text, "normalizer: expected an object, got an array of 1 element",
         StatusCode::kCorrupt},
    };
    for (const Case& c : cases) {
        const Status s = load_text(dir, c.name, c.text);
        EXPECT_FALSE(s.is_ok()) << c.name;
        EXPECT_EQ(s.code(), c.code) << c.name << ": " << s.message();
        EXPECT_NE(s.message().find((dir.path() / c.name).string()), std::string::npos)
            << s.message();
        EXPECT_NE(s.message().find(c.field), std::string::npos) << s.message();
    }
}

TEST(TokenizerLoad, MissingFileOrFolder) {
    test::TempDir dir;
    auto r = Tokenizer::load(dir.path());  // a folder without tokenizer.json
    ASSERT_FALSE(r);
    EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
    EXPECT_NE(r.status().message().find((dir.path() / "tokenizer.json").string()),
              std::string::npos);
    r = Tokenizer::load(dir.path() / "nope.json");
    ASSERT_FALSE(r);
    EXPECT_NE(r.status().message().find("nope.json"), std::string::npos);
}

}  // namespace
}  // namespace duality
