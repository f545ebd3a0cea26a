// OpenAI-compatible request parsing and validation (see openai.h and docs/server.md).
#include "server/openai.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "loader/json.h"

namespace duality::server {

using nlohmann::json;

namespace {

ApiError bad(std::string param, std::string message) {
    ApiError e;
    e.param = std::move(param);
    e.message = std::move(message);
    return e;
}

std::string type_name(const json& v) {
    switch (v.type()) {
        case json::value_t::null:
            return "null";
        case json::value_t::boolean:
            return "a boolean";
        case json::value_t::string:
            return "a string";
        case json::value_t::array:
            return "an array";
        case json::value_t::object:
            return "an object";
        case json::value_t::number_float:
            return "a number";
        default:
            return "an integer";
    }
}

// Field readers: absent or null leaves *out unchanged; a wrong type or range is an error.
std::optional<ApiError> read_bool(const json& body, const char* key, bool* out) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean())
        return bad(key, std::string(key) + " must be a boolean, got " + type_name(*it));
    *out = it->get<bool>();
    return std::nullopt;
}

std::optional<ApiError> read_int(const json& body, const char* key, int64_t lo, int64_t hi,
                                 int64_t* out) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    if (!it->is_number_integer())
        return bad(
            key, std::string(key) + " must be an integer in " + range + ", got " + type_name(*it));
    const bool out_of_range = it->is_number_unsigned()
                                  ? (it->get<uint64_t>() > static_cast<uint64_t>(hi) ||
                                     (lo > 0 && it->get<uint64_t>() < static_cast<uint64_t>(lo)))
                                  : (it->get<int64_t>() < lo || it->get<int64_t>() > hi);
    if (out_of_range)
        return bad(key,
                   std::string(key) + " must be an integer in " + range + ", got " + it->dump());
    *out = it->get<int64_t>();
    return std::nullopt;
}

// A number in [lo, hi] (open at lo when lo_open).
std::optional<ApiError> read_number(const json& body, const char* key, double lo, double hi,
                                    bool lo_open, float* out) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    char range[64];
    std::snprintf(range, sizeof range, "%s%g, %g]", lo_open ? "(" : "[", lo, hi);
    if (!it->is_number())
        return bad(key,
                   std::string(key) + " must be a number in " + range + ", got " + type_name(*it));
    // The open bound is checked on the float that is kept: a positive double below float's
    // smallest denormal (top_p 1e-300) becomes 0, which the sampler rejects.
    const double v = it->get<double>();
    const float f = static_cast<float>(v);
    if (!std::isfinite(v) || v > hi || v < lo || (lo_open && f <= static_cast<float>(lo)))
        return bad(key, std::string(key) + " must be a number in " + range + ", got " + it->dump());
    *out = f;
    return std::nullopt;
}

std::optional<ApiError> read_ids(const json& arr, const std::string& param, const ApiLimits& limits,
                                 std::vector<int32_t>* out) {
    for (size_t i = 0; i < arr.size(); ++i) {
        const json& v = arr[i];
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= limits.vocab_size)
            return bad(param, param + "[" + std::to_string(i) + "] = " + json_brief(v) +
                                  " is not a token id in [0, " + std::to_string(limits.vocab_size) +
                                  ")");
        out->push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
    return std::nullopt;
}

// `name`: what the message calls the prompt ("prompt", "prompt[3]", "messages").
std::optional<ApiError> check_prompt_length(const std::vector<int32_t>& ids, const char* param,
                                            const std::string& name, const ApiLimits& limits) {
    if (ids.empty()) return bad(param, name + " is empty (it has no tokens)");
    if (static_cast<int64_t>(ids.size()) > limits.max_prompt_tokens)
        return bad(param, name + " has " + std::to_string(ids.size()) +
                              " tokens, more than the server's limit of " +
                              std::to_string(limits.max_prompt_tokens));
    return std::nullopt;
}

