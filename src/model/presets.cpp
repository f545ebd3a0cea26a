// Built-in model shapes for benchmarks with random weights (spec section 2). Each preset is the
// checkpoint's own config.json text, parsed like a file, so presets and files cannot disagree.
#include <string>
#include <utility>

#include "duality/config.h"

namespace duality {
namespace {

struct Preset {
    const char* name;
    const char* config_json;
};

constexpr Preset kPresets[] = {
    {"mamba2-130m", R"({"d_model": 768, "n_layer": 24, "vocab_size": 50277,
        "ssm_cfg": {"layer": "Mamba2"}, "pad_vocab_size_multiple": 16})"},
    {"mamba2-370m", R"({"d_model": 1024, "n_layer": 48, "vocab_size": 50277,
        "ssm_cfg": {"layer": "Mamba2"}, "pad_vocab_size_multiple": 16})"},
    {"mamba2-780m", R"({"d_model": 1536, "n_layer": 48, "vocab_size": 50277,
        "ssm_cfg": {"layer": "Mamba2"}, "pad_vocab_size_multiple": 16})"},
    {"mamba2-1.3b", R"({"d_model": 2048, "n_layer": 48, "vocab_size": 50277,
        "ssm_cfg": {"layer": "Mamba2"}, "pad_vocab_size_multiple": 16})"},
    {"mamba2-2.7b", R"({"d_model": 2560, "n_layer": 64, "vocab_size": 50277,
        "ssm_cfg": {"layer": "Mamba2"}, "pad_vocab_size_multiple": 16})"},
    {"codestral-7b", R"({"d_model": 4096, "n_layer": 64, "vocab_size": 32768,
        "ssm_cfg": {"layer": "Mamba2", "ngroups": 8}, "tie_embeddings": false,
        "pad_vocab_size_multiple": 16})"},
};

}  // namespace

Result<ModelConfig> preset_config(const std::string& name) {
    std::string names;
    for (const Preset& p : kPresets) {
        const std::string full = p.name;
        if (name == full || "mamba2-" + name == full)
            return parse_model_config(p.config_json, "preset " + full);
        names += (names.empty() ? "" : ", ") + full;
    }
    return invalid_argument("unknown model preset \"" + name + "\" (known: " + names + ")");
}

}  // namespace duality
