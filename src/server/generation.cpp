// Engine sequences to OpenAI choices (see generation.h).
#include "server/generation.h"

#include <algorithm>
#include <chrono>

namespace duality::server {

using nlohmann::json;

std::string dump(const json& j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

struct Generation::Choice {
    Choice(int idx, std::shared_ptr<Sequence> s, const Tokenizer& tok,
           std::vector<std::string> stop, bool strip)
        : index(idx),
          seq(std::move(s)),
          decoder(tok, true),
          stops(std::move(stop)),
          strip_space(strip) {}

    int index;
    std::shared_ptr<Sequence> seq;
    StreamDecoder decoder;  // skips special tokens (end-of-text is never shown)
    StopStrings stops;
    bool strip_space;  // drop one leading space of the text (chat, plain template)
    bool done = false;
    const char* finish_reason = nullptr;
    std::vector<int32_t> ids;  // generated ids, up to the stop
    std::string text;          // released text so far

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
            gr.max_tokens = request.max_tokens;
            gr.sampling = request.sampling;
            gr.sampling.seed = request.sampling.seed + static_cast<uint64_t>(index);
            gr.eos_id = request.ignore_eos ? -1 : eos_id;
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
                index, std::move(*seq), tokenizer, request.stop, request.strip_leading_space));
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
        std::vector<int32_t> tokens;
        const bool finished = c->seq->wait(&tokens, wait_until);
        Delta d;
        d.index = c->index;
        for (int32_t t : tokens) {
            if (c->stops.stopped()) break;  // tokens the engine made before it saw the cancel
            c->ids.push_back(t);
            d.token_ids.push_back(t);
            d.text += c->release(c->stops.push(c->decoder.push(t)));
            if (c->stops.stopped()) c->seq->cancel(FinishReason::kStop);
        }
        if (finished) {
            if (!c->stops.stopped()) {
                d.text += c->release(c->stops.push(c->decoder.flush()));
                d.text += c->release(c->stops.flush());
            }
            const FinishReason r = c->seq->finish_reason();
            if (c->stops.stopped()) {
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
        if (!d.text.empty() || !d.token_ids.empty() || d.finish_reason)
            out->push_back(std::move(d));
        all_done &= c->done;
    }
    return all_done;
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
        json choice = {{"index", c->index},
                       {"logprobs", nullptr},
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
        json choice = {{"index", d.index}, {"logprobs", nullptr}};
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
