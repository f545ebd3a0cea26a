// Chat templates: turn a list of chat messages into the prompt text a model was trained on.
//
// A model folder's template comes from Hugging Face files: chat_template.jinja when present,
// else tokenizer_config.json's "chat_template" (a string, or a list of {name, template} of
// which the one named "default" is used), with its "bos_token"/"eos_token" (strings or
// {"content": ...} objects). Templates are rendered by the Jinja subset in jinja.h with the
// settings transformers uses (trim_blocks and lstrip_blocks on), and the variables messages
// (each {role, content}), bos_token, eos_token and add_generation_prompt (and tools and documents,
// None, as transformers passes them without tools).
//
// A model without a template gets the plain format: every message as "Role: content\n\n" (the
// role with its first letter upper-cased) and, for the generation prompt, "Assistant:".
//
// Limits: those of jinja.h (output capped at 1 MiB unless the caller sets Limits::max_output_bytes,
// loop/work/nesting caps); message content is text only (no multimodal parts, no tool calls); any
// other variable is undefined.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "duality/status.h"
#include "server/jinja.h"

namespace duality::server {

struct ChatMessage {
    std::string role;
    std::string content;
};

class ChatTemplate {
  public:
    // Parses a Jinja chat template (trim_blocks and lstrip_blocks on, as transformers does).
    // Errors name the line, column and construct.
    static Result<ChatTemplate> parse(std::string_view source, const jinja::Limits& limits = {});

    // The template of a model folder (see above); the plain format when it has none. Errors name
    // the file and field.
    static Result<ChatTemplate> load(const std::filesystem::path& model_dir,
                                     const jinja::Limits& limits = {});

    // The default format for models without a template.
    static ChatTemplate plain();

    // The prompt for `messages`; with add_generation_prompt, followed by the text that opens the
    // assistant's reply. A template's raise_exception('msg') fails with exactly "msg"
    // (kInvalidArgument), other template errors with "line N: ..." (kInvalidArgument) and the
    // caps with kResourceExhausted. Const and thread-safe: one template serves concurrent calls.
    Result<std::string> render(std::span<const ChatMessage> messages,
                               bool add_generation_prompt) const;

    bool is_plain() const { return plain_; }
    // The cap on a Jinja template's rendered text (jinja::Limits::max_output_bytes).
    size_t max_output_bytes() const { return max_output_bytes_; }

    const std::string& bos_token() const { return bos_token_; }
    const std::string& eos_token() const { return eos_token_; }
    void set_bos_token(std::string token) { bos_token_ = std::move(token); }
    void set_eos_token(std::string token) { eos_token_ = std::move(token); }

  private:
    bool plain_ = true;
    size_t max_output_bytes_ = jinja::Limits{}.max_output_bytes;
    jinja::Template template_;
    std::string bos_token_, eos_token_;
};

}  // namespace duality::server
