// Leftmost-longest matching of added tokens with Hugging Face's whitespace / word rules.
#include "tokenizer/added_tokens.h"

#include <utf8proc.h>

#include "tokenizer/utf8.h"

namespace duality {
namespace {

// Unicode White_Space (what `\s` means in Hugging Face's Rust regexes).
bool is_white_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

// A word character (Rust regex `\w`): letters, marks, decimal digits, letter numbers,
// connector punctuation and the joiners.
bool is_word_char(uint32_t cp) {
    if (cp == 0x200C || cp == 0x200D) return true;
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
        case UTF8PROC_CATEGORY_LU:
        case UTF8PROC_CATEGORY_LL:
        case UTF8PROC_CATEGORY_LT:
        case UTF8PROC_CATEGORY_LM:
        case UTF8PROC_CATEGORY_LO:
        case UTF8PROC_CATEGORY_MN:
        case UTF8PROC_CATEGORY_MC:
        case UTF8PROC_CATEGORY_ME:
        case UTF8PROC_CATEGORY_ND:
        case UTF8PROC_CATEGORY_NL:
        case UTF8PROC_CATEGORY_PC:
            return true;
        default:
            return false;
    }
}

// Decodes the character starting at text[i]; invalid bytes read as U+FFFD, one byte long.
utf8::Step char_at(std::string_view text, size_t i) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    utf8::Step st = utf8::next(p + i, text.size() - i);
    if (st.kind != utf8::Kind::kValid) st = {utf8::Kind::kValid, 1, 0xFFFD};
    return st;
}

// The start of the character that ends at text[end - 1] (end > 0).
size_t char_start_before(std::string_view text, size_t end) {
    size_t i = end - 1;
    while (i > 0 && end - i < 4 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
    return char_at(text, i).len == end - i ? i : end - 1;
}

}  // namespace

void AddedTokenMatcher::add(const std::string& pattern, const AddedToken& token) {
    if (pattern.empty()) return;
    int32_t node = 0;
    for (const char ch : pattern) {
        const auto c = static_cast<unsigned char>(ch);
        int32_t child = -1;
        for (const auto& [byte, index] : nodes_[node].next) {
            if (byte == c) child = index;
        }
        if (child < 0) {
            child = static_cast<int32_t>(nodes_.size());
            nodes_[node].next.emplace_back(c, child);
            nodes_.emplace_back();
        }
        node = child;
    }
    first_byte_[static_cast<unsigned char>(pattern[0])] = true;
    nodes_[node].token = static_cast<int32_t>(tokens_.size());  // a later duplicate wins
    tokens_.push_back(token);
}

std::pair<size_t, int32_t> AddedTokenMatcher::longest_at(std::string_view text, size_t pos,
                                                         bool match_special) const {
    std::pair<size_t, int32_t> best{pos, -1};
    int32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        int32_t child = -1;
        for (const auto& [byte, index] : nodes_[node].next) {
            if (byte == c) {
                child = index;
                break;
            }
        }
        if (child < 0) break;
        node = child;
        const int32_t t = nodes_[node].token;
        if (t >= 0 && (match_special || !tokens_[t].special)) best = {i + 1, t};
    }
    return best;
}

void AddedTokenMatcher::split(std::string_view text, bool match_special,
                              std::vector<Piece>* out) const {
    const size_t n = text.size();
    size_t done = 0;  // text[0, done) is covered by pieces already emitted
    size_t pos = 0;
    while (pos < n) {
        if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
            ++pos;
            continue;
        }
        auto [end, t] = longest_at(text, pos, match_special);
        if (t < 0) {
            ++pos;
            continue;
        }
        const AddedToken& tok = tokens_[t];
        size_t begin = pos;
        if (tok.single_word) {
            const bool word_before =
                begin > 0 && is_word_char(char_at(text, char_start_before(text, begin)).cp);
            const bool word_after = end < n && is_word_char(char_at(text, end).cp);
            if (word_before || word_after) {
                pos = end;  // like Hugging Face, the search goes on after the rejected match
                continue;
            }
        }
        if (tok.lstrip) {
            while (begin > done) {
                const size_t prev = char_start_before(text, begin);
                if (!is_white_space(char_at(text, prev).cp)) break;
                begin = prev;
            }
        }
        if (tok.rstrip) {
            while (end < n) {
                const utf8::Step st = char_at(text, end);
                if (!is_white_space(st.cp)) break;
                end += st.len;
            }
        }
        if (begin > done) out->push_back({done, begin, -1});
        out->push_back({begin, end, tok.id});
        done = end;
        pos = end;
    }
    if (done < n) out->push_back({done, n, -1});
}

}  // namespace duality
