// Where `--model` points when it is not given: $DUALITY_MODEL, then the bundled model next to the
// executable's install (../share/duality/models or ../models), then the source tree it was built
// from.
#include <unistd.h>

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
        candidates.push_back(exe.parent_path() / ".." / "share" / "duality" / "models" / kBundledModel);
        candidates.push_back(exe.parent_path() / ".." / "models" / kBundledModel);
    }
    candidates.push_back(fs::path(DUALITY_SOURCE_DIR) / "models" / kBundledModel);
    for (const auto& c : candidates) {
        if (fs::exists(c / "config.json", ec)) return fs::weakly_canonical(c, ec).string();
    }
    return candidates.back().string();  // the error message will name it
}

}  // namespace duality::cli
