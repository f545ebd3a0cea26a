// SSD (state space duality) on the CPU, f32.
//
// ssd_chunked: the chunked algorithm of spec 6.2, walked chunk by chunk per head so that the
//   state passing (K4) happens in order and no inter-chunk states are stored:
//     CB[g, c]  = C_c · B_cᵀ                                   (K2; once per group and chunk)
//     y_c       = exp(Scs) ⊙ (C_c · S_prevᵀ)                   (K5 inter-chunk)
//               + (CB ⊙ exp(Scs_i − Scs_j) ⊙ Δ_j)_{j≤i} · x_c    (K5 intra-chunk)
//               + D · x_c
//     S_next    = exp(Scs_last) S_prev + x_cᵀ · (B_c ⊙ exp(Scs_last − Scs_j) Δ_j)   (K3 + K4)
//   Parallel over groups×chunks for CB, then over heads.
// ssd_sequential: the token-by-token recurrence (spec 6.1); the oracle and the decode step.
//   Parallel over heads.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/ops.h"

namespace duality::cpu {

void ssd_chunked(const SsdParams& p, int n_threads) {
    const int64_t L = p.seqlen, H = p.n_head, P = p.head_dim, N = p.d_state, G = p.n_group;
    const int64_t Q = p.chunk_size, n_chunks = (L + Q - 1) / Q, heads_per_group = H / G;
    if (L == 0) return;

    // K2: CB[g][c] {Q, Q}, lower triangle.
    std::vector<float> cb(static_cast<size_t>(G * n_chunks * Q * Q));
#pragma omp parallel for collapse(2) num_threads(n_threads)
    for (int64_t g = 0; g < G; ++g) {
        for (int64_t c = 0; c < n_chunks; ++c) {
            const int64_t t0 = c * Q, len = std::min(Q, L - t0);
            float* m = cb.data() + (g * n_chunks + c) * Q * Q;
            for (int64_t i = 0; i < len; ++i) {
                const float* ci = p.C + (t0 + i) * p.bc_stride + g * N;
                for (int64_t j = 0; j <= i; ++j) {
                    const float* bj = p.B + (t0 + j) * p.bc_stride + g * N;
                    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                    for (int64_t n = 0; n < N; ++n) acc += ci[n] * bj[n];
                    m[i * Q + j] = acc;
                }
            }
        }
    }

#pragma omp parallel num_threads(n_threads)
    {
        std::vector<float> cs(Q);  // Scs: chunk-local inclusive cumsum of A·Δ
#pragma omp for
        for (int64_t h = 0; h < H; ++h) {
            const int64_t g = h / heads_per_group;
            const float A = p.A[h], Dh = p.D ? p.D[h] : 0.0f;
            float* S = p.state + h * P * N;  // {head_dim, d_state}
            for (int64_t c = 0; c < n_chunks; ++c) {
                const int64_t t0 = c * Q, len = std::min(Q, L - t0);
                const float* m = cb.data() + (g * n_chunks + c) * Q * Q;
                float acc = 0.0f;
                for (int64_t i = 0; i < len; ++i) {
                    acc += A * p.dt[(t0 + i) * H + h];
                    cs[i] = acc;
                }
                for (int64_t i = 0; i < len; ++i) {
                    float* yi = p.y + (t0 + i) * H * P + h * P;
                    const float* ci = p.C + (t0 + i) * p.bc_stride + g * N;
                    const float* xi = p.x + (t0 + i) * p.x_stride + h * P;
                    const float decay_in = std::exp(cs[i]);
                    for (int64_t q = 0; q < P; ++q) {
                        const float* s = S + q * N;
                        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                        for (int64_t n = 0; n < N; ++n) dot += ci[n] * s[n];
                        yi[q] = decay_in * dot + Dh * xi[q];
                    }
                    for (int64_t j = 0; j <= i; ++j) {
                        const float w = m[i * Q + j] * std::exp(std::min(cs[i] - cs[j], 0.0f)) *
                                        p.dt[(t0 + j) * H + h];
                        const float* __restrict xj = p.x + (t0 + j) * p.x_stride + h * P;
                        float* __restrict yo = yi;
#pragma omp simd
                        for (int64_t q = 0; q < P; ++q) yo[q] += w * xj[q];
                    }
                }
                const float decay_chunk = std::exp(cs[len - 1]);
                for (int64_t k = 0; k < P * N; ++k) S[k] *= decay_chunk;
                for (int64_t j = 0; j < len; ++j) {
                    const float coeff = std::exp(std::min(cs[len - 1] - cs[j], 0.0f)) *
                                        p.dt[(t0 + j) * H + h];
                    const float* xj = p.x + (t0 + j) * p.x_stride + h * P;
                    const float* bj = p.B + (t0 + j) * p.bc_stride + g * N;
                    for (int64_t q = 0; q < P; ++q) {
                        const float a = xj[q] * coeff;
                        float* __restrict s = S + q * N;
#pragma omp simd
                        for (int64_t n = 0; n < N; ++n) s[n] += a * bj[n];
                    }
                }
            }
        }
    }
}

void ssd_sequential(const SsdParams& p, int n_threads) {
    const int64_t L = p.seqlen, H = p.n_head, P = p.head_dim, N = p.d_state;
    const int64_t heads_per_group = H / p.n_group;
#pragma omp parallel for num_threads(n_threads) if (H > 1)
    for (int64_t h = 0; h < H; ++h) {
        const int64_t g = h / heads_per_group;
        float* S = p.state + h * P * N;  // {head_dim, d_state}
        for (int64_t t = 0; t < L; ++t) {
            const float dt = p.dt[t * H + h];
            const float dA = std::exp(p.A[h] * dt);
            const float* x = p.x + t * p.x_stride + h * P;
            const float* B = p.B + t * p.bc_stride + g * N;
            const float* C = p.C + t * p.bc_stride + g * N;
            float* y = p.y + t * H * P + h * P;
            for (int64_t q = 0; q < P; ++q) {
                float* __restrict s = S + q * N;
                const float a = dt * x[q];
                float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int64_t n = 0; n < N; ++n) {
                    s[n] = s[n] * dA + a * B[n];
                    dot += s[n] * C[n];
                }
                y[q] = dot + (p.D ? p.D[h] : 0.0f) * x[q];
            }
        }
    }
}

}  // namespace duality::cpu
