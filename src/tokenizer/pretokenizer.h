// The ByteLevel pre-tokenizer's split: GPT-2's regex, run with PCRE2 (UTF + UCP, JIT when
// available), cuts normalized text into words that BPE then encodes one at a time.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "duality/status.h"

namespace duality {

class PreTokenizer {
public:
    struct Span {
        size_t begin, end;
    };

    // Per-call matching state (PCRE2 match data); one per thread.
    class Scratch {
    public:
        explicit Scratch(const PreTokenizer& p);
        ~Scratch();
        Scratch(const Scratch&) = delete;
        Scratch& operator=(const Scratch&) = delete;

    private:
        friend class PreTokenizer;
        void* match_data_;
    };

    static Result<std::unique_ptr<PreTokenizer>> create();
    ~PreTokenizer();
    PreTokenizer(const PreTokenizer&) = delete;
    PreTokenizer& operator=(const PreTokenizer&) = delete;

    // Appends to `out` the words of `text` (valid UTF-8), covering it in order.
    void split(std::string_view text, Scratch& scratch, std::vector<Span>* out) const;

    // The pattern, for messages and tests.
    static const char* pattern();

private:
    PreTokenizer() = default;
    void* code_ = nullptr;  // pcre2_code_8
    bool jit_ = false;
};

}  // namespace duality
