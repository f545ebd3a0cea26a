// The CPU backend: the reference implementation of every op. All math is f32; threading is
// OpenMP over rows or heads; GEMMs go through CBLAS (OpenBLAS).
#pragma once

#include <cstdint>

#include "ops/params.h"

namespace duality::cpu {

// y = a · wᵀ (+ bias): a {m, k} (rows lda apart), w {n, k}, bias {n} or nullptr, y {m, n}.
// n_threads <= 0: OpenMP's default. (One row and more than kGemmSmallM go through OpenBLAS, on its
// own thread count: set_blas_threads, which making a CPU model calls.)
void gemm(const float* a, int64_t lda, const float* w, const float* bias, float* y, int64_t m,
          int64_t n, int64_t k, int n_threads = 0);

// out {rows, dim} = table[ids[r]] for each r; table {n_rows, dim}.
void embedding(const int32_t* ids, int64_t rows, const float* table, int64_t dim, float* out);

// Fused residual add + RMSNorm (spec 4): residual += h (residual = h when `first`),
// out = residual * rsqrt(mean(residual²) + eps) * w. h, residual, out: {rows, dim}.
// `scale`: h's rows multiplied by their RowScale factor first (ignored with `first`).
void add_rms_norm(const float* h, float* residual, const float* w, float eps, float* out,
                  int64_t rows, int64_t dim, bool first, int n_threads, const RowScale& scale = {});

// out = x * rsqrt(mean(x²) + eps) * w over each row of {rows, dim}.
void rms_norm(const float* x, const float* w, float eps, float* out, int64_t rows, int64_t dim,
              int n_threads);

// Gated RMSNorm normalized per group (mamba_ssm semantics, spec 5.7 and 12.1):
// v = y ⊙ silu(z); each contiguous group of group_size channels: v·rsqrt(mean(v²)+eps) ⊙ w.
// y, out {rows, dim} dense; z rows z_stride apart.
void gated_rms_norm(const float* y, const float* z, int64_t z_stride, const float* w, float eps,
                    float* out, int64_t rows, int64_t dim, int64_t group_size, int n_threads);

// The gated norm's first half, as cuda::ssd_fused's SsdGate epilogue leaves it:
// v = y ⊙ silu(z); g = v ⊙ w; ssq[r, h] = Σ v² over head h's head_dim channels of row r.
// y, g {rows, n_head·head_dim} dense; z rows z_stride apart; ssq {rows, n_head}.
void gate_partials(const float* y, const float* z, int64_t z_stride, const float* w, float* g,
                   float* ssq, int64_t rows, int64_t n_head, int64_t head_dim);

// Δ {rows, n_head} = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max), softplus with the
// threshold-20 form. dt_raw rows raw_stride apart.
void dt_softplus(const float* dt_raw, int64_t raw_stride, const float* dt_bias, float dt_min,
                 float dt_max, float* dt, int64_t rows, int64_t n_head);

// Causal depthwise conv1d + SiLU, continuing from and updating the state (see Conv1dParams).
void conv1d_causal(const Conv1dParams& p, int n_threads);

// SSD, chunked algorithm (spec 6.2): the production CPU path for multi-token input.
void ssd_chunked(const SsdParams& p, int n_threads);

// SSD, sequential recurrence (spec 6.1): the oracle for ssd_chunked and the decode step.
void ssd_sequential(const SsdParams& p, int n_threads);

// nll[r] = logsumexp(logits[r]) − logits[r][targets[r]] for rows of {rows, vocab} logits.
void cross_entropy(const float* logits, int64_t rows, int64_t vocab, const int32_t* targets,
                   double* nll, int n_threads);

}  // namespace duality::cpu
