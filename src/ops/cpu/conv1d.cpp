// Causal depthwise conv1d + SiLU on the CPU (spec 5.3), continuing from a (width-1)-row state of
// raw inputs. Parallel over output rows; the inner loop runs over contiguous channels.
#include <cmath>
#include <vector>

#include "ops/cpu/ops.h"

namespace duality::cpu {

void conv1d_causal(const Conv1dParams& p, int n_threads) {
    const int64_t T = p.seqlen, C = p.channels, W = p.width;
    // Row τ of the virtual input [state ; x], τ in [-(W-1), T).
    auto row = [&](int64_t tau) -> const float* {
        return tau < 0 ? p.state + (W - 1 + tau) * C : p.x + tau * p.x_stride;
    };
#pragma omp parallel for num_threads(n_threads) if (T > 1)
    for (int64_t t = 0; t < T; ++t) {
        float* o = p.out + t * C;
        for (int64_t c = 0; c < C; ++c) o[c] = p.bias ? p.bias[c] : 0.0f;
        for (int64_t k = 0; k < W; ++k) {
            const float* in = row(t - (W - 1) + k);
            for (int64_t c = 0; c < C; ++c) o[c] += p.weight[c * W + k] * in[c];
        }
        for (int64_t c = 0; c < C; ++c) o[c] = o[c] / (1.0f + std::exp(-o[c]));
    }
    // The new state is the last W-1 rows of [state ; x].
    std::vector<float> next((W - 1) * C);
    for (int64_t r = 0; r < W - 1; ++r) {
        const float* src = row(T - (W - 1) + r);
        for (int64_t c = 0; c < C; ++c) next[r * C + c] = src[c];
    }
    for (int64_t i = 0; i < (W - 1) * C; ++i) p.state[i] = next[i];
}

}  // namespace duality::cpu
