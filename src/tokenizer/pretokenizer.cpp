// GPT-2's pre-tokenizer regex with PCRE2 (see pretokenizer.h).
#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace duality {
namespace {

// Hugging Face's ByteLevel regex is
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// run by Oniguruma, whose Unicode `\s` is the White_Space property. PCRE2's `\s` under UCP is
// the Z categories plus \t \n \v \f \r, which lacks U+0085 (NEXT LINE), so it is added here.
constexpr const char* kPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\x{85}\p{L}\p{N}]+)"
    R"(|[\s\x{85}]+(?![^\s\x{85}])|[\s\x{85}]+)";

pcre2_code* code_of(void* p) {
    return static_cast<pcre2_code*>(p);
}
pcre2_match_data* data_of(void* p) {
    return static_cast<pcre2_match_data*>(p);
}

}  // namespace

const char* PreTokenizer::pattern() {
    return kPattern;
}

Result<std::unique_ptr<PreTokenizer>> PreTokenizer::create() {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                      PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &error_offset, nullptr);
    if (code == nullptr) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error, message, sizeof(message));
        return unsupported(
            "PCRE2 cannot compile the pre-tokenizer regex (needs Unicode support): " +
            std::string(reinterpret_cast<const char*>(message)));
    }
    std::unique_ptr<PreTokenizer> p(new PreTokenizer());
    p->code_ = code;
    p->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;  // the interpreter also works
    return p;
}

PreTokenizer::~PreTokenizer() {
    pcre2_code_free(code_of(code_));
}

PreTokenizer::Scratch::Scratch(const PreTokenizer& p)
    : match_data_(pcre2_match_data_create_from_pattern(code_of(p.code_), nullptr)) {}

PreTokenizer::Scratch::~Scratch() {
    pcre2_match_data_free(data_of(match_data_));
}

void PreTokenizer::split(std::string_view text, Scratch& scratch, std::vector<Span>* out) const {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    const size_t n = text.size();
    pcre2_code* code = code_of(code_);
    pcre2_match_data* md = data_of(scratch.match_data_);
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t pos = 0;
    while (pos < n) {
        // The text was validated by the caller, hence PCRE2_NO_UTF_CHECK.
        const int rc = jit_
                           ? pcre2_jit_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK, md, nullptr)
                           : pcre2_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc < 0) break;  // no further match (or a matching error): the rest is one word
        const size_t begin = ov[0], end = ov[1];
        if (begin > pos) out->push_back({pos, begin});
        if (end <= begin) {  // cannot happen (every branch consumes a character); do not loop
            pos = begin;
            break;
        }
        out->push_back({begin, end});
        pos = end;
    }
    if (pos < n) out->push_back({pos, n});
}

}  // namespace duality
