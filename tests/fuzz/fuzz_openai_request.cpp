// libFuzzer target: the OpenAI request parser and the token endpoints (src/server/openai.h) on
// arbitrary bodies, with the bundled model's tokenizer. The first byte picks the endpoint
// (completions, chat with the plain format, chat with a ChatML template, /tokenize,
// /detokenize); the rest is the body. Every outcome must be a parsed request or an ApiError with
// a 4xx status and a message: any crash, hang, sanitizer report or other status is a bug.
// Run from the repository root (the tokenizer is models/mamba2-gutenberg-17m/tokenizer.json, or
// $DUALITY_FUZZ_TOKENIZER).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "duality/tokenizer.h"
#include "server/chat_template.h"
#include "server/openai.h"

namespace {

using namespace duality;
using namespace duality::server;

struct Fixture {
    Tokenizer tokenizer;
    ChatTemplate plain = ChatTemplate::plain();
    ChatTemplate chatml;
    ApiLimits limits;
};

const Fixture& fixture() {
    static const Fixture* f = [] {
        const char* env = std::getenv("DUALITY_FUZZ_TOKENIZER");
        auto tok =
            Tokenizer::load(env && *env ? env : "models/mamba2-gutenberg-17m/tokenizer.json");
        if (!tok) {
            std::fprintf(stderr, "fuzz_openai_request: %s\n", tok.status().message().c_str());
            std::abort();
        }
        auto chatml = ChatTemplate::parse(
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}");
        if (!chatml) std::abort();
        auto* fx = new Fixture{std::move(*tok), ChatTemplate::plain(), std::move(*chatml), {}};
        fx->limits.model_name = "m";
        fx->limits.vocab_size = 50288;
        fx->limits.max_prompt_tokens = 4096;
        return fx;
    }();
    return *f;
}

void check(const std::optional<ApiError>& e) {
    if (e && (e->status < 400 || e->status >= 500 || e->message.empty())) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const Fixture& f = fixture();
    const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
    switch (data[0] % 5) {
        case 0:
        case 1:
        case 2: {
            ApiRequest r;
            const bool chat = data[0] % 5 != 0;
            const auto e = parse_request(body, chat, f.limits, f.tokenizer,
                                         data[0] % 5 == 2 ? f.chatml : f.plain, &r);
            check(e);
            if (!e) {  // an accepted request is a valid one
                if (!r.sampling.validate().is_ok() || r.prompts.empty() || r.n < 1) std::abort();
                for (const auto& p : r.prompts)
                    if (p.empty()) std::abort();
                for (const auto& [id, bias] : r.sampling.logit_bias)
                    if (id < 0 || id >= f.limits.vocab_size) std::abort();
            }
            break;
        }
        case 3: {
            nlohmann::json out;
            const auto e = tokenize_request(body, f.limits, f.tokenizer, f.chatml, &out);
            check(e);
            if (!e && out["count"] != out["tokens"].size()) std::abort();
            break;
        }
        default: {
            nlohmann::json out;
            check(detokenize_request(body, f.limits, f.tokenizer, &out));
            break;
        }
    }
    return 0;
}