std::optional<ApiError> read_prompts(const json& body, const ApiLimits& limits,
                                     const Tokenizer& tokenizer, ApiRequest* out) {
    auto it = body.find("prompt");
    if (it == body.end() || it->is_null()) return bad("prompt", "prompt is required");
    const json& p = *it;
    auto add_text = [&](const std::string& text, const std::string& name) {
        out->prompts.push_back(tokenizer.encode(text));
        out->prompt_texts.push_back(text);
        return check_prompt_length(out->prompts.back(), "prompt", name, limits);
    };
    if (p.is_string()) return add_text(p.get<std::string>(), "prompt");
    if (!p.is_array())
        return bad("prompt",
                   "prompt must be a string, an array of token ids or an array of "
                   "strings, got " +
                       type_name(p));
    if (p.empty()) return bad("prompt", "prompt is an empty array");
    if (p[0].is_number()) {
        out->prompts.emplace_back();
        if (auto e = read_ids(p, "prompt", limits, &out->prompts.back())) return e;
        out->prompt_texts.push_back(tokenizer.decode(out->prompts.back()));
        return check_prompt_length(out->prompts.back(), "prompt", "prompt", limits);
    }
    if (static_cast<int>(p.size()) > limits.max_prompts)
        return bad("prompt", "a batch of " + std::to_string(p.size()) + " prompts is more than " +
                                 std::to_string(limits.max_prompts));
    for (size_t i = 0; i < p.size(); ++i) {
        const std::string name = "prompt[" + std::to_string(i) + "]";
        if (p[i].is_string()) {
            if (auto e = add_text(p[i].get<std::string>(), name)) return e;
        } else if (p[i].is_array()) {
            out->prompts.emplace_back();
            if (auto e = read_ids(p[i], name, limits, &out->prompts.back())) return e;
            out->prompt_texts.push_back(tokenizer.decode(out->prompts.back()));
            if (auto e = check_prompt_length(out->prompts.back(), "prompt", name, limits)) return e;
        } else {
            return bad("prompt",
                       name + " must be a string or an array of token ids, got " + type_name(p[i]));
        }
    }
    return std::nullopt;
}

std::optional<ApiError> read_messages(const json& body, const ApiLimits& limits,
                                      const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                      ApiRequest* out, bool generation_prompt = true) {
    auto it = body.find("messages");
    if (it == body.end() || it->is_null()) return bad("messages", "messages is required");
    if (!it->is_array()) return bad("messages", "messages must be an array, got " + type_name(*it));
    if (it->empty()) return bad("messages", "messages is empty");
    std::vector<ChatMessage> messages;
    for (size_t i = 0; i < it->size(); ++i) {
        const json& m = (*it)[i];
        const std::string name = "messages[" + std::to_string(i) + "]";
        if (!m.is_object())
            return bad("messages", name + " must be an object, got " + type_name(m));
        auto role = m.find("role");
        if (role == m.end() || !role->is_string() || role->get<std::string>().empty())
            return bad("messages", name + ".role must be a non-empty string");
        ChatMessage msg;
        msg.role = role->get<std::string>();
        auto content = m.find("content");
        if (content == m.end()) return bad("messages", name + ".content is required");
        if (content->is_string()) {
            msg.content = content->get<std::string>();
        } else if (content->is_array()) {
            for (size_t j = 0; j < content->size(); ++j) {
                const json& part = (*content)[j];
                const std::string pname = name + ".content[" + std::to_string(j) + "]";
                if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
                    !part.contains("text") || !part["text"].is_string())
                    return bad("messages", pname +
                                               " must be {\"type\": \"text\", \"text\": "
                                               "string} (only text is supported)");
                msg.content += part["text"].get<std::string>();
            }
        } else if (!content->is_null()) {
            return bad("messages", name +
                                       ".content must be a string or an array of text parts, "
                                       "got " +
                                       type_name(*content));
        }
        messages.push_back(std::move(msg));
    }
    Result<std::string> text = tmpl.render(messages, generation_prompt);
    if (!text.is_ok()) {
        std::string message = "chat template: " + text.status().message();
        const std::string cap = "exceeds " + std::to_string(tmpl.max_output_bytes()) + " bytes";
        if (message.find(cap) != std::string::npos)
            message += " (the server's --template-max-output)";
        return bad("messages", message);
    }
    out->prompts.push_back(tokenizer.encode(*text));
    out->strip_leading_space = tmpl.is_plain();
    return check_prompt_length(out->prompts.back(), "messages", "messages", limits);
}

}  // namespace

json ApiError::to_json() const {
    json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
    if (!param.empty()) e["param"] = param;
    if (!code.empty()) e["code"] = code;
    return json{{"error", e}};
}

std::string make_id(const char* prefix) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    char hex[33];
    std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                  static_cast<unsigned long long>(rng()));
    return std::string(prefix) + hex;
}

