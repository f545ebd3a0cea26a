// The tables behind duality::Tokenizer, shared by its loader (tokenizer.cpp), the encoder and
// decoder (encode.cpp) and StreamDecoder (streamer.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "duality/tokenizer.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenizer.h"

namespace duality {

struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct Tokenizer::Impl {
    std::string source;

    // ---- the model: BPE over the byte-level alphabet
    StringMap vocab;  // model.vocab, spelled in the byte-level alphabet
    Bpe bpe;
    std::array<int32_t, 256> byte_id{};  // the id of each single byte's token, or -1
    std::optional<int32_t> unk_id;       // model.unk_token, used for a byte without a token
    bool fuse_unk = false;
    bool ignore_merges = false;  // a word that is a vocabulary entry is taken whole

    // ---- the pipeline around it
    bool nfc = false;               // normalizer: NFC
    bool add_prefix_space = false;  // pre_tokenizer.add_prefix_space
    bool use_regex = true;          // pre_tokenizer.use_regex
    std::unique_ptr<PreTokenizer> pretokenizer;
    std::vector<AddedToken> added;
    StringMap added_by_content;
    AddedTokenMatcher raw_matcher;         // added tokens with normalized = false
    AddedTokenMatcher normalized_matcher;  // added tokens with normalized = true (NFC'd)

    // ---- ids -> text
    int32_t vocab_size = 0;
    std::vector<std::string> spelling;   // id -> vocabulary spelling / added content
    std::vector<uint32_t> bytes_offset;  // id -> its decoded bytes in bytes_arena
    std::string bytes_arena;
    std::vector<uint8_t> flags;  // id -> kAssigned | kSpecial
    static constexpr uint8_t kAssigned = 1, kSpecial = 2;
    std::optional<int32_t> eos;

    mutable WordCache cache;

    bool assigned(int32_t id) const {
        return id >= 0 && id < vocab_size && (flags[id] & kAssigned);
    }
    std::string_view bytes_of(int32_t id) const {
        if (!assigned(id)) return {};
        return std::string_view(bytes_arena)
            .substr(bytes_offset[id], bytes_offset[id + 1] - bytes_offset[id]);
    }

    void encode(std::string_view text, const EncodeOptions& options,
                std::vector<int32_t>* out) const;
};

}  // namespace duality
