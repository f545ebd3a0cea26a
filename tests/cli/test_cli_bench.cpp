// `duality bench` run as a user would, on the CPU (CI has no GPU): JSON and table output, roofline
// fractions from the peak flags, and clear errors for bad flags.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <link.h>

#include <cstdlib>
#include <string>

#include "ops/cpu/blas_core.h"
#include "test_util.h"

namespace duality {
namespace {

std::string tiny_model() {
    return (test::golden_dir() / "ssm_bin_f32").string();
}

#if defined(__x86_64__)
// The kernel set a `duality bench` run reports (its device line), with OPENBLAS_CORETYPE set to
// `coretype` (empty: unset) and the binary started by `launcher` (empty: directly).
std::string bench_blas_core(const std::string& coretype, const std::string& launcher = "") {
    const char* before = std::getenv("OPENBLAS_CORETYPE");
    const std::string saved = before ? before : "";
    if (coretype.empty()) {
        unsetenv("OPENBLAS_CORETYPE");
    } else {
        setenv("OPENBLAS_CORETYPE", coretype.c_str(), 1);
    }
    auto r = test::run_duality("bench --device cpu --model " + tiny_model() +
                                   " --prefill-lens 64 --prefill-batches 1 --decode-batches 1 "
                                   "--decode-steps 2 --warmup 1 --json",
                               /*merge_stderr=*/false, launcher);
    if (before) {
        setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
    } else {
        unsetenv("OPENBLAS_CORETYPE");
    }
    EXPECT_EQ(r.exit_code, 0) << r.out;
    if (r.exit_code != 0) return "";
    const std::string device = nlohmann::json::parse(r.out).at("device");
    const std::string prefix = "CPU (OpenBLAS ";
    EXPECT_EQ(device.rfind(prefix, 0), 0u) << device;
    return device.size() > prefix.size() + 1
               ? device.substr(prefix.size(), device.size() - prefix.size() - 1)
               : "";
}

// The dynamic loader this test binary (and so the duality binary) runs under: PT_INTERP.
std::string dynamic_loader() {
    std::string path;
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* out) {
            for (int i = 0; i < info->dlpi_phnum; ++i)
                if (info->dlpi_phdr[i].p_type == PT_INTERP)
                    *static_cast<std::string*>(out) =
                        reinterpret_cast<const char*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
            return 1;  // the main program comes first
        },
        &path);
    return path;
}

// The CLI runs the best kernel set for this CPU. Started through the dynamic loader it cannot run
// itself again, so it reports OpenBLAS's own choice; started directly it must report that choice
// upgraded where blas_core_better() names a better set (OpenBLAS fell back to generic kernels
// here), and the same choice elsewhere.
TEST(CliBench, RunsAndReportsTheBestBlasKernels) {
    const std::string loader = dynamic_loader();
    ASSERT_FALSE(loader.empty());
    const std::string own = bench_blas_core("", loader);
    ASSERT_FALSE(own.empty());
    const std::string better = cpu::blas_core_better(own);
    EXPECT_EQ(bench_blas_core(""), better.empty() ? own : better) << "OpenBLAS chose " << own;
}

// A kernel set the user chose is left alone, even the generic one: no second run.
TEST(CliBench, KeepsTheUsersBlasKernels) {
    EXPECT_EQ(bench_blas_core("Prescott"), "Prescott");
}
#endif

TEST(CliBench, JsonHasEveryRowWithPositiveNumbers) {
    auto r = test::run_duality("bench --device cpu --model " + tiny_model() +
                                   " --prefill-lens 64,2k --prefill-batches 1,3 "
                                   "--decode-batches 1,2,4 --decode-steps 3 --warmup 1 --json",
                               /*merge_stderr=*/false);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.at("backend"), "cpu");
    EXPECT_EQ(j.at("random_weights"), false);
    EXPECT_EQ(j.at("dtype"), "f32");  // the CPU backend computes in f32
    // No peak table entry for a CPU and no flags: fractions are n/a (null).
    EXPECT_TRUE(j.at("peak").at("hbm_bytes_per_s").is_null());
    EXPECT_GT(j.at("memory").at("weight_bytes").get<double>(), 0);
    EXPECT_GE(j.at("memory").at("n_slots").get<int>(), 4);

    const auto& prefill = j.at("prefill");
    ASSERT_EQ(prefill.size(), 4u);
    const int64_t want[4][2] = {{1, 64}, {3, 64}, {1, 2048}, {3, 2048}};
    for (size_t i = 0; i < 4; ++i) {
        const auto& p = prefill[i];
        EXPECT_EQ(p.at("batch"), want[i][0]);
        EXPECT_EQ(p.at("seq_len"), want[i][1]);
        EXPECT_EQ(p.at("tokens"), want[i][0] * want[i][1]);
        EXPECT_GT(p.at("seconds").get<double>(), 0);
        EXPECT_GT(p.at("tokens_per_s").get<double>(), 0);
        EXPECT_GT(p.at("flops").get<double>(), 0);
        EXPECT_TRUE(p.at("roofline_fraction").is_null());
    }
    const auto& decode = j.at("decode");
    ASSERT_EQ(decode.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        const auto& d = decode[i];
        EXPECT_EQ(d.at("batch"), int64_t{1} << i);
        EXPECT_EQ(d.at("steps"), 3);
        EXPECT_GT(d.at("tokens_per_s").get<double>(), 0);
        EXPECT_GT(d.at("ms_per_step").get<double>(), 0);
        EXPECT_GT(d.at("bytes_per_step").get<double>(), 0);
        EXPECT_TRUE(d.at("roofline_fraction").is_null());
    }
    // More sequences per step move more state bytes.
    EXPECT_GT(decode[2].at("bytes_per_step").get<double>(),
              decode[0].at("bytes_per_step").get<double>());
}

