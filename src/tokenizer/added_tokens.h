// Finds added tokens (tokenizer.json "added_tokens") in text, as Hugging Face's AddedVocabulary
// does: leftmost-longest matching over all patterns, then the single_word / lstrip / rstrip
// rules. Text between matches is left for the normalizer / pre-tokenizer / BPE.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "duality/tokenizer.h"

namespace duality {

class AddedTokenMatcher {
public:
    // A span of the text: an added token (id >= 0) or plain text (id == -1).
    struct Piece {
        size_t begin, end;
        int32_t id;
    };

    // Adds `token`, matched by `pattern` (its content, normalized when token.normalized).
    // Empty patterns are ignored.
    void add(const std::string& pattern, const AddedToken& token);
    bool empty() const { return tokens_.empty(); }

    // Appends to `out` the pieces that cover `text` in order (none for empty text). Special
    // tokens are only matched when `match_special`.
    void split(std::string_view text, bool match_special, std::vector<Piece>* out) const;

private:
    struct Node {
        std::vector<std::pair<unsigned char, int32_t>> next;  // byte -> child node
        int32_t token = -1;                                   // index into tokens_
    };
    // The end of the longest allowed pattern starting at `pos`, with its token, or token -1.
    std::pair<size_t, int32_t> longest_at(std::string_view text, size_t pos,
                                          bool match_special) const;

    std::vector<Node> nodes_ = std::vector<Node>(1);  // nodes_[0] is the root
    std::vector<AddedToken> tokens_;
    bool first_byte_[256] = {};
};

}  // namespace duality
