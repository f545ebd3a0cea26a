// --device / --dtype / --state-dtype / --threads: where a command runs its model; and the checks
// of flags that take seconds or other numbers.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tools/duality/commands.h"

namespace duality::cli {

namespace {
const std::map<std::string, DType> kFloatTypes = {
    {"f32", DType::kF32}, {"f16", DType::kF16}, {"bf16", DType::kBF16}};
}

void add_backend_flags(CLI::App* cmd, BackendFlags* f) {
    cmd->add_option("--device", f->device,
                    "cpu, cuda, or auto: cuda when a GPU is present (default: $DUALITY_DEVICE, "
                    "else auto)")
        ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
    cmd->add_option("--dtype", f->dtype,
                    "GPU weight and activation type: bf16, f16 or f32 (default: $DUALITY_DTYPE, "
                    "else bf16)")
        ->check(CLI::IsMember({"bf16", "f16", "f32"}));
    cmd->add_option("--state-dtype", f->state_dtype, "GPU SSM state type: f32, bf16 or f16")
        ->check(CLI::IsMember({"bf16", "f16", "f32"}))
        ->capture_default_str();
    cmd->add_option("--threads", f->threads, "CPU threads (0, the default: all)")
        ->check(CLI::Range(0, 1024));
}

CLI::Validator seconds_in(double max_s, bool allow_zero) {
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            char* end = nullptr;
            const double v = std::strtod(text.c_str(), &end);
            const bool ok = !text.empty() && *end == '\0' && std::isfinite(v) &&
                            (allow_zero ? v >= 0 : v > 0) && v <= max_s;
            if (ok) return std::string();
            char range[64];
            std::snprintf(range, sizeof range, "%s0, %g]", allow_zero ? "[" : "(", max_s);
            return "expected seconds in " + std::string(range) + ", got " + text;
        },
        "SECONDS");
}

CLI::Validator number_in(double lo, double hi, const std::string& unit) {
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            char* end = nullptr;
            const double v = std::strtod(text.c_str(), &end);
            const bool ok = !text.empty() && *end == '\0' && std::isfinite(v) && v >= lo && v <= hi;
            if (ok) return std::string();
            char range[64];
            std::snprintf(range, sizeof range, "[%g, %g]", lo, hi);
            return "expected " + unit + " in " + range + ", got " + text;
        },
        unit);
}

LoadOptions to_load_options(const BackendFlags& f) {
    LoadOptions o;
    o.n_threads = f.threads;
    std::string device = f.device;
    if (device.empty()) {
        const char* env = std::getenv("DUALITY_DEVICE");
        device = env && *env ? env : "auto";
    }
    o.device = device == "cuda" || (device == "auto" && cuda_device_count() > 0) ? Device::kCuda
                                                                                 : Device::kCpu;
    std::string dtype = f.dtype;
    if (dtype.empty()) {
        const char* env = std::getenv("DUALITY_DTYPE");
        dtype = env && *env ? env : "bf16";
    }
    auto it = kFloatTypes.find(dtype);
    if (it == kFloatTypes.end()) {
        std::fprintf(stderr, "duality: DUALITY_DTYPE=%s is not bf16, f16 or f32; using bf16\n",
                     dtype.c_str());
        it = kFloatTypes.find("bf16");
    }
    o.dtype = it->second;
    o.state_dtype = kFloatTypes.at(f.state_dtype);
    o.n_slots = 1;
    return o;
}

}  // namespace duality::cli