namespace {

// The body as a JSON object whose "model", if any, is the served one.
std::optional<ApiError> parse_body(const std::string& body_text, const ApiLimits& limits,
                                   json* out) {
    json& body = *out;
    try {
        body = json::parse(body_text);
    } catch (const json::exception& e) {
        return bad("", std::string("the body is not valid JSON: ") + e.what());
    }
    if (!body.is_object()) return bad("", "the body must be a JSON object, got " + type_name(body));
    if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
        if (!it->is_string()) return bad("model", "model must be a string, got " + type_name(*it));
        if (it->get<std::string>() != limits.model_name) {
            ApiError e = bad("model", "the model '" + it->get<std::string>() +
                                          "' does not exist; this server serves '" +
                                          limits.model_name + "'");
            e.status = 404;
            e.type = "not_found_error";
            e.code = "model_not_found";
            return e;
        }
    }
    return std::nullopt;
}

}  // namespace

std::optional<ApiError> tokenize_request(const std::string& body_text, const ApiLimits& limits,
                                         const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                         json* out) {
    json body;
    if (auto e = parse_body(body_text, limits, &body)) return e;
    const bool has_prompt = body.contains("prompt") && !body["prompt"].is_null();
    const bool has_messages = body.contains("messages") && !body["messages"].is_null();
    if (has_prompt == has_messages)
        return bad(has_prompt ? "messages" : "prompt",
                   "give either prompt (a string) or messages (a chat), not both or neither");
    std::vector<int32_t> ids;
    if (has_prompt) {
        if (!body["prompt"].is_string())
            return bad("prompt", "prompt must be a string, got " + type_name(body["prompt"]));
        ids = tokenizer.encode(body["prompt"].get<std::string>());
    } else {
        bool generation_prompt = true;
        if (auto e = read_bool(body, "add_generation_prompt", &generation_prompt)) return e;
        ApiRequest r;
        ApiLimits unbounded = limits;
        unbounded.max_prompt_tokens = INT64_MAX;  // counting is the point
        if (auto e = read_messages(body, unbounded, tokenizer, tmpl, &r, generation_prompt))
            return e;
        ids = std::move(r.prompts.back());
    }
    *out =
        json{{"tokens", ids}, {"count", ids.size()}, {"max_model_len", limits.max_prompt_tokens}};
    return std::nullopt;
}

std::optional<ApiError> detokenize_request(const std::string& body_text, const ApiLimits& limits,
                                           const Tokenizer& tokenizer, json* out) {
    json body;
    if (auto e = parse_body(body_text, limits, &body)) return e;
    auto it = body.find("tokens");
    if (it == body.end() || it->is_null()) return bad("tokens", "tokens is required");
    if (!it->is_array())
        return bad("tokens", "tokens must be an array of token ids, got " + type_name(*it));
    // Only ids the tokenizer can decode (decode() would drop padded rows silently).
    ApiLimits known = limits;
    known.vocab_size = std::min<int64_t>(limits.vocab_size, tokenizer.vocab_size());
    std::vector<int32_t> ids;
    if (auto e = read_ids(*it, "tokens", known, &ids)) return e;
    *out = json{{"prompt", tokenizer.decode(ids)}};
    return std::nullopt;
}

