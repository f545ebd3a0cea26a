// libFuzzer target: the safetensors header parser on arbitrary bytes.
#include <cstddef>
#include <cstdint>

#include "loader/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto r = duality::parse_safetensors(data, size, "fuzz.safetensors");
    if (r.is_ok()) {
        // Touch every tensor's bytes so out-of-range views would be caught by ASan.
        volatile uint8_t sink = 0;
        for (const auto& [name, t] : *r)
            for (size_t i = 0; i < t.nbytes; i += 61) sink = sink ^ t.data[i];
    }
    return 0;
}
