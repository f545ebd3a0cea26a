// Checks of an HTTP request's head (method, path, framing headers) made before cpp-httplib routes
// the request or reads its body, so that a request the server will refuse is answered at once:
// cpp-httplib 0.11 reads a POST without Content-Length until the client closes, skips a too
// large Content-Length body byte by byte before its 413, takes a malformed Content-Length as 0
// and never reads the body of a GET (whose bytes it then parses as the next request).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace duality::server {

// A path the server serves and the methods it answers there ("POST", or "GET, HEAD").
struct Endpoint {
    const char* path;
    const char* methods;
};

// What check_request_head needs of a request: its method and path, and every value of its
// Content-Length and Transfer-Encoding headers (a header may be repeated).
struct RequestHead {
    std::string method, path;
    std::vector<std::string> content_length;
    std::vector<std::string> transfer_encoding;
};

// A request refused from its head.
struct HeadRefusal {
    int status = 400;
    std::string message;
    std::string allow;  // for 405: the Allow header
    // The body (if any) is left unread, so the connection cannot carry another request.
    bool close = true;
};

// In order: a Transfer-Encoding other than chunked is 501; Transfer-Encoding with Content-Length,
// or a Content-Length that is not one decimal number, is 400; a Content-Length over
// `max_body_bytes` is 413; a GET or HEAD with a body is 400; a known path with a method it does
// not answer is 405 (with Allow); a POST, PUT or PATCH with neither Content-Length nor chunked
// Transfer-Encoding is 411. nullopt: route the request.
std::optional<HeadRefusal> check_request_head(const RequestHead& head,
                                              std::span<const Endpoint> endpoints,
                                              int64_t max_body_bytes);

}  // namespace duality::server