std::optional<ApiError> parse_request(const std::string& body_text, bool chat,
                                      const ApiLimits& limits, const Tokenizer& tokenizer,
                                      const ChatTemplate& tmpl, ApiRequest* out) {
    json body;
    if (auto e = parse_body(body_text, limits, &body)) return e;
    ApiRequest r;
    r.chat = chat;

    // Unsupported features are refused rather than silently ignored.
    std::vector<const char*> unsupported = {"suffix", "tools", "functions"};
    if (chat) unsupported.push_back("echo");
    for (const char* key : unsupported) {
        auto it = body.find(key);
        if (it != body.end() && !it->is_null() && *it != false && !(it->is_array() && it->empty()))
            return bad(key, std::string(key) + " is not supported by this server");
    }
    if (auto it = body.find("best_of"); it != body.end() && !it->is_null() && *it != 1)
        return bad("best_of", "best_of other than 1 is not supported by this server");
    if (auto it = body.find("logit_bias"); it != body.end() && !it->is_null()) {
        if (!it->is_object())
            return bad("logit_bias", "logit_bias must be an object of token ids to numbers, got " +
                                         type_name(*it));
        if (it->size() > static_cast<size_t>(kMaxLogitBias))
            return bad("logit_bias", "logit_bias may hold at most " +
                                         std::to_string(kMaxLogitBias) + " entries, got " +
                                         std::to_string(it->size()));
        const int64_t n_ids = limits.sample_vocab > 0 ? limits.sample_vocab : limits.vocab_size;
        for (const auto& [key, value] : it->items()) {
            // The key: a token id in decimal ("50256"), no sign or leading zero (so that no two
            // keys name one id), below the ids that may be generated.
            const bool digits =
                !key.empty() && key.size() <= 10 && (key.size() == 1 || key[0] != '0') &&
                std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
            const int64_t id = digits ? std::stoll(key) : -1;
            if (id < 0 || id >= n_ids)
                return bad("logit_bias", "logit_bias key " + json_brief(json(key)) +
                                             " is not a token id in [0, " + std::to_string(n_ids) +
                                             ")");
            if (!value.is_number() || !std::isfinite(value.get<double>()) ||
                std::fabs(value.get<double>()) > kLogitBiasLimit)
                return bad("logit_bias", "logit_bias[\"" + key +
                                             "\"] must be a number in [-100, 100], got " +
                                             json_brief(value));
            r.sampling.logit_bias.emplace_back(static_cast<int32_t>(id), value.get<float>());
        }
    }

    // Log-probabilities: completions' `logprobs` is the number of alternatives; chat's is a
    // switch, with the number in `top_logprobs`.
    if (chat) {
        bool want = false;
        if (auto e = read_bool(body, "logprobs", &want)) return e;
        int64_t top = 0;
        if (auto e = read_int(body, "top_logprobs", 0, kMaxTopLogprobs, &top)) return e;
        if (auto it = body.find("top_logprobs"); it != body.end() && !it->is_null() && !want)
            return bad("top_logprobs", "top_logprobs needs logprobs: true");
        if (want) r.logprobs = static_cast<int>(top);
    } else {
        if (auto it = body.find("top_logprobs"); it != body.end() && !it->is_null())
            return bad("top_logprobs",
                       "top_logprobs is a chat completions field; completions take logprobs: N");
        int64_t n_top = -1;
        if (auto e = read_int(body, "logprobs", 0, kMaxTopLogprobs, &n_top)) return e;
        r.logprobs = static_cast<int>(n_top);
        if (auto e = read_bool(body, "echo", &r.echo)) return e;
    }

    // The default (16) never exceeds --max-tokens-limit; in chat requests max_completion_tokens,
    // the newer name, wins over max_tokens where both are given. 0 only with echo (scoring a
    // prompt).
    int64_t max_tokens = std::min(r.max_tokens, limits.max_tokens_limit);
    if (auto e = read_int(body, "max_tokens", r.echo ? 0 : 1, limits.max_tokens_limit, &max_tokens))
        return e;
    if (chat) {
        if (auto e =
                read_int(body, "max_completion_tokens", 1, limits.max_tokens_limit, &max_tokens))
            return e;
    }
    r.max_tokens = max_tokens;

    SamplingParams& s = r.sampling;
    s.temperature = 1.0f;
    if (auto e = read_number(body, "temperature", 0, 2, false, &s.temperature)) return e;
    if (auto e = read_number(body, "top_p", 0, 1, true, &s.top_p)) return e;
    if (auto e = read_number(body, "min_p", 0, 1, false, &s.min_p)) return e;
    if (auto e = read_number(body, "presence_penalty", -2, 2, false, &s.presence_penalty)) return e;
    if (auto e = read_number(body, "frequency_penalty", -2, 2, false, &s.frequency_penalty))
        return e;
    if (auto e = read_number(body, "repetition_penalty", kMinRepetitionPenalty, 100, false,
                             &s.repetition_penalty))
        return e;
    int64_t top_k = 0;
    if (auto e = read_int(body, "top_k", -1, 1 << 30, &top_k)) return e;
    s.top_k = top_k < 0 ? 0 : static_cast<int>(top_k);
    if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
        if (!it->is_number_integer())
            return bad("seed", "seed must be an integer, got " + type_name(*it));
        s.seed = it->is_number_unsigned() ? it->get<uint64_t>()
                                          : static_cast<uint64_t>(it->get<int64_t>());
    } else {
        s.seed = std::random_device{}() * 0x100000001ull + std::random_device{}();
    }
    int64_t n = 1;
    if (auto e = read_int(body, "n", 1, limits.max_n, &n)) return e;
    r.n = static_cast<int>(n);

    if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
        auto add = [&](const json& v, const std::string& name) -> std::optional<ApiError> {
            if (!v.is_string() || v.get<std::string>().empty())
                return bad("stop", name + " must be a non-empty string");
            r.stop.push_back(v.get<std::string>());
            return std::nullopt;
        };
        if (it->is_string()) {
            if (auto e = add(*it, "stop")) return e;
        } else if (it->is_array()) {
            if (it->size() > 16) return bad("stop", "stop may hold at most 16 strings");
            for (size_t i = 0; i < it->size(); ++i)
                if (auto e = add((*it)[i], "stop[" + std::to_string(i) + "]")) return e;
        } else {
            return bad("stop",
                       "stop must be a string or an array of strings, got " + type_name(*it));
        }
    }
    if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
        if (!it->is_array())
            return bad("stop_token_ids",
                       "stop_token_ids must be an array of token ids, got " + type_name(*it));
        if (it->size() > 64) return bad("stop_token_ids", "stop_token_ids may hold at most 64 ids");
        if (auto e = read_ids(*it, "stop_token_ids", limits, &r.stop_token_ids)) return e;
    }
    // vLLM's other sampling and output extensions change what is generated or returned: refused
    // where they would, rather than ignored (their neutral values pass).
    auto given = [&](const char* key) {
        auto it = body.find(key);
        return it != body.end() && !it->is_null();
    };
    for (const char* key :
         {"prompt_logprobs", "guided_json", "guided_regex", "guided_choice", "guided_grammar",
          "allowed_token_ids", "structured_outputs", "chat_template", "truncate_prompt_tokens"})
        if (given(key)) return bad(key, std::string(key) + " is not supported by this server");
    // Their neutral values, as for the switches below. (Values are compared in place: a copy of
    // a deeply nested one recursed off the stack.)
    for (const auto& [key, neutral] : {std::pair{"min_tokens", json(0)},
                                       {"bad_words", json::array()},
                                       {"chat_template_kwargs", json::object()}})
        if (given(key) && body[key] != neutral)
            return bad(key, std::string(key) + " is not supported by this server");
    for (const auto& [key, neutral] : {std::pair{"use_beam_search", false},
                                       {"include_stop_str_in_output", false},
                                       {"skip_special_tokens", true},
                                       {"continue_final_message", false}})
        if (given(key) && body[key] != neutral)
            return bad(key, std::string(key) + " = " + json_brief(body[key]) +
                                " is not supported by this server");
    if (given("response_format")) {
        const json& f = body["response_format"];
        const auto type = f.find("type");  // end() unless an object with a type
        if (type == f.end() || *type != "text")
            return bad("response_format",
                       "response_format other than {\"type\": \"text\"} (JSON or schema "
                       "output) is not supported by this server");
    }
    if (given("tool_choice") && body["tool_choice"] != "none")
        return bad("tool_choice", "tools are not supported by this server");
    if (auto e = read_bool(body, "stream", &r.stream)) return e;
    if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
        if (!it->is_object())
            return bad("stream_options", "stream_options must be an object, got " + type_name(*it));
        if (auto e = read_bool(*it, "include_usage", &r.include_usage)) {
            e->param = "stream_options.include_usage";
            return e;
        }
    }
    if (auto e = read_bool(body, "ignore_eos", &r.ignore_eos)) return e;
    if (auto e = read_bool(body, "return_token_ids", &r.return_token_ids)) return e;
    if (auto it = body.find("user"); it != body.end() && !it->is_null() && !it->is_string())
        return bad("user", "user must be a string, got " + type_name(*it));

    if (chat) {
        bool generation_prompt = true;  // vLLM's add_generation_prompt, as /tokenize takes it
        if (auto e = read_bool(body, "add_generation_prompt", &generation_prompt)) return e;
        if (auto e = read_messages(body, limits, tokenizer, tmpl, &r, generation_prompt)) return e;
    } else {
        if (auto e = read_prompts(body, limits, tokenizer, &r)) return e;
    }
    // Log-probability entries (a token and its alternatives) are bounded, so that one request
    // cannot build a response of gigabytes.
    if (r.logprobs >= 0) {
        int64_t positions = 0;
        for (const auto& p : r.prompts)
            positions += (r.echo ? static_cast<int64_t>(p.size()) : 0) + r.max_tokens;
        const int64_t entries = positions * r.n * (r.logprobs + 1);
        if (entries > kMaxLogprobEntries)
            return bad("logprobs",
                       "the request asks for " + std::to_string(entries) +
                           " log-probability entries ((echoed prompt tokens + max_tokens) x n x "
                           "(logprobs + 1)), more than " +
                           std::to_string(kMaxLogprobEntries) +
                           "; ask for fewer alternatives, tokens or prompts");
    }
    // Choices that could never all wait in the engine's queue are the request's fault (400),
    // not a busy server's (a 503 that no retry would change).
    const int most = std::min(limits.max_prompts, limits.max_queue);
    if (static_cast<int64_t>(r.prompts.size()) * r.n > most)
        return bad("n", "prompts x n = " + std::to_string(r.prompts.size() * r.n) +
                            " choices is more than " + std::to_string(most) +
                            (most < limits.max_prompts ? " (the server's --max-queue)" : ""));
    *out = std::move(r);
    return std::nullopt;
}

}  // namespace duality::server
