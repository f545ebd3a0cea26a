// `duality chat-template`: prints the prompt a chat template builds from a list of messages,
// exactly (no trailing newline added): the text the server feeds the model for a
// /v1/chat/completions request. The template comes from --model (chat_template.jinja or
// tokenizer_config.json; the plain format when the model has none) or --template FILE. The
// messages are a JSON array of {"role", "content"} objects, or an object with such a
// "messages" array (a chat completions request body), given inline or as a file (- = stdin).
#include <cstdio>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/read_file.h"
#include "server/chat_template.h"
#include "tools/duality/commands.h"

namespace duality::cli {
namespace {

struct ChatTemplateOptions {
    std::string model, template_file, messages, bos_token, eos_token;
    bool no_generation_prompt = false;
};

int fail(const std::string& message, int code = 1) {
    std::fprintf(stderr, "duality chat-template: %s\n", message.c_str());
    return code;
}

bool read_text(const std::string& file, std::string* out, std::string* error) {
    if (file == "-") {
        std::ostringstream ss;
        ss << std::cin.rdbuf();
        *out = ss.str();
        return true;
    }
    auto text = read_file(file);
    if (!text) {
        *error = text.status().message();
        return false;
    }
    *out = std::move(*text);
    return true;
}

// The messages of --messages: inline JSON when it starts with '[' or '{', else a file.
bool parse_messages(const std::string& arg, std::vector<server::ChatMessage>* messages,
                    std::string* error) {
    const size_t first = arg.find_first_not_of(" \t\r\n");
    std::string text, where = "--messages";
    if (first != std::string::npos && (arg[first] == '[' || arg[first] == '{')) {
        text = arg;
    } else {
        if (!read_text(arg, &text, error)) {
            *error = "--messages: " + *error;
            return false;
        }
        where = arg;
    }
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
        *error = where + ": not valid JSON";
        return false;
    }
    const nlohmann::json* list = &j;
    if (j.is_object()) {
        const auto it = j.find("messages");
        if (it == j.end()) {
            *error = where + ": expected an array of messages or an object with \"messages\"";
            return false;
        }
        list = &*it;
        where += ": messages";
    }
    if (!list->is_array()) {
        *error = where + ": expected an array of {\"role\", \"content\"} objects";
        return false;
    }
    for (size_t k = 0; k < list->size(); ++k) {
        const nlohmann::json& m = (*list)[k];
        const std::string at = where + "[" + std::to_string(k) + "]";
        if (!m.is_object()) {
            *error = at + ": expected an object with \"role\" and \"content\"";
            return false;
        }
        const auto role = m.find("role");
        const auto content = m.find("content");
        if (role == m.end() || !role->is_string()) {
            *error = at + ": \"role\" must be a string";
            return false;
        }
        if (content == m.end() || !content->is_string()) {
            *error = at + ": \"content\" must be a string";
            return false;
        }
        messages->push_back({role->get<std::string>(), content->get<std::string>()});
    }
    return true;
}

}  // namespace

Action add_chat_template_command(CLI::App& app) {
    auto opt = std::make_shared<ChatTemplateOptions>();
    CLI::App* cmd = app.add_subcommand(
        "chat-template", "Print the prompt a model's chat template builds from messages");
    CLI::Option* model = cmd->add_option(
        "--model", opt->model,
        "Model folder (chat_template.jinja or tokenizer_config.json; default: the bundled model)");
    CLI::Option* tmpl =
        cmd->add_option("--template", opt->template_file, "A Jinja chat template file instead");
    model->excludes(tmpl);
    cmd->add_option("--messages", opt->messages,
                    "JSON array of {\"role\", \"content\"} (or {\"messages\": [...]}), inline or "
                    "a file (- = stdin)")
        ->required();
    cmd->add_flag("--no-generation-prompt", opt->no_generation_prompt,
                  "Do not append the text that opens the assistant's reply");
    cmd->add_option("--bos-token", opt->bos_token, "Override bos_token");
    cmd->add_option("--eos-token", opt->eos_token, "Override eos_token");
    CLI::Option* bos = cmd->get_option("--bos-token");
    CLI::Option* eos = cmd->get_option("--eos-token");
    return [opt, bos, eos]() {
        std::vector<server::ChatMessage> messages;
        std::string error;
        if (!parse_messages(opt->messages, &messages, &error)) return fail(error);
        std::optional<server::ChatTemplate> ct;
        if (!opt->template_file.empty()) {
            std::string source;
            if (!read_text(opt->template_file, &source, &error))
                return fail("--template: " + error);
            auto parsed = server::ChatTemplate::parse(source);
            if (!parsed) return fail(opt->template_file + ": " + parsed.status().message());
            ct = std::move(parsed).value();
        } else {
            const std::string dir = opt->model.empty() ? default_model_dir() : opt->model;
            auto loaded = server::ChatTemplate::load(dir);
            if (!loaded) return fail(loaded.status().message());
            ct = std::move(loaded).value();
        }
        if (bos->count()) ct->set_bos_token(opt->bos_token);
        if (eos->count()) ct->set_eos_token(opt->eos_token);
        auto prompt = ct->render(messages, !opt->no_generation_prompt);
        if (!prompt) return fail(prompt.status().message());
        std::fwrite(prompt->data(), 1, prompt->size(), stdout);
        return 0;
    };
}

}  // namespace duality::cli
