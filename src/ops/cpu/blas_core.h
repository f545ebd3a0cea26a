// Which kernels OpenBLAS runs on this CPU, and a better set when it fell back to generic ones.
//
// OpenBLAS picks its kernel set by CPU model when the library loads. A model newer than the
// library gets its generic SSE3 kernels ("Prescott"): Debian 12's OpenBLAS 0.3.21 does not know
// Intel family 6 model 207 (Emerald Rapids), on which `duality perplexity` with the bundled
// model ran 2.7x slower than with OPENBLAS_CORETYPE=SkylakeX (6.7 against 2.5 s for 4.5k
// tokens, the GEMMs 75% of the time). OpenBLAS reads that variable only when it loads, so the
// CLI sets it and runs itself again (tools/duality/main.cpp).
#pragma once

#include <string>
#include <string_view>

namespace duality::cpu {

// OpenBLAS's kernel set ("Haswell", "SkylakeX", "Prescott", ...).
std::string blas_core();

// The OPENBLAS_CORETYPE that serves this CPU better when OpenBLAS chose kernels without AVX2 on a
// CPU that has it: "SkylakeX" (AVX-512 F, BW, DQ and VL) or "Haswell" (AVX2 and FMA). Empty
// otherwise, and when OPENBLAS_CORETYPE is already set (the user's choice, or the second run).
std::string blas_core_upgrade();

// The same for any kernel set `core` on this CPU, whatever the environment says.
std::string blas_core_better(std::string_view core);

// The rule behind both, for any kernel set `core` and CPU features: empty unless `core` is one of
// OpenBLAS's x86-64 sets without AVX2 (its fallbacks for unknown models among them).
std::string blas_core_for(std::string_view core, bool avx512, bool avx2_fma);

// OpenBLAS's thread count: process-wide (OpenBLAS has no per-call setting). The CPU model sets it
// to its own thread count when it is made, so that `--threads N` bounds the GEMMs too.
void set_blas_threads(int n);
int blas_threads();

}  // namespace duality::cpu
