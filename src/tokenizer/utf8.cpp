// UTF-8 validation and lossy repair (see utf8.h).
#include "tokenizer/utf8.h"

#include <cstring>

namespace duality::utf8 {

Step next(const unsigned char* s, size_t n) {
    const unsigned char b0 = s[0];
    if (b0 < 0x80) return {Kind::kValid, 1, b0};
    uint32_t need = 0;
    uint32_t cp = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1;
        cp = b0 & 0x1Fu;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 2;
        cp = b0 & 0x0Fu;
        if (b0 == 0xE0) lo = 0xA0;  // overlong
        if (b0 == 0xED) hi = 0x9F;  // surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 3;
        cp = b0 & 0x07u;
        if (b0 == 0xF0) lo = 0x90;  // overlong
        if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
        return {Kind::kInvalid, 1, 0};  // a continuation byte, C0, C1 or F5..FF
    }
    for (uint32_t i = 1; i <= need; ++i) {
        if (i >= n) return {Kind::kTruncated, static_cast<uint32_t>(n), 0};
        const unsigned char b = s[i];
        const unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) return {Kind::kInvalid, i, 0};
        cp = (cp << 6) | (b & 0x3Fu);
    }
    return {Kind::kValid, need + 1, cp};
}

size_t valid_prefix(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        // ASCII fast path, eight bytes at a time.
        while (i + 8 <= n) {
            uint64_t w;
            std::memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (p[i] < 0x80) {
            ++i;
            continue;
        }
        const Step st = next(p + i, n - i);
        if (st.kind != Kind::kValid) return i;
        i += st.len;
    }
    return n;
}

uint32_t last_codepoint(std::string_view s) {
    size_t i = s.size() - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    return next(p + i, s.size() - i).cp;
}

void append_codepoint(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
        out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

size_t append_lossy(std::string_view bytes, bool final, std::string* out) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    const size_t n = bytes.size();
    size_t i = 0;
    while (i < n) {
        const size_t good = valid_prefix(bytes.substr(i));
        out->append(bytes.data() + i, good);
        i += good;
        if (i >= n) break;
        const Step st = next(p + i, n - i);
        if (st.kind == Kind::kTruncated && !final) return i;
        out->append("\xEF\xBF\xBD");  // U+FFFD
        i += st.len;
    }
    return n;
}

}  // namespace duality::utf8
