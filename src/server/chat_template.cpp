// Chat templates on top of the Jinja subset: loading from a model folder (chat_template.jinja,
// tokenizer_config.json), the plain default format, and rendering with transformers' variables.
// Limits: see chat_template.h and jinja.h.
#include "server/chat_template.h"

#include <system_error>

#include <nlohmann/json.hpp>

#include "core/read_file.h"

namespace duality::server {
namespace {

jinja::Options hf_options() {
    jinja::Options o;
    o.trim_blocks = true;
    o.lstrip_blocks = true;
    return o;
}

// bos_token / eos_token: absent or null -> "", a string, or {"content": "..."}.
Result<std::string> special_token(const nlohmann::json& config, const char* key,
                                  const std::string& file) {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) return std::string();
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object()) {
        const auto content = it->find("content");
        if (content != it->end() && content->is_string()) return content->get<std::string>();
        return invalid_argument(file + ": " + key +
                                ": expected a string or an object with a string \"content\"");
    }
    return invalid_argument(file + ": " + key +
                            ": expected a string or an object with a "
                            "string \"content\", found " +
                            it->type_name());
}

// The template text of "chat_template": a string, or the entry named "default" of a list.
Result<std::string> template_source(const nlohmann::json& value, const std::string& file) {
    if (value.is_string()) return value.get<std::string>();
    if (!value.is_array())
        return invalid_argument(file +
                                ": chat_template: expected a string or a list of "
                                "{\"name\", \"template\"} objects, found " +
                                std::string(value.type_name()));
    std::string names;
    for (size_t k = 0; k < value.size(); ++k) {
        const nlohmann::json& entry = value[k];
        const std::string where = file + ": chat_template[" + std::to_string(k) + "]";
        if (!entry.is_object()) return invalid_argument(where + ": expected an object");
        const auto name = entry.find("name");
        const auto tmpl = entry.find("template");
        if (name == entry.end() || !name->is_string())
            return invalid_argument(where + ": expected a string \"name\"");
        if (tmpl == entry.end() || !tmpl->is_string())
            return invalid_argument(where + ": expected a string \"template\"");
        if (name->get<std::string>() == "default") return tmpl->get<std::string>();
        names += (names.empty() ? "" : ", ") + name->get<std::string>();
    }
    return invalid_argument(file + ": chat_template: no template named \"default\" (found: " +
                            (names.empty() ? std::string("none") : names) + ")");
}

std::string capitalized(const std::string& role) {
    std::string out = role;
    if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 32);
    return out;
}

}  // namespace

Result<ChatTemplate> ChatTemplate::parse(std::string_view source, const jinja::Limits& limits) {
    auto t = jinja::Template::parse(source, hf_options(), limits);
    if (!t) return t.status();
    ChatTemplate ct;
    ct.plain_ = false;
    ct.max_output_bytes_ = limits.max_output_bytes;
    ct.template_ = std::move(t).value();
    return ct;
}

ChatTemplate ChatTemplate::plain() {
    return ChatTemplate();
}

Result<ChatTemplate> ChatTemplate::load(const std::filesystem::path& model_dir,
                                        const jinja::Limits& limits) {
    std::error_code ec;
    if (!std::filesystem::is_directory(model_dir, ec))
        return not_found(model_dir.string() + ": not a model folder (no such directory)");
    const std::filesystem::path config_path = model_dir / "tokenizer_config.json";
    const std::filesystem::path jinja_path = model_dir / "chat_template.jinja";
    const std::string config_file = config_path.string();

    ChatTemplate ct;
    std::string source;
    bool have_source = false;
    if (std::filesystem::exists(config_path, ec)) {
        DUALITY_ASSIGN_OR_RETURN(const std::string text, read_file(config_path));
        nlohmann::json config;
        try {
            config = nlohmann::json::parse(text);
        } catch (const nlohmann::json::parse_error& e) {
            return corrupt(config_file + ": not valid JSON (" + e.what() + ")");
        }
        if (!config.is_object()) return corrupt(config_file + ": expected a JSON object");
        DUALITY_ASSIGN_OR_RETURN(ct.bos_token_, special_token(config, "bos_token", config_file));
        DUALITY_ASSIGN_OR_RETURN(ct.eos_token_, special_token(config, "eos_token", config_file));
        const auto it = config.find("chat_template");
        if (it != config.end() && !it->is_null()) {
            DUALITY_ASSIGN_OR_RETURN(source, template_source(*it, config_file));
            have_source = true;
        }
    }
    std::string source_name = config_file + ": chat_template";
    if (std::filesystem::exists(jinja_path, ec)) {  // transformers prefers the separate file
        DUALITY_ASSIGN_OR_RETURN(source, read_file(jinja_path));
        source_name = jinja_path.string();
        have_source = true;
    }
    if (!have_source) return ct;  // the plain format, keeping the special tokens
    auto t = jinja::Template::parse(source, hf_options(), limits);
    if (!t) return t.status().with_context(source_name);
    ct.plain_ = false;
    ct.max_output_bytes_ = limits.max_output_bytes;
    ct.template_ = std::move(t).value();
    return ct;
}

Result<std::string> ChatTemplate::render(std::span<const ChatMessage> messages,
                                         bool add_generation_prompt) const {
    if (plain_) {
        std::string out;
        for (const ChatMessage& m : messages)
            out += capitalized(m.role) + ": " + m.content + "\n\n";
        if (add_generation_prompt) out += "Assistant:";
        return out;
    }
    jinja::ValueList list;
    list.reserve(messages.size());
    for (const ChatMessage& m : messages) {
        list.push_back(jinja::Value::make_dict({{"role", jinja::Value::string(m.role)},
                                                {"content", jinja::Value::string(m.content)}}));
    }
    std::map<std::string, jinja::Value> globals;
    globals["messages"] = jinja::Value::make_list(std::move(list));
    globals["bos_token"] = jinja::Value::string(bos_token_);
    globals["eos_token"] = jinja::Value::string(eos_token_);
    globals["add_generation_prompt"] = jinja::Value::boolean(add_generation_prompt);
    globals["tools"] = jinja::Value::none();  // transformers passes these as None
    globals["documents"] = jinja::Value::none();
    return template_.render(globals);
}

}  // namespace duality::server
