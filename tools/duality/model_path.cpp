// Loading the model a text command works on, and a model folder's name. Where `--model` points
// when it is not given: $DUALITY_MODEL, then the bundled model next to the executable's install
// (../share/duality/models or ../models), then the source tree it was built from.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "tools/duality/commands.h"

namespace duality::cli {

namespace fs = std::filesystem;

constexpr const char* kBundledModel = "mamba2-gutenberg-17m";

std::string default_model_dir() {
    if (const char* env = std::getenv("DUALITY_MODEL"); env && *env) return env;
    std::vector<fs::path> candidates;
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        candidates.push_back(exe.parent_path() / ".." / "share" / "duality" / "models" /
                             kBundledModel);
        candidates.push_back(exe.parent_path() / ".." / "models" / kBundledModel);
    }
    candidates.push_back(fs::path(DUALITY_SOURCE_DIR) / "models" / kBundledModel);
    for (const auto& c : candidates) {
        if (fs::exists(c / "config.json", ec)) return fs::weakly_canonical(c, ec).string();
    }
    return candidates.back().string();  // the error message will name it
}

std::string model_folder_name(const std::string& dir) {
    std::error_code ec;
    const fs::path canonical = fs::weakly_canonical(dir, ec);
    const std::string name = ec ? std::string() : canonical.filename().string();
    return name.empty() ? dir : name;  // "/" has no name
}

std::optional<TextModel> load_text_model(const std::string& model_flag,
                                         const LoadOptions& options) {
    const std::string dir = model_flag.empty() ? default_model_dir() : model_flag;
    auto tokenizer = Tokenizer::load(dir);
    if (!tokenizer) {
        std::fprintf(stderr, "duality: %s\n", tokenizer.status().message().c_str());
        return std::nullopt;
    }
    // The model samples (step_sample, decode_greedy) only ids the tokenizer knows: Hugging Face
    // configs count padded rows in vocab_size.
    LoadOptions lo = options;
    if (lo.sample_vocab == 0) lo.sample_vocab = tokenizer->vocab_size();
    auto model = Model::load(dir, lo);
    if (!model) {
        std::fprintf(stderr, "duality: %s\n", model.status().message().c_str());
        return std::nullopt;
    }
    if (Status s = tokenizer->check_fits_model((*model)->config().vocab_padded); !s.is_ok()) {
        std::fprintf(stderr, "duality: %s\n", s.message().c_str());
        return std::nullopt;
    }
    return TextModel{std::move(*model), std::move(*tokenizer)};
}

}  // namespace duality::cli
