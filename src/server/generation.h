// One request's choices in flight: engine sequences turned into text (streaming UTF-8 decoding,
// stop strings) and into OpenAI response objects, for both the streamed and the plain response.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "duality/engine.h"
#include "duality/tokenizer.h"
#include "sampling/stop_strings.h"
#include "server/openai.h"

namespace duality::server {

// JSON text that never throws on invalid UTF-8 (replaced by U+FFFD).
std::string dump(const nlohmann::json& j);

class Generation {
  public:
    // Submits every choice of `request` to `engine`. On failure (queue full, shutting down) no
    // sequence is left behind and the error says why.
    static std::variant<std::unique_ptr<Generation>, ApiError> start(Engine& engine,
                                                                     const ApiRequest& request,
                                                                     const Tokenizer& tokenizer,
                                                                     int32_t eos_id,
                                                                     double timeout_s);
    ~Generation();  // cancels whatever is still running

    // One position of a choice's log-probabilities: the token, its text as the response shows
    // it, where that text starts (completions' text_offset, in characters from the start of the
    // choice's logprobs) and, but for an echoed prompt's first token, its log-probabilities.
    struct LogprobEntry {
        int32_t id = 0;
        std::string token;  // the token's bytes, invalid UTF-8 replaced by U+FFFD
        int64_t text_offset = 0;
        std::optional<TokenLogprobs> lp;
    };
    // A piece of a choice's text that became final (stream events).
    struct Delta {
        int index = 0;
        std::string text;
        std::vector<int32_t> token_ids;
        std::vector<LogprobEntry> logprobs;   // where the request asked for them
        const char* finish_reason = nullptr;  // set on the choice's last delta
    };
    // Waits (at most until `until`) for progress; appends the deltas. Returns true once every
    // choice has finished and its last delta was returned.
    bool poll(SteadyClock::time_point until, std::vector<Delta>* out);

    void cancel();  // the client went away
    // The error that ended a choice, if any (a failed model step).
    const std::string& error() const { return error_; }

    nlohmann::json usage() const;
    // The whole non-streamed response (after poll() returned true).
    nlohmann::json response(const std::string& id, int64_t created, const std::string& model) const;
    // One streamed chunk carrying `deltas` (the chat variant sends role first, see docs).
    nlohmann::json chunk(const std::string& id, int64_t created, const std::string& model,
                         const std::vector<Delta>& deltas) const;
    bool chat() const { return request_.chat; }
    int n_choices() const { return static_cast<int>(choices_.size()); }

  private:
    struct Choice;
    Generation(const ApiRequest& request, const Tokenizer& tokenizer);
    // A token's bytes as text, invalid UTF-8 replaced by U+FFFD.
    std::string token_text(int32_t id) const;
    LogprobEntry entry(Choice& c, int32_t id, std::optional<TokenLogprobs> lp) const;
    nlohmann::json logprobs_json(const std::vector<LogprobEntry>& entries) const;

    ApiRequest request_;
    Tokenizer tokenizer_;
    std::vector<std::unique_ptr<Choice>> choices_;
    std::vector<int64_t> prompt_of_choice_;
    std::string error_;
};

}  // namespace duality::server
