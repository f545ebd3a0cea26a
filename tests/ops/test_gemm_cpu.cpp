// cpu::gemm against a double-precision product on each of its paths (sgemv, gemm_small_m, sgemm),
// and gemm_small_m's results independent of the batch and the thread count.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "ops/cpu/gemm_small_m.h"
#include "ops/cpu/ops.h"

namespace duality {
namespace {

std::vector<float> random_vector(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v) x = u(rng);
    return v;
}

// y = a · wᵀ (+ bias) in double: a {m, k} rows lda apart, w {n, k}.
std::vector<double> reference(const std::vector<float>& a, int64_t lda, const std::vector<float>& w,
                              const float* bias, int64_t m, int64_t n, int64_t k) {
    std::vector<double> y(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double s = bias ? bias[j] : 0.0;
            for (int64_t kk = 0; kk < k; ++kk)
                s += static_cast<double>(a[i * lda + kk]) * w[j * k + kk];
            y[i * n + j] = s;
        }
    return y;
}

// |y − ref| within f32 summation error: (k + 1) · 2^−24 · (|bias| + Σ|a·w|) bounds it; 4x that
// for slack.
void expect_close(const std::vector<float>& y, const std::vector<double>& ref,
                  const std::vector<float>& a, int64_t lda, const std::vector<float>& w,
                  const float* bias, int64_t m, int64_t n, int64_t k, const std::string& what) {
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double mag = bias ? std::fabs(bias[j]) : 0.0;
            for (int64_t kk = 0; kk < k; ++kk) mag += std::fabs(a[i * lda + kk] * w[j * k + kk]);
            const double tol =
                4.0 * static_cast<double>(k + 1) * std::ldexp(1.0, -24) * mag + 1e-30;
            ASSERT_NEAR(y[i * n + j], ref[i * n + j], tol) << what << " row " << i << " col " << j;
        }
}

TEST(CpuGemm, FewRowsMatchADoubleProduct) {
    // k with and without a tail past a multiple of 8, n with and without a partial panel, rows
    // lda apart with lda > k, and every m of cpu::gemm's paths: 1 (sgemv), 2-8 (gemm_small_m), 9
    // and 10 (sgemm).
    for (const auto& [n, k] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 1}, {5, 7}, {37, 64}, {130, 259}, {257, 16}, {3, 1000}}) {
        for (int64_t m = 1; m <= cpu::kGemmSmallM + 2; ++m) {
            const int64_t lda = k + 3;
            const auto a = random_vector(static_cast<size_t>(m * lda), 1);
            const auto w = random_vector(static_cast<size_t>(n * k), 2);
            const auto bias = random_vector(static_cast<size_t>(n), 3);
            for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
                std::vector<float> y(static_cast<size_t>(m * n), NAN);
                cpu::gemm(a.data(), lda, w.data(), b, y.data(), m, n, k);
                const std::string what = "m " + std::to_string(m) + " n " + std::to_string(n) +
                                         " k " + std::to_string(k) + (b ? " bias" : "");
                expect_close(y, reference(a, lda, w, b, m, n, k), a, lda, w, b, m, n, k, what);
            }
        }
    }
}

TEST(CpuGemm, FewRowResultsDoNotDependOnTheBatchOrThreads) {
    // The LM head's shape at a smaller vocabulary: each row computed alone, in batches of every
    // size of the few-row path (so each blocking), and on 1 and 2 threads, bit for bit the same.
    const int64_t n = 1001, k = 259, m_max = cpu::kGemmSmallM;
    const auto a = random_vector(static_cast<size_t>(m_max * k), 4);
    const auto w = random_vector(static_cast<size_t>(n * k), 5);
    std::vector<float> alone(static_cast<size_t>(m_max * n));
    for (int64_t i = 0; i < m_max; ++i)
        cpu::gemm_small_m(a.data() + i * k, k, w.data(), alone.data() + i * n, 1, n, k, 1);
    for (int64_t m = 1; m <= m_max; ++m) {
        for (int threads : {1, 2}) {
            std::vector<float> y(static_cast<size_t>(m * n));
            cpu::gemm_small_m(a.data(), k, w.data(), y.data(), m, n, k, threads);
            EXPECT_EQ(std::memcmp(y.data(), alone.data(), y.size() * sizeof(float)), 0)
                << "m " << m << ", " << threads << " threads";
        }
    }
}

}  // namespace
}  // namespace duality
