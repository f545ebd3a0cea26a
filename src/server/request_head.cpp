#include "server/request_head.h"

#include <algorithm>
#include <cctype>

namespace duality::server {
namespace {

std::string lower_trimmed(const std::string& s) {
    const size_t b = s.find_first_not_of(" \t");
    if (b == std::string::npos) return std::string();
    const size_t e = s.find_last_not_of(" \t");
    std::string out = s.substr(b, e - b + 1);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

// A Content-Length value: digits only. Values past INT64_MAX saturate (they are too large
// anyway); nullopt when malformed.
std::optional<int64_t> parse_length(const std::string& text) {
    if (text.empty()) return std::nullopt;
    int64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v > (INT64_MAX - 9) / 10 ? INT64_MAX : v * 10 + (c - '0');
    }
    return v;
}

std::string shown(const std::string& value) {
    return value.size() > 40 ? "\"" + value.substr(0, 40) + "...\"" : "\"" + value + "\"";
}

bool method_listed(const std::string& method, const std::string& methods) {
    size_t pos = 0;
    while (pos <= methods.size()) {
        const size_t comma = std::min(methods.find(',', pos), methods.size());
        std::string item = methods.substr(pos, comma - pos);
        item.erase(0, item.find_first_not_of(' '));
        if (item == method) return true;
        pos = comma + 1;
    }
    return false;
}

HeadRefusal refuse(int status, std::string message, bool close = true) {
    HeadRefusal r;
    r.status = status;
    r.message = std::move(message);
    r.close = close;
    return r;
}

}  // namespace

std::optional<HeadRefusal> check_request_head(const RequestHead& head,
                                              std::span<const Endpoint> endpoints,
                                              int64_t max_body_bytes) {
    const std::string where = head.method + " " + head.path;
    bool chunked = false;
    for (const std::string& te : head.transfer_encoding) {
        if (lower_trimmed(te) != "chunked")
            return refuse(501, where + ": Transfer-Encoding " + shown(te) +
                                   " is not supported (only chunked)");
        chunked = true;
    }
    int64_t length = 0;
    if (!head.content_length.empty()) {
        if (chunked) return refuse(400, where + ": Content-Length and Transfer-Encoding together");
        for (const std::string& value : head.content_length) {
            const auto v = parse_length(value);
            if (!v)
                return refuse(
                    400, where + ": Content-Length " + shown(value) + " is not a number of bytes");
            if (value != head.content_length.front())
                return refuse(400, where + ": conflicting Content-Length headers");
            length = *v;
        }
        if (length > max_body_bytes)
            return refuse(413, where + ": the request body (Content-Length " +
                                   shown(head.content_length.front()) +
                                   ") is larger than the server's limit (" +
                                   std::to_string(max_body_bytes / 1024) + " KB, --max-body)");
    }
    const bool has_body = chunked || length > 0;
    if (has_body && (head.method == "GET" || head.method == "HEAD"))
        return refuse(400, where + ": a " + head.method + " request may not have a body");
    for (const Endpoint& e : endpoints) {
        if (head.path != e.path || method_listed(head.method, e.methods)) continue;
        HeadRefusal r = refuse(
            405, head.method + " is not allowed on " + head.path + "; use " + e.methods, has_body);
        r.allow = e.methods;
        return r;
    }
    if (!chunked && head.content_length.empty() &&
        (head.method == "POST" || head.method == "PUT" || head.method == "PATCH"))
        return refuse(411, where +
                               ": a Content-Length header (or chunked Transfer-Encoding) "
                               "is required");
    return std::nullopt;
}

}  // namespace duality::server
