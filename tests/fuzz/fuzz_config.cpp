// libFuzzer target: config.json parsing (both formats, Python literals) on arbitrary text.
#include <cstddef>
#include <cstdint>
#include <string>

#include "duality/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    (void)duality::parse_model_config(text, "fuzz/config.json");
    return 0;
}
