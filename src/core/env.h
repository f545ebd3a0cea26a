// The DUALITY_* environment switches (measurement and opt-in paths): reading one. Callers that
// sit on a hot path keep the answer in a function-local static.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <string_view>

namespace duality {

// Whether `name` is set to exactly `value`.
inline bool env_is(const char* name, std::string_view value) {
    const char* v = std::getenv(name);
    return v != nullptr && value == v;
}

// `name` as a whole decimal number, or `fallback` where it is unset or not one.
inline long long env_int(const char* name, long long fallback) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return fallback;
    char* end = nullptr;
    errno = 0;
    const long long n = std::strtoll(v, &end, 10);
    return errno == 0 && *end == '\0' ? n : fallback;
}

}  // namespace duality
