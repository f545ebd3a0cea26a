// server/openai.h's parse_request: sampling fields whose JSON value is in range but whose float,
// the value the sampler keeps, is not. A request parse_request accepts must pass
// SamplingParams::validate (fuzz_openai_request's invariant; this input was one of its finds).
#include "server/openai.h"

#include <gtest/gtest.h>

#include "duality/tokenizer.h"
#include "server/chat_template.h"
#include "test_util.h"

namespace duality::server {
namespace {

class OpenAiRequest : public ::testing::Test {
  protected:
    void SetUp() override {
        auto tok = Tokenizer::load(test::bundled_model_dir() / "tokenizer.json");
        ASSERT_TRUE(tok) << tok.status().message();
        tokenizer_.emplace(std::move(*tok));
        limits_.model_name = "m";
        limits_.vocab_size = 50288;
    }
    std::optional<ApiError> parse(const std::string& body, ApiRequest* out) {
        return parse_request(body, false, limits_, *tokenizer_, plain_, out);
    }

    std::optional<Tokenizer> tokenizer_;
    ChatTemplate plain_ = ChatTemplate::plain();
    ApiLimits limits_;
};

TEST_F(OpenAiRequest, TopPThatIsZeroAsAFloatIsRefused) {
    // 1e-300 > 0 as a double but 0 as a float: refused here, with the field named, rather than
    // accepted and left to fail later.
    for (const char* v : {"1e-300", "1e-46", "0.0"}) {
        ApiRequest r;
        const auto e = parse(std::string(R"({"prompt": "a", "top_p": )") + v + "}", &r);
        ASSERT_TRUE(e) << "top_p " << v << " was accepted as " << r.sampling.top_p;
        EXPECT_EQ(e->status, 400);
        EXPECT_EQ(e->param, "top_p");
    }
}

TEST_F(OpenAiRequest, SmallestPositiveTopPsAreKept) {
    // The smallest float denormal and a normal value near it stay positive: accepted as given.
    for (const char* v : {"1e-45", "1e-38", "0.01", "1"}) {
        ApiRequest r;
        const auto e = parse(std::string(R"({"prompt": "a", "top_p": )") + v + "}", &r);
        ASSERT_FALSE(e) << "top_p " << v << ": " << e->message;
        EXPECT_GT(r.sampling.top_p, 0.0f);
        EXPECT_TRUE(r.sampling.validate().is_ok()) << v;
    }
}

// Values nested hundreds of thousands deep (a few hundred KB, under the default --max-body) in
// fields the parser refuses or checks for a neutral value: each must give a 400 naming the field.
// parse_request copied min_tokens, bad_words, chat_template_kwargs and response_format.type
// before looking at them, and the copy of such a value recursed off the stack (a crash of the
// whole server; found by review).
TEST_F(OpenAiRequest, DeeplyNestedValuesAreRefusedWithoutCopies) {
    constexpr size_t kDepth = 300000;
    const std::string deep = std::string(kDepth, '[') + std::string(kDepth, ']');
    const std::pair<const char*, std::string> cases[] = {
        {"min_tokens", R"({"prompt": "a", "min_tokens": )" + deep + "}"},
        {"bad_words", R"({"prompt": "a", "bad_words": [)" + deep + "]}"},
        {"chat_template_kwargs", R"({"prompt": "a", "chat_template_kwargs": )" + deep + "}"},
        {"response_format", R"({"prompt": "a", "response_format": {"type": )" + deep + "}}"},
        {"use_beam_search", R"({"prompt": "a", "use_beam_search": )" + deep + "}"},
        {"tool_choice", R"({"prompt": "a", "tool_choice": )" + deep + "}"},
        {"prompt", R"({"prompt": [1, )" + deep + "]}"},
    };
    for (const auto& [field, body] : cases) {
        ApiRequest r;
        const auto e = parse(body, &r);
        ASSERT_TRUE(e) << field << " nested " << kDepth << " deep was accepted";
        EXPECT_EQ(e->status, 400) << field;
        EXPECT_EQ(e->param, field);
        EXPECT_LT(e->message.size(), 300u) << field << ": " << e->message.substr(0, 300);
    }
}

// vLLM's extensions the server does not implement are refused unless given their neutral
// value: for chat_template_kwargs (a dict) that includes {}, which some clients always send.
TEST_F(OpenAiRequest, NeutralValuesOfUnsupportedExtensionsAreAccepted) {
    for (const char* v :
         {R"("chat_template_kwargs": {})", R"("chat_template_kwargs": null)", R"("min_tokens": 0)",
          R"("bad_words": [])", R"("response_format": {"type": "text"})"}) {
        ApiRequest r;
        const auto e = parse(std::string(R"({"prompt": "a", )") + v + "}", &r);
        EXPECT_FALSE(e) << v << ": " << e->message;
    }
    for (const char* v :
         {R"("chat_template_kwargs": {"enable_thinking": true})", R"("min_tokens": 2)",
          R"("bad_words": ["x"])", R"("response_format": {"type": "json_object"})",
          R"("response_format": {})", R"("min_tokens": {})"}) {
        ApiRequest r;
        const auto e = parse(std::string(R"({"prompt": "a", )") + v + "}", &r);
        ASSERT_TRUE(e) << v << " was accepted";
        EXPECT_EQ(e->status, 400) << v;
    }
}

}  // namespace
}  // namespace duality::server
