// libFuzzer target: tokenizer.json loading on arbitrary text, then an encode and decode with
// whatever loaded (added tokens, merges and normalizers that parse but make little sense).
#include <cstddef>
#include <cstdint>
#include <string>

#include "duality/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    auto tok = duality::Tokenizer::from_json(text, "fuzz/tokenizer.json");
    if (tok) {
        const auto ids = tok->encode("Hello w\xc3\xb6rld  <|endoftext|>\n\xff\t12");
        (void)tok->decode(ids);
        (void)tok->decode(ids, /*skip_special_tokens=*/true);
    }
    return 0;
}
