// The byte <-> character table of GPT-2's byte-level alphabet (see byte_level.h).
#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace duality::byte_level {
namespace {

bool stands_for_itself(int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Tables {
    std::array<uint32_t, 256> cp_of_byte{};
    std::array<int16_t, 512> byte_of_cp{};  // every code point of the alphabet is below 0x200
    std::array<std::string, 256> spelling;

    Tables() {
        byte_of_cp.fill(-1);
        uint32_t shifted = 0;
        for (int b = 0; b < 256; ++b) {
            const uint32_t cp = stands_for_itself(b) ? static_cast<uint32_t>(b) : 256 + shifted++;
            cp_of_byte[b] = cp;
            byte_of_cp[cp] = static_cast<int16_t>(b);
            utf8::append_codepoint(cp, &spelling[b]);
        }
    }
};

const Tables& tables() {
    static const Tables t;
    return t;
}

}  // namespace

std::string_view spell_byte(uint8_t b) {
    return tables().spelling[b];
}

int byte_of(uint32_t cp) {
    return cp < 512 ? tables().byte_of_cp[cp] : -1;
}

std::string spell(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char c : bytes) out += spell_byte(static_cast<uint8_t>(c));
    return out;
}

bool unspell(std::string_view text, std::string* out) {
    const size_t start = out->size();
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    size_t i = 0;
    while (i < text.size()) {
        const utf8::Step st = utf8::next(p + i, text.size() - i);
        const int b = st.kind == utf8::Kind::kValid ? byte_of(st.cp) : -1;
        if (b < 0) {
            out->resize(start);
            return false;
        }
        out->push_back(static_cast<char>(b));
        i += st.len;
    }
    return true;
}

}  // namespace duality::byte_level
