// See blas_core.h.
#include "ops/cpu/blas_core.h"

#include <cblas.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>

namespace duality::cpu {

std::string blas_core() {
    const char* name = openblas_get_corename();
    return name ? name : "";
}

std::string blas_core_for(std::string_view core, bool avx512, bool avx2_fma) {
    constexpr std::array<std::string_view, 9> kPreAvx2 = {"prescott",   "core2",   "penryn",
                                                          "dunnington", "nehalem", "atom",
                                                          "barcelona",  "opteron", "sandybridge"};
    std::string lower(core);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (std::find(kPreAvx2.begin(), kPreAvx2.end(), lower) == kPreAvx2.end()) return "";
    if (avx512) return "SkylakeX";
    if (avx2_fma) return "Haswell";
    return "";
}

std::string blas_core_better(std::string_view core) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    const bool avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return blas_core_for(core, avx512, avx2_fma);
#else
    (void)core;
    return "";
#endif
}

void set_blas_threads(int n) {
    openblas_set_num_threads(n);
}

int blas_threads() {
    return openblas_get_num_threads();
}

std::string blas_core_upgrade() {
    return std::getenv("OPENBLAS_CORETYPE") ? "" : blas_core_better(blas_core());
}

}  // namespace duality::cpu
