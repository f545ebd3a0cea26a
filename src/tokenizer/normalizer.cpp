// NFC normalization with utf8proc, skipping text that NFC cannot change (see normalizer.h).
#include "tokenizer/normalizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iterator>

#include "tokenizer/utf8.h"

namespace duality {
namespace {

// Characters added after Unicode 9.0 that utf8proc's NFC would reorder, decompose or compose.
// Hugging Face's NFC has Unicode 9.0 tables, to which they are inert unassigned code points.
struct CodePointRange {
    uint32_t first, last;
};
constexpr CodePointRange kNewerThanUnicode9[] = {
#include "tokenizer/nfc_unicode9_table.inc"
};

bool newer_than_unicode9(uint32_t cp) {
    const auto* it =
        std::upper_bound(std::begin(kNewerThanUnicode9), std::end(kNewerThanUnicode9), cp,
                         [](uint32_t v, const CodePointRange& r) { return v < r.first; });
    return it != std::begin(kNewerThanUnicode9) && cp <= std::prev(it)->last;
}

// Lead bytes below 0xCC start characters below U+0300; 0x80..0xBF are continuation bytes.
constexpr unsigned char kFirstNontrivialLead = 0xCC;

void utf8proc_nfc(std::string_view piece, std::string* out) {
    utf8proc_uint8_t* mapped = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(piece.data()),
                     static_cast<utf8proc_ssize_t>(piece.size()), &mapped,
                     static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (n < 0) {
        out->append(piece);  // not reached for valid UTF-8; keep the text rather than lose it
    } else {
        out->append(reinterpret_cast<const char*>(mapped), static_cast<size_t>(n));
    }
    std::free(mapped);
}

// NFC as Hugging Face computes it: characters newer than Unicode 9.0 are starters that never
// combine, so the text is cut at them and the pieces between are normalized separately.
void nfc_piece(std::string_view piece, std::string* out) {
    const auto* p = reinterpret_cast<const unsigned char*>(piece.data());
    size_t done = 0, i = 0;
    while (i < piece.size()) {
        const utf8::Step st = utf8::next(p + i, piece.size() - i);
        if (st.kind == utf8::Kind::kValid && newer_than_unicode9(st.cp)) {
            if (i > done) utf8proc_nfc(piece.substr(done, i - done), out);
            out->append(piece.substr(i, st.len));
            done = i + st.len;
        }
        i += st.len;
    }
    if (done < piece.size()) utf8proc_nfc(piece.substr(done), out);
}

}  // namespace

bool nfc_is_trivially_stable(std::string_view text) {
    for (const char c : text) {
        if (static_cast<unsigned char>(c) >= kFirstNontrivialLead) return false;
    }
    return true;
}

void nfc_append(std::string_view text, std::string* out) {
    const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
    const size_t n = text.size();
    size_t copied = 0;  // text[0, copied) is already in `out`; text[copied] is ASCII (or 0)
    size_t i = 0;
    while (i < n) {
        if (byte(i) < kFirstNontrivialLead) {
            ++i;
            continue;
        }
        // The piece runs from the last ASCII character before i (it may be the base that a
        // combining mark composes with) to the next ASCII character after i.
        size_t begin = i;
        while (begin > copied && byte(begin - 1) >= 0x80) --begin;
        if (begin > copied) --begin;
        size_t end = i;
        while (end < n && byte(end) >= 0x80) ++end;
        out->append(text.substr(copied, begin - copied));
        nfc_piece(text.substr(begin, end - begin), out);
        copied = end;
        i = end;
    }
    out->append(text.substr(copied));
}

}  // namespace duality
