// Text -> ids: added tokens, NFC, the ByteLevel pre-tokenizer and BPE, in Hugging Face's order:
//   1. added tokens with normalized = false are cut out of the raw text;
//   2. each remaining piece is normalized (NFC), then added tokens with normalized = true are
//      cut out of it;
//   3. each remaining piece is split by the pre-tokenizer regex into words;
//   4. each word's bytes are spelled in the byte-level alphabet and merged by BPE.
// Bytes that are not valid UTF-8 are cut out between steps 1 and 2 and become one byte token
// each (see Tokenizer::encode and byte_token() below).
#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace duality {
namespace {

using Impl = Tokenizer::Impl;

// Working memory of one encode() call.
struct Scratch {
    explicit Scratch(const PreTokenizer& p) : match(p) {}
    PreTokenizer::Scratch match;
    Bpe::Scratch bpe;
    std::vector<AddedTokenMatcher::Piece> raw_pieces, normalized_pieces;
    std::vector<PreTokenizer::Span> words;
    std::vector<int32_t> symbols;
    std::string normalized, prefixed;
};

class Encoder {
public:
    Encoder(const Impl& t, const EncodeOptions& o, std::vector<int32_t>* out)
        : t_(t), options_(o), out_(out), s_(*t.pretokenizer) {}

    void run(std::string_view text) {
        if (t_.raw_matcher.empty()) {
            raw(text);
            return;
        }
        t_.raw_matcher.split(text, options_.parse_special, &s_.raw_pieces);
        for (const auto& p : s_.raw_pieces) {
            if (p.id >= 0) {
                out_->push_back(p.id);
            } else {
                raw(text.substr(p.begin, p.end - p.begin));
            }
        }
    }

private:
    // Text that may hold invalid UTF-8.
    void raw(std::string_view text) {
        size_t i = 0;
        while (i < text.size()) {
            const size_t good = utf8::valid_prefix(text.substr(i));
            if (good > 0) valid(text.substr(i, good));
            i += good;
            if (i < text.size()) {
                byte_token(static_cast<uint8_t>(text[i]));
                ++i;
            }
        }
    }

    // Valid UTF-8 before normalization.
    void valid(std::string_view text) {
        if (t_.nfc && !nfc_is_trivially_stable(text)) {
            s_.normalized.clear();
            nfc_append(text, &s_.normalized);
            text = s_.normalized;
        }
        if (t_.normalized_matcher.empty()) {
            words(text);
            return;
        }
        s_.normalized_pieces.clear();
        t_.normalized_matcher.split(text, options_.parse_special, &s_.normalized_pieces);
        for (const auto& p : s_.normalized_pieces) {
            if (p.id >= 0) {
                out_->push_back(p.id);
            } else {
                words(text.substr(p.begin, p.end - p.begin));
            }
        }
    }

    // Normalized text between added tokens.
    void words(std::string_view text) {
        if (t_.add_prefix_space && text[0] != ' ') {
            s_.prefixed.assign(1, ' ');
            s_.prefixed += text;
            text = s_.prefixed;
        }
        if (!t_.use_regex) {
            word(text);
            return;
        }
        s_.words.clear();
        t_.pretokenizer->split(text, s_.match, &s_.words);
        for (const auto& w : s_.words) word(text.substr(w.begin, w.end - w.begin));
    }

    void word(std::string_view bytes) {
        if (t_.cache.lookup(bytes, out_)) return;
        std::vector<int32_t>& sym = s_.symbols;
        sym.clear();
        if (t_.ignore_merges) {
            auto it = t_.vocab.find(byte_level::spell(bytes));
            if (it != t_.vocab.end()) sym.push_back(it->second);
        }
        if (sym.empty()) {
            for (const char c : bytes) push_byte(static_cast<uint8_t>(c), &sym);
            t_.bpe.merge(&sym, s_.bpe);
        }
        out_->insert(out_->end(), sym.begin(), sym.end());
        t_.cache.insert(bytes, sym);
    }

    // A byte that is not part of valid UTF-8: its own byte-level token; without one (GPT-NeoX
    // has none for C0, C1 and F5..FF, which never occur in UTF-8), unk_token, or failing that
    // the encoding of U+FFFD REPLACEMENT CHARACTER.
    void byte_token(uint8_t b) {
        if (t_.byte_id[b] >= 0) {
            out_->push_back(t_.byte_id[b]);
        } else if (t_.unk_id) {
            out_->push_back(*t_.unk_id);
        } else {
            word("\xEF\xBF\xBD");
        }
    }

    // A byte's initial symbol; bytes without a token become unk_token (fused when fuse_unk),
    // or are dropped when there is none, as in Hugging Face.
    void push_byte(uint8_t b, std::vector<int32_t>* sym) const {
        const int32_t id = t_.byte_id[b];
        if (id >= 0) {
            sym->push_back(id);
        } else if (t_.unk_id) {
            if (!(t_.fuse_unk && !sym->empty() && sym->back() == *t_.unk_id))
                sym->push_back(*t_.unk_id);
        }
    }

    const Impl& t_;
    const EncodeOptions& options_;
    std::vector<int32_t>* out_;
    Scratch s_;
};

}  // namespace

void Tokenizer::Impl::encode(std::string_view text, const EncodeOptions& options,
                             std::vector<int32_t>* out) const {
    if (text.empty()) return;
    Encoder(*this, options, out).run(text);
}

}  // namespace duality
