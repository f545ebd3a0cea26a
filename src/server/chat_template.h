// Chat templates (temporary stand-in: the plain format only; the Jinja subset replaces it).
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "duality/status.h"

namespace duality::server {

struct ChatMessage {
    std::string role;
    std::string content;
};

class ChatTemplate {
public:
    static Result<ChatTemplate> load(const std::filesystem::path& model_dir);
    static ChatTemplate plain();
    Result<std::string> render(std::span<const ChatMessage> messages,
                               bool add_generation_prompt) const;
    bool is_plain() const { return true; }
};

}  // namespace duality::server
