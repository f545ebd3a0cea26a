#include "loader/json.h"

#include <cmath>
#include <limits>
#include <unordered_set>
#include <vector>

#include "core/read_file.h"

namespace duality {
namespace {

// Rewrites bare NaN / Infinity / -Infinity tokens (outside strings) as {"__float__": "..."}.
std::string rewrite_python_literals(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            out += c;
            if (c == '\\' && i + 1 < text.size()) {
                out += text[++i];
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') {
            in_string = true;
            out += c;
            continue;
        }
        auto starts = [&](std::string_view word) {
            return text.compare(i, word.size(), word) == 0;
        };
        if (starts("-Infinity")) {
            out += R"({"__float__":"-Infinity"})";
            i += 8;
        } else if (starts("Infinity")) {
            out += R"({"__float__":"Infinity"})";
            i += 7;
        } else if (starts("NaN")) {
            out += R"({"__float__":"NaN"})";
            i += 2;
        } else {
            out += c;
        }
    }
    return out;
}

}  // namespace

Result<nlohmann::json> parse_json(const std::string& text, const std::string& source) {
    const std::string rewritten = rewrite_python_literals(text);
    // Track keys per open object so duplicates are caught (nlohmann keeps the last silently).
    std::vector<std::unordered_set<std::string>> open_objects;
    std::string duplicate;
    auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event,
                        nlohmann::json& parsed) {
        using E = nlohmann::json::parse_event_t;
        if (event == E::object_start) {
            open_objects.emplace_back();
        } else if (event == E::object_end) {
            if (!open_objects.empty()) open_objects.pop_back();
        } else if (event == E::key && !open_objects.empty()) {
            const std::string& key = parsed.get_ref<const std::string&>();
            if (!open_objects.back().insert(key).second && duplicate.empty()) duplicate = key;
        }
        return true;
    };
    try {
        nlohmann::json j = nlohmann::json::parse(rewritten, callback);
        if (!duplicate.empty()) return corrupt(source + ": duplicate key \"" + duplicate + "\"");
        return j;
    } catch (const nlohmann::json::exception& e) {
        return corrupt(source + ": invalid JSON: " + e.what());
    }
}

Result<nlohmann::json> read_json_file(const std::string& path) {
    DUALITY_ASSIGN_OR_RETURN(const std::string text, read_file(path));
    return parse_json(text, path);
}

std::optional<double> json_number(const nlohmann::json& v) {
    if (v.is_number()) return v.get<double>();
    if (v.is_object() && v.size() == 1 && v.contains("__float__") && v["__float__"].is_string()) {
        const auto& s = v["__float__"].get_ref<const std::string&>();
        if (s == "Infinity" || s == "inf") return std::numeric_limits<double>::infinity();
        if (s == "-Infinity" || s == "-inf") return -std::numeric_limits<double>::infinity();
        if (s == "NaN" || s == "nan") return std::numeric_limits<double>::quiet_NaN();
    }
    return std::nullopt;
}

std::string json_brief(const nlohmann::json& v) {
    constexpr size_t kMaxChars = 64;
    // "3 elements", "1 element"
    const auto count = [](size_t n, const std::string& what) {
        return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
    };
    switch (v.type()) {
        case nlohmann::json::value_t::array:
            return "an array of " + count(v.size(), "element");
        case nlohmann::json::value_t::object:
            return "an object of " + count(v.size(), "member");
        case nlohmann::json::value_t::string: {
            const auto& s = v.get_ref<const std::string&>();
            if (s.size() <= kMaxChars) return v.dump();
            // Cut at a UTF-8 character boundary, so the dump stays valid.
            size_t cut = kMaxChars;
            while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
            return nlohmann::json(s.substr(0, cut)).dump() + "... (" + std::to_string(s.size()) +
                   " bytes)";
        }
        default:
            return v.dump();
    }
}

}  // namespace duality
