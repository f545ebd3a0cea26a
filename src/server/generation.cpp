// Engine sequences to OpenAI choices (see generation.h).
#include "server/generation.h"

#include <algorithm>
#include <chrono>

#include "tokenizer/utf8.h"

namespace duality::server {

using nlohmann::json;

std::string dump(const json& j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

struct Generation::Choice {
    Choice(int idx, size_t prompt_idx, std::shared_ptr<Sequence> s, const Tokenizer& tok,
           std::vector<std::string> stop, bool strip)
        : index(idx),
          prompt(prompt_idx),
          seq(std::move(s)),
          decoder(tok, true),
          stops(std::move(stop)),
          strip_space(strip) {}

    int index;
    size_t prompt;  // which of the request's prompts
    std::shared_ptr<Sequence> seq;
    StreamDecoder decoder;  // skips special tokens (end-of-text is never shown)
    StopStrings stops;
    bool strip_space;  // drop one leading space of the text (chat, plain template)
    bool done = false;
    const char* finish_reason = nullptr;
    std::vector<int32_t> ids;  // generated ids, up to the stop
    std::string text;          // released text so far
    bool echoed = false;       // echo: the prompt went out
    bool discard = false;      // max_tokens 0 (echo only): the one token generated is not shown
    bool unscored = false;     // echo: the sequence ended before its prompt was scored
    std::vector<LogprobEntry> logprobs;  // all of them so far (the whole response's)
    int64_t chars = 0;                   // characters of the tokens in `logprobs`

    std::string release(std::string piece) {
        // Exactly one space, from the first non-empty piece (a lone " " piece must not leave
        // the flag set for the next piece's space).
        if (strip_space && !piece.empty()) {
            strip_space = false;
            if (piece[0] == ' ') piece.erase(0, 1);
        }
        text += piece;
        return piece;
    }
};

Generation::Generation(const ApiRequest& request, const Tokenizer& tokenizer)
    : request_(request), tokenizer_(tokenizer) {}

Generation::~Generation() {
    cancel();
}

std::variant<std::unique_ptr<Generation>, ApiError> Generation::start(Engine& engine,
                                                                      const ApiRequest& request,
                                                                      const Tokenizer& tokenizer,
                                                                      int32_t eos_id,
                                                                      double timeout_s) {
    std::unique_ptr<Generation> g(new Generation(request, tokenizer));
    const auto deadline = SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                                   std::chrono::duration<double>(timeout_s));
    int index = 0;
    for (size_t p = 0; p < request.prompts.size(); ++p) {
        for (int i = 0; i < request.n; ++i, ++index) {
            GenerateRequest gr;
            gr.prompt = request.prompts[p];
            gr.max_tokens = std::max<int64_t>(request.max_tokens, 1);
            gr.logprobs = request.logprobs;
            gr.prompt_logprobs = request.echo && request.logprobs >= 0;
            gr.sampling = request.sampling;
            gr.sampling.seed = request.sampling.seed + static_cast<uint64_t>(index);
            gr.eos_id = request.ignore_eos ? -1 : eos_id;
            gr.stop_ids = request.stop_token_ids;
            gr.deadline = deadline;
            Result<std::shared_ptr<Sequence>> seq = engine.submit(std::move(gr));
            if (!seq.is_ok()) {
                ApiError e;
                const bool busy = seq.status().code() == StatusCode::kResourceExhausted;
                e.status = busy ? 503 : 400;
                e.type = busy ? "server_error" : "invalid_request_error";
                e.message = seq.status().message();
                return e;  // ~Generation cancels the choices already submitted
            }
            g->choices_.push_back(std::make_unique<Choice>(
                index, p, std::move(*seq), tokenizer, request.stop, request.strip_leading_space));
            g->choices_.back()->discard = request.max_tokens == 0;
            g->prompt_of_choice_.push_back(static_cast<int64_t>(p));
        }
    }
    return g;
}

void Generation::cancel() {
    for (auto& c : choices_)
        if (!c->done) c->seq->cancel();
}

bool Generation::poll(SteadyClock::time_point until, std::vector<Delta>* out) {
    bool all_done = true;
    const size_t n_open = static_cast<size_t>(
        std::count_if(choices_.begin(), choices_.end(), [](const auto& c) { return !c->done; }));
    for (auto& c : choices_) {
        if (c->done) continue;
        // One choice: wait for it; several: look at each briefly so none holds up the others.
        const auto wait_until =
            n_open == 1 ? until
                        : std::min(until, SteadyClock::now() + std::chrono::milliseconds(5));
        const bool want_logprobs = request_.logprobs >= 0;
        std::vector<int32_t> tokens;
        std::vector<TokenLogprobs> lps;
        const bool finished = c->seq->wait(&tokens, wait_until, want_logprobs ? &lps : nullptr);
        Delta d;
        d.index = c->index;
        if (request_.echo && !c->echoed && (finished || !tokens.empty())) {
            // The prompt's log-probabilities are complete before its first generated token.
            c->echoed = true;
            c->text += request_.prompt_texts[c->prompt];
            d.text += request_.prompt_texts[c->prompt];
            if (want_logprobs) {
                const std::vector<int32_t>& prompt = request_.prompts[c->prompt];
                std::vector<TokenLogprobs> plps = c->seq->prompt_logprobs();
                // Complete unless the sequence ended first (a timeout, a cancel, a failed step):
                // then no token followed, and the choice fails rather than show holes.
                c->unscored = plps.size() + 1 < prompt.size();
                for (size_t i = 0; i < prompt.size() && !c->unscored; ++i) {
                    std::optional<TokenLogprobs> lp;
                    if (i > 0 && i - 1 < plps.size()) lp = std::move(plps[i - 1]);
                    d.logprobs.push_back(entry(*c, prompt[i], std::move(lp)));
                }
            }
        }
        for (size_t k = 0; k < tokens.size(); ++k) {
            const int32_t t = tokens[k];
            if (c->stops.stopped()) break;  // tokens the engine made before it saw the cancel
            if (c->discard) break;
            c->ids.push_back(t);
            d.token_ids.push_back(t);
            if (want_logprobs)
                d.logprobs.push_back(
                    entry(*c, t, k < lps.size() ? std::optional(std::move(lps[k])) : std::nullopt));
            // A stop id ends the text without its own (the engine ends the sequence after it).
            const auto& stop_ids = request_.stop_token_ids;
            if (std::find(stop_ids.begin(), stop_ids.end(), t) != stop_ids.end()) break;
            d.text += c->release(c->stops.push(c->decoder.push(t)));
            if (c->stops.stopped()) c->seq->cancel(FinishReason::kStop);
        }
        if (finished) {
            if (!c->stops.stopped()) {
                d.text += c->release(c->stops.push(c->decoder.flush()));
                d.text += c->release(c->stops.flush());
            }
            const FinishReason r = c->seq->finish_reason();
            if (c->unscored) {
                c->finish_reason = "error";
                if (error_.empty())
                    error_ = r == FinishReason::kError
                                 ? c->seq->error()
                                 : std::string("the request ended (") + to_string(r) +
                                       ") before its prompt was scored";
            } else if (c->discard && (r == FinishReason::kLength || r == FinishReason::kStop)) {
                c->finish_reason = "length";
            } else if (c->stops.stopped()) {
                c->finish_reason = "stop";
            } else if (r == FinishReason::kError) {
                c->finish_reason = "error";
                if (error_.empty()) error_ = c->seq->error();
            } else {
                c->finish_reason = to_string(r);
            }
            c->done = true;
            d.finish_reason = c->finish_reason;
        }
        if (!d.text.empty() || !d.token_ids.empty() || !d.logprobs.empty() || d.finish_reason)
            out->push_back(std::move(d));
        all_done &= c->done;
    }
    return all_done;
}

std::string Generation::token_text(int32_t id) const {
    std::string out;
    utf8::append_lossy(tokenizer_.token_bytes(id), true, &out);
    return out;
}

Generation::LogprobEntry Generation::entry(Choice& c, int32_t id,
                                           std::optional<TokenLogprobs> lp) const {
    LogprobEntry e;
    e.id = id;
    e.token = token_text(id);
    e.text_offset = c.chars;
    for (unsigned char b : e.token) c.chars += (b & 0xC0) != 0x80;  // code points
    e.lp = std::move(lp);
    c.logprobs.push_back(e);
    return e;
}

json Generation::logprobs_json(const std::vector<LogprobEntry>& entries) const {
    auto bytes = [&](int32_t id) {
        json b = json::array();
        for (unsigned char c : tokenizer_.token_bytes(id)) b.push_back(static_cast<int>(c));
        return b;
    };
    if (request_.chat) {  // {"content": [{token, logprob, bytes, top_logprobs: [...]}]}
        json content = json::array();
        for (const LogprobEntry& e : entries) {
            json top = json::array();
            if (e.lp)
                for (const auto& [id, v] : e.lp->top)
                    top.push_back(
                        {{"token", token_text(id)}, {"logprob", v}, {"bytes", bytes(id)}});
            content.push_back({{"token", e.token},
                               {"logprob", e.lp ? json(e.lp->logprob) : json(nullptr)},
                               {"bytes", bytes(e.id)},
                               {"top_logprobs", std::move(top)}});
        }
        return json{{"content", std::move(content)}};
    }
    // Completions: parallel arrays; each top_logprobs object holds the chosen token and the N most
    // likely ones (as OpenAI's: up to N + 1 entries; where two ids show the same text, the chosen
    // one's value, else the likelier one's).
    json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
         offsets = json::array();
    for (const LogprobEntry& e : entries) {
        tokens.push_back(e.token);
        token_logprobs.push_back(e.lp ? json(e.lp->logprob) : json(nullptr));
        if (e.lp) {
            json top = json::object();
            top[e.token] = e.lp->logprob;
            for (const auto& [id, v] : e.lp->top) {
                const std::string t = token_text(id);
                if (!top.contains(t)) top[t] = v;
            }
            top_logprobs.push_back(std::move(top));
        } else {
            top_logprobs.push_back(nullptr);
        }
        offsets.push_back(e.text_offset);
    }
    return json{{"tokens", std::move(tokens)},
                {"token_logprobs", std::move(token_logprobs)},
                {"top_logprobs", std::move(top_logprobs)},
                {"text_offset", std::move(offsets)}};
}

json Generation::usage() const {
    int64_t prompt = 0, cached = 0, completion = 0;
    for (const auto& p : request_.prompts) prompt += static_cast<int64_t>(p.size());
    std::vector<bool> counted(request_.prompts.size(), false);
    for (size_t i = 0; i < choices_.size(); ++i) {
        completion += static_cast<int64_t>(choices_[i]->ids.size());
        const size_t p = static_cast<size_t>(prompt_of_choice_[i]);
        if (!counted[p]) cached += choices_[i]->seq->cached_tokens();
        counted[p] = true;
    }
    return json{{"prompt_tokens", prompt},
                {"completion_tokens", completion},
                {"total_tokens", prompt + completion},
                {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

json Generation::response(const std::string& id, int64_t created, const std::string& model) const {
    json choices = json::array();
    for (const auto& c : choices_) {
        json choice = {
            {"index", c->index},
            {"logprobs", request_.logprobs >= 0 ? logprobs_json(c->logprobs) : json(nullptr)},
            {"finish_reason", c->finish_reason ? c->finish_reason : "stop"}};
        if (request_.chat) {
            choice["message"] = {{"role", "assistant"}, {"content", c->text}};
        } else {
            choice["text"] = c->text;
        }
        if (request_.return_token_ids) choice["token_ids"] = c->ids;
        choices.push_back(std::move(choice));
    }
    return json{{"id", id},
                {"object", request_.chat ? "chat.completion" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", std::move(choices)},
                {"usage", usage()}};
}

json Generation::chunk(const std::string& id, int64_t created, const std::string& model,
                       const std::vector<Delta>& deltas) const {
    json choices = json::array();
    for (const Delta& d : deltas) {
        json choice = {
            {"index", d.index},
            {"logprobs", request_.logprobs >= 0 && !d.logprobs.empty() ? logprobs_json(d.logprobs)
                                                                       : json(nullptr)}};
        choice["finish_reason"] = d.finish_reason ? json(d.finish_reason) : json(nullptr);
        if (request_.chat) {
            choice["delta"] =
                d.text.empty() && d.finish_reason ? json::object() : json{{"content", d.text}};
        } else {
            choice["text"] = d.text;
        }
        if (request_.return_token_ids) choice["token_ids"] = d.token_ids;
        choices.push_back(std::move(choice));
    }
    return json{{"id", id},
                {"object", request_.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", std::move(choices)}};
}

}  // namespace duality::server
