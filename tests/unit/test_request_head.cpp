// server/request_head.h: requests refused from their heads, before routing or reading a body.
#include "server/request_head.h"

#include <gtest/gtest.h>

namespace duality::server {
namespace {

constexpr Endpoint kEndpoints[] = {{"/v1/completions", "POST"}, {"/health", "GET, HEAD"}};
constexpr int64_t kLimit = 16 * 1024;

RequestHead head(std::string method, std::string path, std::vector<std::string> length = {},
                 std::vector<std::string> te = {}) {
    RequestHead h;
    h.method = std::move(method);
    h.path = std::move(path);
    h.content_length = std::move(length);
    h.transfer_encoding = std::move(te);
    return h;
}

std::optional<HeadRefusal> check(const RequestHead& h) {
    return check_request_head(h, kEndpoints, kLimit);
}

TEST(RequestHead, WellFormedRequestsAreRouted) {
    EXPECT_FALSE(check(head("POST", "/v1/completions", {"2"})));
    EXPECT_FALSE(check(head("POST", "/v1/completions", {"16384"})));  // exactly the limit
    EXPECT_FALSE(check(head("POST", "/v1/completions", {}, {"chunked"})));
    EXPECT_FALSE(check(head("POST", "/v1/completions", {}, {" Chunked "})));
    EXPECT_FALSE(check(head("POST", "/v1/completions", {"2", "2"})));  // repeated, equal
    EXPECT_FALSE(check(head("GET", "/health")));
    EXPECT_FALSE(check(head("HEAD", "/health")));
    EXPECT_FALSE(check(head("GET", "/health", {"0"})));
    EXPECT_FALSE(check(head("GET", "/unknown")));          // httplib's 404
    EXPECT_FALSE(check(head("POST", "/unknown", {"5"})));  // read, then 404
    EXPECT_FALSE(check(head("DELETE", "/unknown")));
}

TEST(RequestHead, PostWithoutALengthIs411) {
    for (const char* method : {"POST", "PUT", "PATCH"}) {
        auto r = check(head(method, "/unknown"));
        ASSERT_TRUE(r) << method;
        EXPECT_EQ(r->status, 411);
        EXPECT_TRUE(r->close);
        EXPECT_NE(r->message.find("Content-Length"), std::string::npos) << r->message;
    }
    auto r = check(head("POST", "/v1/completions"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 411);
}

TEST(RequestHead, MalformedContentLengthIs400) {
    for (const char* value : {"", "-5", "+5", "5x", "0x10", "1 2", "1,2", "1.5", " "}) {
        auto r = check(head("POST", "/v1/completions", {value}));
        ASSERT_TRUE(r) << '"' << value << '"';
        EXPECT_EQ(r->status, 400) << value;
        EXPECT_TRUE(r->close);
        EXPECT_NE(r->message.find("Content-Length"), std::string::npos) << r->message;
    }
    auto conflicting = check(head("POST", "/v1/completions", {"2", "3"}));
    ASSERT_TRUE(conflicting);
    EXPECT_EQ(conflicting->status, 400);
    auto both = check(head("POST", "/v1/completions", {"2"}, {"chunked"}));
    ASSERT_TRUE(both);
    EXPECT_EQ(both->status, 400);
}

TEST(RequestHead, ContentLengthOverTheLimitIs413FromTheHeaderAlone) {
    for (const char* value : {"16385", "1000000000", "99999999999999999999999999"}) {
        auto r = check(head("POST", "/v1/completions", {value}));
        ASSERT_TRUE(r) << value;
        EXPECT_EQ(r->status, 413) << value;
        EXPECT_TRUE(r->close);
        EXPECT_NE(r->message.find("--max-body"), std::string::npos) << r->message;
        EXPECT_NE(r->message.find(value), std::string::npos) << r->message;
    }
    // On any path: the body is never read.
    auto r = check(head("POST", "/unknown", {"20000"}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
}

TEST(RequestHead, WrongMethodOnAKnownPathIs405WithAllow) {
    struct Case {
        const char* method;
        const char* path;
        const char* allow;
        bool has_body;
    };
    for (const Case& c : {Case{"GET", "/v1/completions", "POST", false},
                          Case{"HEAD", "/v1/completions", "POST", false},
                          Case{"PUT", "/v1/completions", "POST", true},
                          Case{"OPTIONS", "/v1/completions", "POST", false},
                          Case{"TRACE", "/health", "GET, HEAD", false},
                          Case{"DELETE", "/health", "GET, HEAD", false},
                          Case{"POST", "/health", "GET, HEAD", true}}) {
        auto r =
            check(head(c.method, c.path,
                       c.has_body ? std::vector<std::string>{"2"} : std::vector<std::string>{}));
        ASSERT_TRUE(r) << c.method << " " << c.path;
        EXPECT_EQ(r->status, 405) << c.method << " " << c.path;
        EXPECT_EQ(r->allow, c.allow);
        EXPECT_EQ(r->close, c.has_body) << c.method << " " << c.path;
        EXPECT_NE(r->message.find(c.method), std::string::npos) << r->message;
    }
}

TEST(RequestHead, GetWithABodyIs400) {
    for (const auto& h : {head("GET", "/health", {"5"}), head("GET", "/nope", {}, {"chunked"}),
                          head("HEAD", "/health", {"1"}), head("GET", "/v1/completions", {"5"})}) {
        auto r = check(h);
        ASSERT_TRUE(r) << h.method << " " << h.path;
        EXPECT_EQ(r->status, 400);
        EXPECT_TRUE(r->close);
        EXPECT_NE(r->message.find("may not have a body"), std::string::npos) << r->message;
    }
}

TEST(RequestHead, TransferEncodingOtherThanChunkedIs501) {
    for (const auto& te : std::vector<std::vector<std::string>>{
             {"gzip"}, {"gzip, chunked"}, {"identity"}, {"chunked", "gzip"}, {""}}) {
        auto r = check(head("POST", "/v1/completions", {}, te));
        ASSERT_TRUE(r) << te[0];
        EXPECT_EQ(r->status, 501) << te[0];
        EXPECT_TRUE(r->close);
        EXPECT_NE(r->message.find("Transfer-Encoding"), std::string::npos) << r->message;
    }
}

}  // namespace
}  // namespace duality::server
