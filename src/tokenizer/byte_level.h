// GPT-2's byte-level alphabet: each of the 256 byte values is spelled as one printable Unicode
// character (printable ASCII and most of Latin-1 stand for themselves; the rest, e.g. the space,
// are shifted to U+0100.. so that ' ' is spelled 'Ġ'). Vocabulary entries are written in it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace duality::byte_level {

// The UTF-8 spelling of the character that stands for byte `b`.
std::string_view spell_byte(uint8_t b);

// The byte that code point `cp` stands for, or -1 when `cp` is outside the alphabet.
int byte_of(uint32_t cp);

// Spells every byte of `bytes` in the alphabet ("a b" -> "aĠb").
std::string spell(std::string_view bytes);

// The inverse of spell(): appends the bytes spelled by `text` to `out` and returns true, or
// returns false (leaving `out` as it was) when `text` is not valid UTF-8 or has a character
// outside the alphabet.
bool unspell(std::string_view text, std::string* out);

}  // namespace duality::byte_level
