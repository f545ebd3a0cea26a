// Chat templates (temporary stand-in: the plain format only).
#include "server/chat_template.h"

namespace duality::server {

Result<ChatTemplate> ChatTemplate::load(const std::filesystem::path&) { return plain(); }
ChatTemplate ChatTemplate::plain() { return ChatTemplate(); }

Result<std::string> ChatTemplate::render(std::span<const ChatMessage> messages,
                                         bool add_generation_prompt) const {
    std::string out;
    for (const ChatMessage& m : messages) {
        std::string role = m.role;
        if (!role.empty() && role[0] >= 'a' && role[0] <= 'z') role[0] = static_cast<char>(role[0] - 32);
        out += role + ": " + m.content + "\n\n";
    }
    if (add_generation_prompt) out += "Assistant:";
    return out;
}

}  // namespace duality::server
