// RMSNorm variants and the dt softplus on the CPU (f32, sums of squares in f64).
#include <cmath>

#include "ops/cpu/ops.h"

namespace duality::cpu {
namespace {

inline float silu(float v) {
    return v / (1.0f + std::exp(-v));
}

inline float inv_rms(const float* v, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(v[i]) * v[i];
    return static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
}

}  // namespace

void add_rms_norm(const float* h, float* residual, const float* w, float eps, float* out,
                  int64_t rows, int64_t dim, bool first, int n_threads, const RowScale& scale) {
#pragma omp parallel for num_threads(n_threads) if (rows > 1)
    for (int64_t r = 0; r < rows; ++r) {
        float* res = residual + r * dim;
        const float* hr = h + r * dim;
        float hs = 1.0f;
        if (scale.ssq && !first) {
            double ss = 0.0;
            for (int64_t k = 0; k < scale.n_part; ++k) ss += scale.ssq[r * scale.n_part + k];
            hs = static_cast<float>(1.0 / std::sqrt(ss / scale.count + scale.eps));
        }
        for (int64_t c = 0; c < dim; ++c) res[c] = first ? hr[c] : res[c] + hs * hr[c];
        const float s = inv_rms(res, dim, eps);
        for (int64_t c = 0; c < dim; ++c) out[r * dim + c] = res[c] * s * w[c];
    }
}

void rms_norm(const float* x, const float* w, float eps, float* out, int64_t rows, int64_t dim,
              int n_threads) {
#pragma omp parallel for num_threads(n_threads) if (rows > 1)
    for (int64_t r = 0; r < rows; ++r) {
        const float s = inv_rms(x + r * dim, dim, eps);
        for (int64_t c = 0; c < dim; ++c) out[r * dim + c] = x[r * dim + c] * s * w[c];
    }
}

void gated_rms_norm(const float* y, const float* z, int64_t z_stride, const float* w, float eps,
                    float* out, int64_t rows, int64_t dim, int64_t group_size, int n_threads) {
#pragma omp parallel for num_threads(n_threads) if (rows > 1)
    for (int64_t r = 0; r < rows; ++r) {
        float* o = out + r * dim;
        for (int64_t c = 0; c < dim; ++c) o[c] = y[r * dim + c] * silu(z[r * z_stride + c]);
        for (int64_t g0 = 0; g0 < dim; g0 += group_size) {
            const float s = inv_rms(o + g0, group_size, eps);
            for (int64_t c = g0; c < g0 + group_size; ++c) o[c] = o[c] * s * w[c];
        }
    }
}

void gate_partials(const float* y, const float* z, int64_t z_stride, const float* w, float* g,
                   float* ssq, int64_t rows, int64_t n_head, int64_t head_dim) {
    const int64_t dim = n_head * head_dim;
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t h = 0; h < n_head; ++h) {
            double ss = 0.0;
            for (int64_t c = h * head_dim; c < (h + 1) * head_dim; ++c) {
                const float v = y[r * dim + c] * silu(z[r * z_stride + c]);
                ss += static_cast<double>(v) * v;
                g[r * dim + c] = v * w[c];
            }
            ssq[r * n_head + h] = static_cast<float>(ss);
        }
    }
}

void dt_softplus(const float* dt_raw, int64_t raw_stride, const float* dt_bias, float dt_min,
                 float dt_max, float* dt, int64_t rows, int64_t n_head) {
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t h = 0; h < n_head; ++h) {
            const float v = dt_raw[r * raw_stride + h] + dt_bias[h];
            const float sp = v > 20.0f ? v : std::log1p(std::exp(v));
            dt[r * n_head + h] = std::fmin(std::fmax(sp, dt_min), dt_max);
        }
    }
}

}  // namespace duality::cpu
