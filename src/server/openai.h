// OpenAI-compatible request parsing and validation for /v1/completions and
// /v1/chat/completions (docs/server.md): JSON in, a tokenized ApiRequest or an ApiError out.
// Every error names the field at fault and carries the HTTP status it maps to.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "duality/sampling.h"
#include "duality/tokenizer.h"
#include "server/chat_template.h"

namespace duality::server {

struct ApiError {
    int status = 400;
    std::string message;
    std::string type = "invalid_request_error";
    std::string param;  // empty: null
    std::string code;   // empty: null

    nlohmann::json to_json() const;
};

// What the server allows; set from the command line.
struct ApiLimits {
    std::string model_name;  // the id clients send and /v1/models lists
    int64_t max_prompt_tokens = 32768;
    int64_t max_tokens_limit = 4096;  // the largest max_tokens
    int64_t vocab_size = 0;           // prompt token ids must be below this
    int64_t sample_vocab = 0;  // ids that may be generated (logit_bias keys); 0: vocab_size
    int max_n = 16;
    int max_prompts = 64;     // prompts in one batch request
    int max_queue = 1 << 30;  // the engine's queue (--max-queue): a request's choices must fit
};

// The most log-probability entries (a token with its alternatives) one request may ask for.
inline constexpr int64_t kMaxLogprobEntries = int64_t{1} << 20;

struct ApiRequest {
    bool chat = false;
    std::vector<std::vector<int32_t>> prompts;  // tokenized; one or more
    std::vector<std::string> prompt_texts;      // completions: each prompt's text (echo), as
                                                // given or decoded from its ids
    int n = 1;                                  // choices per prompt
    int64_t max_tokens = 16;
    SamplingParams sampling;  // seed: choice i uses seed + i
    std::vector<std::string> stop;
    std::vector<int32_t> stop_token_ids;  // vLLM's: also stop after these ids (not shown as text)
    bool stream = false, include_usage = false, ignore_eos = false, return_token_ids = false;
    bool strip_leading_space = false;  // chat with the plain template (docs/server.md)
    // Log-probabilities: -1 none, else the number of alternatives beside each token (completions'
    // `logprobs`, chat's `top_logprobs` with `logprobs: true`).
    int logprobs = -1;
    bool echo = false;  // completions: the prompt comes first in the text (and the logprobs)
};

// Parses and validates a request body. `chat` selects the chat schema; `tmpl` renders messages.
std::optional<ApiError> parse_request(const std::string& body, bool chat, const ApiLimits& limits,
                                      const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                      ApiRequest* out);

// POST /tokenize (vLLM's extension): {"prompt": text} or {"messages": [...]} (the chat template,
// with the generation prompt unless "add_generation_prompt": false) to {"tokens", "count",
// "max_model_len"}; `out` is the reply's body.
std::optional<ApiError> tokenize_request(const std::string& body, const ApiLimits& limits,
                                         const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                         nlohmann::json* out);
// POST /detokenize: {"tokens": [ids]} to {"prompt": text}.
std::optional<ApiError> detokenize_request(const std::string& body, const ApiLimits& limits,
                                           const Tokenizer& tokenizer, nlohmann::json* out);

// A random id with a prefix: "cmpl-1f3a...".
std::string make_id(const char* prefix);

}  // namespace duality::server
