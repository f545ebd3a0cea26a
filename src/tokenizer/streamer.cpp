// StreamDecoder: incremental decoding that only ever emits whole UTF-8 characters.
#include "duality/tokenizer.h"
#include "tokenizer/utf8.h"

namespace duality {

StreamDecoder::StreamDecoder(Tokenizer tokenizer, bool skip_special_tokens)
    : tokenizer_(std::move(tokenizer)), skip_special_(skip_special_tokens) {}

std::string StreamDecoder::push(int32_t id) {
    if (skip_special_ && tokenizer_.is_special(id)) return {};
    pending_ += tokenizer_.token_bytes(id);
    std::string out;
    const size_t used = utf8::append_lossy(pending_, /*final=*/false, &out);
    pending_.erase(0, used);
    return out;
}

std::string StreamDecoder::flush() {
    std::string out;
    utf8::append_lossy(pending_, /*final=*/true, &out);
    pending_.clear();
    return out;
}

}  // namespace duality
