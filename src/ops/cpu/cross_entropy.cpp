// Negative log-likelihood of target tokens under rows of logits: nll[r] = logsumexp(row) −
// row[target]. The exp is a branch-free polynomial (exp2 split into integer and fraction, degree-6
// minimax-style Taylor on [−0.5, 0.5], relative error < 2e-7) so that the compiler vectorizes the
// vocabulary loop; libm's expf does not vectorize without -ffast-math. Parallel over rows.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/ops.h"

namespace duality::cpu {
namespace {

// e^x for x <= 0 (arguments are logit − max); flushes to 0 below −87.
inline float exp_nonpositive(float x) {
    x = std::max(x, -87.0f);
    const float t = x * 1.44269504088896341f;  // x·log2(e)
    const float n = std::nearbyint(t);
    const float f = (t - n) * 0.693147180559945309f;  // e^x = 2^n · e^f, |f| <= ln2/2
    float p = 1.0f / 720.0f;
    p = p * f + 1.0f / 120.0f;
    p = p * f + 1.0f / 24.0f;
    p = p * f + 1.0f / 6.0f;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [−126, 0]
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

}  // namespace

void cross_entropy(const float* logits, int64_t rows, int64_t vocab, const int32_t* targets,
                   double* nll, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        const float* row = logits + r * vocab;
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int64_t v = 0; v < vocab; ++v) mx = std::max(mx, row[v]);
        double sum = 0.0;  // terms in (0, 1], at least one equal to 1
#pragma omp simd reduction(+ : sum)
        for (int64_t v = 0; v < vocab; ++v) sum += exp_nonpositive(row[v] - mx);
        nll[r] = std::log(sum) + mx - row[targets[r]];
    }
}

}  // namespace duality::cpu
