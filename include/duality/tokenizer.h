// The Hugging Face `tokenizer.json` byte-level BPE tokenizer (GPT-2 / GPT-NeoX family), giving the
// same ids as `tokenizers.Tokenizer.from_file(path).encode(text).ids` for valid UTF-8 text.
//
// Supported tokenizer.json: model BPE (vocab + merges, optional unk_token / fuse_unk /
// ignore_merges), normalizer null or NFC, pre_tokenizer ByteLevel, decoder ByteLevel,
// post_processor null or ByteLevel, added_tokens with their single_word / lstrip / rstrip /
// normalized / special flags. Anything else is refused at load time with kUnsupported, so that a
// file is never silently tokenized differently from Hugging Face. `truncation` and `padding`
// are ignored (they only matter to batched training-time encoding).
//
// Tokenizer is cheap to copy (the tables are shared and immutable) and safe to use from several
// threads at once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "duality/status.h"

namespace duality {

// One entry of tokenizer.json's "added_tokens": text matched before normalization (normalized =
// false) or after it (normalized = true), ahead of the pre-tokenizer and the BPE model.
struct AddedToken {
    int32_t id = 0;
    std::string content;
    bool special = false;      // a control token (<|endoftext|>); see EncodeOptions / decode
    bool single_word = false;  // only matches when no word character touches either side
    bool lstrip = false;       // also swallows the whitespace on its left
    bool rstrip = false;       // also swallows the whitespace on its right
    bool normalized = true;    // matched in the normalized (NFC) text rather than the raw text
};

struct EncodeOptions {
    // Recognize special added tokens (<|endoftext|> -> 0) in the text. Off for untrusted text
    // that must not inject control tokens; it is then tokenized as ordinary text (Hugging Face's
    // `encode_special_tokens = True`). Non-special added tokens are always recognized.
    bool parse_special = true;
};

class Tokenizer {
  public:
    // Loads `path`: a tokenizer.json file, or a model folder that contains one. Errors name the
    // file and the field at fault.
    static Result<Tokenizer> load(const std::filesystem::path& path);
    // Parses tokenizer.json text; `source` names it in errors.
    static Result<Tokenizer> from_json(std::string_view json_text, const std::string& source);

    // Text -> ids. Never fails. Invalid UTF-8 is not an error: each byte that is not part of a
    // well-formed UTF-8 character becomes its own byte-level token (the token whose byte-level
    // spelling is that byte), and the valid text around it is encoded as if the bad byte were a
    // separator. A byte the vocabulary has no token for becomes unk_token, or when there is none
    // the tokens of U+FFFD (GPT-NeoX has no tokens for C0, C1 and F5..FF, bytes that never occur
    // in UTF-8). So decode(encode(x)) == x for every byte string x without those bytes whose
    // valid stretches are in NFC, and valid text is encoded exactly as Hugging Face does (it
    // cannot take invalid UTF-8 at all).
    std::vector<int32_t> encode(std::string_view text) const;
    std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const;

    // Ids -> the exact bytes they stand for, concatenated (byte-level decoding; added tokens give
    // their content). Ids outside [0, vocab_size()) or unassigned are skipped, as Hugging Face
    // does. The result is not repaired: ids that split a UTF-8 character (or were encoded from
    // invalid input) give invalid UTF-8; use StreamDecoder when the output must be valid text.
    // Special tokens are kept unless `skip_special_tokens` (Hugging Face's Python default).
    std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

    // The bytes a single id decodes to (empty for unknown ids).
    std::string_view token_bytes(int32_t id) const;

    // Number of ids, added tokens included: 1 + the largest id in the file.
    int32_t vocab_size() const;
    // Whether every id of this tokenizer is a row of a model with `model_vocab` rows (its padded
    // vocabulary, ModelConfig::vocab_padded). kInvalidArgument naming the file and both sizes
    // otherwise: the tokenizer belongs to another model, whose ids would index past the
    // embedding.
    Status check_fits_model(int64_t model_vocab) const;
    // The id of a vocabulary entry spelled in the file's alphabet ("ĠHello"), or of an added
    // token's content; added tokens are looked up first.
    std::optional<int32_t> token_to_id(std::string_view token) const;
    // The inverse of token_to_id: the vocabulary spelling ("ĠHello") or the added token's
    // content; empty for ids outside the vocabulary.
    std::string id_to_token(int32_t id) const;
    bool is_special(int32_t id) const;

    // The end-of-text token when the file has a special added token with a well-known name
    // (<|endoftext|>, </s>, <eos>, <|end_of_text|>); the model's config.json is authoritative.
    std::optional<int32_t> eos_id() const;

    const std::vector<AddedToken>& added_tokens() const;
    // The file this tokenizer was loaded from (or the `source` given to from_json).
    const std::string& source() const;

    struct Impl;

  private:
    explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<const Impl> impl_;
};

// Turns ids generated one at a time into text without ever emitting part of a UTF-8 character:
// push() returns the text completed by this id (often empty while a multi-byte character is
// still being spelled out byte by byte), flush() whatever is left at the end. The output is
// always valid UTF-8: byte sequences that can never become a valid character are replaced by
// U+FFFD (one per maximal invalid subpart, like Python's errors="replace"), and so is an
// unfinished character at flush(). For ids that decode to valid UTF-8, the concatenated output
// equals Tokenizer::decode(ids).
class StreamDecoder {
  public:
    explicit StreamDecoder(Tokenizer tokenizer, bool skip_special_tokens = false);

    std::string push(int32_t id);
    std::string flush();
    // Bytes held back because they may be the start of a character.
    size_t pending_bytes() const { return pending_.size(); }

  private:
    Tokenizer tokenizer_;
    bool skip_special_;
    std::string pending_;
};

}  // namespace duality
