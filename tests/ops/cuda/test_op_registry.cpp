// Runs every case of the op-test registry (skipped when no GPU is present).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/cuda/device_buffer.h"
#include "core/env.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

std::vector<std::string> case_names() {
    std::vector<std::string> names;
    for (const OpCase& c : cases()) names.push_back(c.name);
    return names;
}

const OpCase& find_case(const std::string& name) {
    for (const OpCase& c : cases())
        if (c.name == name) return c;
    throw std::runtime_error("no op case " + name);
}

std::string check(const Output& o, const Tolerance& tol) {
    std::ostringstream err;
    if (o.actual.size() != o.expected.size()) {
        err << o.what << ": " << o.actual.size() << " values, expected " << o.expected.size();
        return err.str();
    }
    double diff2 = 0, ref2 = 0, worst = -1;
    size_t worst_i = 0, n_bad = 0;
    for (size_t i = 0; i < o.expected.size(); ++i) {
        const double e = o.expected[i], a = o.actual[i], d = std::abs(a - e);
        if (!std::isfinite(a)) {
            err << o.what << "[" << i << "] = " << a << " (expected " << e << ")";
            return err.str();
        }
        diff2 += d * d;
        ref2 += e * e;
        const double excess = d - (tol.atol + tol.rtol * std::abs(e));
        if (excess > 0) ++n_bad;
        if (excess > worst) {
            worst = excess;
            worst_i = i;
        }
    }
    const double rel_l2 = std::sqrt(diff2 / std::max(ref2, 1e-30));
    // DUALITY_OPTEST_REPORT=1: every output's errors, passing or not (for docs/numerics.md).
    if (env_is("DUALITY_OPTEST_REPORT", "1"))
        std::printf("  %s: rel_l2 %.3g, worst excess over atol + rtol·|e| %.3g at [%zu]\n",
                    o.what.c_str(), rel_l2, worst, worst_i);
    if (rel_l2 > tol.max_rel_l2 || n_bad) {
        err << o.what << ": rel_l2 " << rel_l2 << " (max " << tol.max_rel_l2 << "), " << n_bad
            << " of " << o.expected.size() << " outside atol " << tol.atol << " rtol " << tol.rtol
            << "; worst [" << worst_i << "] " << o.actual[worst_i] << " vs " << o.expected[worst_i];
    }
    return err.str();
}

class OpRegistry : public ::testing::TestWithParam<std::string> {};

TEST_P(OpRegistry, CudaMatchesCpu) {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    const OpCase& c = find_case(GetParam());
    const std::vector<Output> outputs = c.run();
    ASSERT_FALSE(outputs.empty());
    for (const Output& o : outputs) {
        ASSERT_FALSE(o.expected.empty()) << o.what;
        const std::string e = check(o, c.tol);
        EXPECT_TRUE(e.empty()) << c.name << ": " << e;
    }
}

std::string test_name(const ::testing::TestParamInfo<std::string>& info) {
    std::string s = info.param;
    for (char& ch : s)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    return s;
}

INSTANTIATE_TEST_SUITE_P(Cases, OpRegistry, ::testing::ValuesIn(case_names()), test_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(OpRegistry);

}  // namespace
}  // namespace duality::optest
