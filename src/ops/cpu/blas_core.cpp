// See blas_core.h.
#include "ops/cpu/blas_core.h"

#include <cblas.h>
#include <strings.h>

#include <array>
#include <cstdlib>

namespace duality::cpu {

std::string blas_core() {
    const char* name = openblas_get_corename();
    return name ? name : "";
}

std::string blas_core_upgrade() {
    if (std::getenv("OPENBLAS_CORETYPE")) return "";
#if defined(__x86_64__)
    // OpenBLAS's x86-64 kernel sets without AVX2 (its fallbacks for unknown models among them).
    constexpr std::array<const char*, 9> kPreAvx2 = {"Prescott",   "Core2",   "Penryn",
                                                     "Dunnington", "Nehalem", "Atom",
                                                     "Barcelona",  "Opteron", "Sandybridge"};
    const std::string core = blas_core();
    bool pre_avx2 = false;
    for (const char* c : kPreAvx2) pre_avx2 = pre_avx2 || strcasecmp(core.c_str(), c) == 0;
    if (!pre_avx2) return "";
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return "";
}

}  // namespace duality::cpu
