// Error model for recoverable input errors (bad files, bad flags, bad requests).
//
// Broken internal invariants are not Status: they abort through DUALITY_ASSERT
// (src/core/check.h). Everything a user can get wrong returns a Status or a Result<T>
// whose message names the file, field or request at fault.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace duality {

enum class StatusCode {
    kOk = 0,
    kInvalidArgument,  // a bad flag, request or value
    kNotFound,         // a missing file or key
    kCorrupt,          // a file whose bytes do not follow its format
    kUnsupported,      // valid input that this build cannot handle
    kIo,               // the operating system refused (open, mmap, read)
    kResourceExhausted,  // out of device or host memory, or of state slots
    kInternal,
};

class [[nodiscard]] Status {
public:
    Status() = default;
    Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

    static Status ok() { return {}; }
    bool is_ok() const { return code_ == StatusCode::kOk; }
    explicit operator bool() const { return is_ok(); }
    StatusCode code() const { return code_; }
    const std::string& message() const { return message_; }

    // Prefixes the message with context, e.g. the file name: "model.safetensors: <message>".
    Status with_context(const std::string& context) const {
        if (is_ok()) return *this;
        return Status(code_, context + ": " + message_);
    }

private:
    StatusCode code_ = StatusCode::kOk;
    std::string message_;
};

inline Status invalid_argument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status not_found(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status corrupt(std::string m) { return {StatusCode::kCorrupt, std::move(m)}; }
inline Status unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
inline Status io_error(std::string m) { return {StatusCode::kIo, std::move(m)}; }
inline Status resource_exhausted(std::string m) {
    return {StatusCode::kResourceExhausted, std::move(m)};
}

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit on purpose
    Result(Status status) : v_(std::move(status)) {}  // NOLINT: implicit on purpose

    bool is_ok() const { return std::holds_alternative<T>(v_); }
    explicit operator bool() const { return is_ok(); }

    const Status& status() const {
        static const Status kOkStatus;
        return is_ok() ? kOkStatus : std::get<Status>(v_);
    }
    T& value() & { return std::get<T>(v_); }
    const T& value() const& { return std::get<T>(v_); }
    T&& value() && { return std::get<T>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

private:
    std::variant<T, Status> v_;
};

}  // namespace duality

// Returns early from a function returning Status or Result<U> when `expr` failed.
#define DUALITY_RETURN_IF_ERROR(expr)                     \
    do {                                                  \
        ::duality::Status duality_status_ = (expr);       \
        if (!duality_status_.is_ok()) return duality_status_; \
    } while (0)

#define DUALITY_CONCAT_INNER_(a, b) a##b
#define DUALITY_CONCAT_(a, b) DUALITY_CONCAT_INNER_(a, b)

// `DUALITY_ASSIGN_OR_RETURN(auto x, make_x());` binds the value or returns the Status.
#define DUALITY_ASSIGN_OR_RETURN(lhs, expr) \
    DUALITY_ASSIGN_OR_RETURN_IMPL_(DUALITY_CONCAT_(duality_result_, __LINE__), lhs, expr)
#define DUALITY_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
    auto tmp = (expr);                                 \
    if (!tmp.is_ok()) return tmp.status();             \
    lhs = std::move(tmp).value()
