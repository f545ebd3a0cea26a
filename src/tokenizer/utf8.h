// UTF-8 scanning for the tokenizer: a validator that agrees with PCRE2 and utf8proc (no overlong
// forms, no surrogates, nothing above U+10FFFF) and the lossy repair used by StreamDecoder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace duality::utf8 {

enum class Kind {
    kValid,      // a complete character
    kTruncated,  // the bytes left are a proper prefix of a character (only at the end)
    kInvalid,    // bytes that can never begin a character
};

struct Step {
    Kind kind;
    uint32_t
        len;      // bytes covered: the character, the prefix, or the maximal invalid subpart (>= 1)
    uint32_t cp;  // the code point when kValid
};

// Classifies the bytes starting at s[0]; `n` >= 1 bytes are available.
Step next(const unsigned char* s, size_t n);

// Bytes in the longest prefix of `s` that is valid UTF-8.
size_t valid_prefix(std::string_view s);

inline bool is_valid(std::string_view s) {
    return valid_prefix(s) == s.size();
}

// Code point of the last character of the valid UTF-8 text `s` (non-empty).
uint32_t last_codepoint(std::string_view s);

void append_codepoint(uint32_t cp, std::string* out);

// Appends `bytes` to `out` as valid UTF-8, replacing each maximal invalid subpart by U+FFFD.
// Returns the number of bytes consumed: all of them when `final`, otherwise all but a truncated
// character at the end, which the caller keeps until more bytes arrive.
size_t append_lossy(std::string_view bytes, bool final, std::string* out);

}  // namespace duality::utf8
