// SSD (state space duality) on the CPU, f32.
//
// ssd_chunked: the chunked algorithm of spec 6.2, walked chunk by chunk per head so that the
//   state passing (K4) happens in order and no inter-chunk states are stored:
//     CB[g, c]  = C_c · B_cᵀ                                   (K2; once per group and chunk)
//     y_c       = exp(Scs) ⊙ (C_c · S_prevᵀ)                   (K5 inter-chunk)
//               + (CB ⊙ exp(Scs_i − Scs_j) ⊙ Δ_j)_{j≤i} · x_c    (K5 intra-chunk)
//               + D · x_c
//     S_next    = exp(Scs_last) S_prev + x_cᵀ · (B_c ⊙ exp(Scs_last − Scs_j) Δ_j)   (K3 + K4)
//   Parallel over groups×chunks for CB, then over heads; the three per-chunk products are
//   single-threaded SGEMMs on each head's thread.
// ssd_sequential: the token-by-token recurrence (spec 6.1); the oracle and the decode step.
//   Parallel over heads.
#include <algorithm>
#include <cmath>
#include <vector>

#include <cblas.h>

#include "core/half.h"
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
        // Per-thread scratch. Inside this parallel region OpenBLAS (OpenMP build) runs each call
        // on the calling thread, so the heads proceed in parallel.
        std::vector<float> cs(Q);     // Scs: chunk-local inclusive cumsum of A·Δ
        std::vector<float> w(Q * Q);  // {Q, Q}: CB ⊙ exp(Scs_i − Scs_j) ⊙ Δ_j, lower triangle
        std::vector<float> bw(Q * N);  // {Q, N}: B_j ⊙ exp(Scs_last − Scs_j) Δ_j
        std::vector<float> yc(Q * P);  // {Q, P}: the chunk's output for this head
#pragma omp for schedule(dynamic)
        for (int64_t h = 0; h < H; ++h) {
            const int64_t g = h / heads_per_group;
            const float A = p.A[h], Dh = p.D ? p.D[h] : 0.0f;
            float* S = p.state + h * P * N;  // {head_dim, d_state}
            for (int64_t c = 0; c < n_chunks; ++c) {
                const int64_t t0 = c * Q, len = std::min(Q, L - t0);
                const float* m = cb.data() + (g * n_chunks + c) * Q * Q;
                const float* xc = p.x + t0 * p.x_stride + h * P;   // {len, P}, rows x_stride apart
                const float* bc = p.B + t0 * p.bc_stride + g * N;  // {len, N}
                const float* cc = p.C + t0 * p.bc_stride + g * N;  // {len, N}
                const float* dt = p.dt + t0 * H + h;               // Δ_j at dt[j * H]
                float acc = 0.0f;
                for (int64_t i = 0; i < len; ++i) {
                    acc += A * dt[i * H];
                    cs[i] = acc;
                }
                // Inter-chunk: yc = C_c · S_prevᵀ, then row i scaled by exp(Scs_i).
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(len), int(P), int(N), 1.0f,
                            cc, int(p.bc_stride), S, int(N), 0.0f, yc.data(), int(P));
                for (int64_t i = 0; i < len; ++i) {
                    const float e = std::exp(cs[i]);
                    for (int64_t q = 0; q < P; ++q) yc[i * P + q] *= e;
                }
                // Intra-chunk: yc += W · x_c with W the decayed, Δ-weighted causal CB.
                for (int64_t i = 0; i < len; ++i) {
                    float* wi = w.data() + i * Q;
                    for (int64_t j = 0; j <= i; ++j)
                        wi[j] = m[i * Q + j] * std::exp(std::min(cs[i] - cs[j], 0.0f)) * dt[j * H];
                    for (int64_t j = i + 1; j < len; ++j) wi[j] = 0.0f;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(len), int(P), int(len),
                            1.0f, w.data(), int(Q), xc, int(p.x_stride), 1.0f, yc.data(), int(P));
                for (int64_t i = 0; i < len; ++i) {
                    float* yi = p.y + (t0 + i) * H * P + h * P;
                    const float* xi = xc + i * p.x_stride;
                    for (int64_t q = 0; q < P; ++q) yi[q] = yc[i * P + q] + Dh * xi[q];
                }
                // State: S = exp(Scs_last) S + x_cᵀ · (B_c ⊙ exp(Scs_last − Scs_j) Δ_j).
                for (int64_t j = 0; j < len; ++j) {
                    const float coeff = std::exp(std::min(cs[len - 1] - cs[j], 0.0f)) * dt[j * H];
                    for (int64_t n = 0; n < N; ++n) bw[j * N + n] = bc[j * p.bc_stride + n] * coeff;
                }
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(P), int(N), int(len), 1.0f,
                            xc, int(p.x_stride), bw.data(), int(N), std::exp(cs[len - 1]), S,
                            int(N));
                if (p.passed_f16 && c + 1 < n_chunks)
                    round_to_dtype(DType::kF16, S, static_cast<size_t>(P * N));
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