TEST(CliBench, PeakFlagsGiveRooflineFractions) {
    auto r = test::run_duality("bench --device cpu --model " + tiny_model() +
                                   " --prefill-lens 32 --prefill-batches 2 --decode-batches 2 "
                                   "--decode-steps 2 --hbm-gbps 100 --peak-tflops 2 --json",
                               /*merge_stderr=*/false);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.at("peak").at("source"), "flags");
    EXPECT_DOUBLE_EQ(j.at("peak").at("hbm_bytes_per_s").get<double>(), 100e9);
    EXPECT_DOUBLE_EQ(j.at("peak").at("flops_per_s").get<double>(), 2e12);
    const auto& p = j.at("prefill").at(0);
    EXPECT_NEAR(p.at("roofline_fraction").get<double>(), p.at("flops_per_s").get<double>() / 2e12,
                1e-12);
    const auto& d = j.at("decode").at(0);
    // bound = batch · bandwidth / bytes per step; fraction = tokens/s over the bound.
    const double bound = 2 * 100e9 / d.at("bytes_per_step").get<double>();
    EXPECT_NEAR(d.at("bound_tokens_per_s").get<double>() / bound, 1.0, 1e-12);
    EXPECT_NEAR(d.at("roofline_fraction").get<double>(), d.at("tokens_per_s").get<double>() / bound,
                1e-9);
}

TEST(CliBench, RandomWeightsPreset) {
    auto r = test::run_duality(
        "bench --device cpu --random-weights --config mamba2-130m "
        "--prefill-lens 16 --prefill-batches 1 --decode-batches 1,2 "
        "--decode-steps 2 --warmup 0 --json",
        /*merge_stderr=*/false);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.at("model"), "mamba2-130m");
    EXPECT_EQ(j.at("random_weights"), true);
    ASSERT_EQ(j.at("prefill").size(), 1u);
    ASSERT_EQ(j.at("decode").size(), 2u);
    EXPECT_GT(j.at("decode")[1].at("tokens_per_s").get<double>(), 0);
    // Weights as stored for compute: 129M parameters in f32 on the CPU.
    EXPECT_GT(j.at("memory").at("weight_bytes").get<double>(), 4 * 128e6);
}

TEST(CliBench, TableShowsTheColumns) {
    auto r = test::run_duality("bench --device cpu --model " + tiny_model() +
                                   " --prefill-lens 32 --prefill-batches 1 --decode-batches 1 "
                                   "--decode-steps 2",
                               /*merge_stderr=*/false);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    for (const char* col : {"prefill", "seq_len", "tokens/s", "TFLOP/s", "of peak", "decode",
                            "ms/step", "bound tok/s", "of bound", "memory", "n/a"})
        EXPECT_NE(r.out.find(col), std::string::npos) << col << "\n" << r.out;
}

TEST(CliBench, NoPrefillAndNoDecode) {
    auto r = test::run_duality("bench --device cpu --model " + tiny_model() +
                                   " --no-prefill --decode-batches 1 --decode-steps 1 --json",
                               /*merge_stderr=*/false);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_TRUE(j.at("prefill").empty());
    EXPECT_EQ(j.at("decode").size(), 1u);
}

TEST(CliBench, BadFlagsAreNamed) {
    const std::string tiny = " --device cpu --model " + tiny_model();
    struct Case {
        std::string args;
        const char* must_mention;
    };
    for (const Case& c : std::vector<Case>{
             {"bench --device cpu --random-weights --config mamba2-9000b", "mamba2-9000b"},
             {"bench --device cpu --random-weights --config mamba2-9000b", "mamba2-130m"},
             {"bench" + tiny + " --prefill-lens 512,x", "--prefill-lens"},
             {"bench" + tiny + " --prefill-lens 512,x", "\"x\""},
             {"bench" + tiny + " --decode-batches 1,,8", "--decode-batches"},
             {"bench" + tiny + " --prefill-batches 0", "--prefill-batches"},
             {"bench" + tiny + " --decode-steps 0", "--decode-steps"},
             {"bench" + tiny + " --hbm-gbps -5", "--hbm-gbps"},
             {"bench --device cpu --random-weights", "--config"},
             {"bench --device cpu --config mamba2-130m", "--random-weights"},
             {"bench --device cpu --model /no/such/dir", "/no/such/dir"},
             {"bench" + tiny + " --ops", "--ops"},
             {"bench" + tiny + " --dtype f64", "--dtype"},
         }) {
        auto r = test::run_duality(c.args);
        EXPECT_NE(r.exit_code, 0) << c.args << "\n" << r.out;
        EXPECT_NE(r.out.find(c.must_mention), std::string::npos) << c.args << "\n" << r.out;
    }
}

}  // namespace
}  // namespace duality
