// Unicode NFC for the tokenizer's "normalizer": {"type": "NFC"}, via utf8proc.
#pragma once

#include <string>
#include <string_view>

namespace duality {

// True when NFC certainly leaves `text` unchanged: every character is below U+0300, where no
// character decomposes differently or combines with a neighbour (ASCII, Latin-1, Latin
// Extended-A/B, IPA).
bool nfc_is_trivially_stable(std::string_view text);

// Appends the NFC form of `text` (valid UTF-8) to `out`. Only the stretches around characters
// at or above U+0300 go through utf8proc: NFC never reaches across an ASCII character, so text
// can be cut before any ASCII byte and normalized piece by piece. Matches Hugging Face's NFC,
// whose tables are Unicode 9.0: characters added later and known to utf8proc are left as they
// are (see scripts/gen_nfc_unicode9_table.py).
void nfc_append(std::string_view text, std::string* out);

}  // namespace duality
