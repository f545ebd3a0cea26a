// ops/cpu/blas_core: which OpenBLAS kernel sets get upgraded, to what, and that a kernel set the
// user chose is left alone; a CPU model's thread count reaches OpenBLAS.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include <omp.h>

#include "duality/config.h"
#include "duality/model.h"
#include "ops/cpu/blas_core.h"

namespace duality::cpu {
namespace {

TEST(BlasCore, UpgradesOnlyKernelSetsWithoutAvx2) {
    // OpenBLAS's fallback for unknown Intel models, any case.
    EXPECT_EQ(blas_core_for("Prescott", true, true), "SkylakeX");
    EXPECT_EQ(blas_core_for("PRESCOTT", false, true), "Haswell");
    EXPECT_EQ(blas_core_for("Sandybridge", false, true), "Haswell");  // AVX, no AVX2 kernels
    EXPECT_EQ(blas_core_for("Nehalem", true, false), "SkylakeX");
    // A CPU without AVX2: the generic kernels are what it can run.
    EXPECT_EQ(blas_core_for("Prescott", false, false), "");
    // Kernel sets that already use AVX2 or AVX-512, or that are not x86-64's, stay.
    for (const char* core :
         {"Haswell", "SkylakeX", "Cooperlake", "SapphireRapids", "Zen", "ARMV8", "NEOVERSEN1", ""})
        EXPECT_EQ(blas_core_for(core, true, true), "") << core;
}

TEST(BlasCore, LeavesTheUsersChoiceAlone) {
    const char* before = std::getenv("OPENBLAS_CORETYPE");
    const std::string saved = before ? before : "";
    setenv("OPENBLAS_CORETYPE", "Prescott", 1);
    EXPECT_EQ(blas_core_upgrade(), "");
    if (before) {
        setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
    } else {
        unsetenv("OPENBLAS_CORETYPE");
    }
}

TEST(BlasCore, NamesTheKernelsInUse) {
    EXPECT_FALSE(blas_core().empty());
}

TEST(BlasCore, CpuModelsSetOpenBlasThreads) {
    // `--threads N` (LoadOptions::n_threads) bounds OpenBLAS's GEMMs as well as our own loops; 0
    // gives them every thread OpenMP has.
    auto config = preset_config("mamba2-130m");
    ASSERT_TRUE(config.is_ok()) << config.status().message();
    config->n_layer = 1;
    LoadOptions o;
    o.device = Device::kCpu;
    o.n_threads = 1;
    ASSERT_TRUE(Model::random(*config, o, 1).is_ok());
    EXPECT_EQ(blas_threads(), 1);
    o.n_threads = 0;
    ASSERT_TRUE(Model::random(*config, o, 1).is_ok());
    EXPECT_EQ(blas_threads(), omp_get_max_threads());
}

}  // namespace
}  // namespace duality::cpu
