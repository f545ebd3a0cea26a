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

}  // namespace
}  // namespace duality::server
