// Streaming stop-string detection: text arrives in pieces; only text that can no longer turn into
// a stop string is released, and generation ends at the first match (which is not emitted).
#pragma once

#include <string>
#include <vector>

namespace duality {

class StopStrings {
public:
    explicit StopStrings(std::vector<std::string> stops);

    // Adds generated text; returns the text that is now safe to emit.
    std::string push(const std::string& text);
    // The held-back tail, at the end of generation (nothing once stopped).
    std::string flush();
    bool stopped() const { return stopped_; }

private:
    std::vector<std::string> stops_;
    std::string pending_;
    bool stopped_ = false;
};

}  // namespace duality
