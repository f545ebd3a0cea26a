// See gemm_small_m.h.
//
// What it computes: y {m, n} = a {m, k} · wᵀ, w {n, k} row-major (a Torch linear weight), f32.
// How: OpenMP threads split w's rows into panels of R rows (8 for m < 4, else 4 with AVX-512 and
// 2 without), each prefetching the rows two panels ahead; within a panel, blocks of MB rows of a
// (4, then 2 and 1 for the rest) × RB rows of w keep MB·RB accumulators of 8 floats (at most 16
// with AVX-512's 32 vector registers, 8 with AVX2's 16) and stream k once, each w and a vector
// loaded once per block. A panel's w rows (R KB for k = 256) stay in L1 while the blocks of a pass
// over them, so w crosses from memory once, which is what a decode step's GEMMs are bound by
// (sgemm would first pack all of w: 2x the traffic and a copy).
// Every y element is Σ over k in the same order whatever m, the blocking or the thread count:
// 8 partial sums over k in steps of 8, added pairwise (lanes i and i + 4, i + 2, i + 1), then
// the k % 8 tail in order. So a row's result does not depend on the other rows of the batch.
// Limits: none on the shapes (any k, any alignment: vectors are loaded with memcpy).
#include "ops/cpu/gemm_small_m.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

namespace duality::cpu {
namespace {

using Vec = float __attribute__((vector_size(32)));  // 8 floats
constexpr int kV = 8;
// Accumulators a block keeps: 16 where the vector registers hold them (AVX-512's 32), else 8
// (AVX2's 16, beside the w and a vectors).
#if defined(__AVX512VL__)
constexpr int kAcc = 16;
#else
constexpr int kAcc = 8;
#endif

// (Vectors go by reference: by value they would change the ABI in builds without AVX, a
// -Wpsabi warning.)
inline void load(Vec& v, const float* p) {
    std::memcpy(&v, p, sizeof(v));
}

// Σ of the 8 lanes in a fixed order, then the k % 8 tail (x and w from k8 on).
inline float finish(const Vec& acc, const float* x, const float* w, int64_t k8, int64_t k) {
    float s[kV];
    std::memcpy(s, &acc, sizeof(s));
    for (int width = kV / 2; width >= 1; width /= 2)
        for (int i = 0; i < width; ++i) s[i] += s[i + width];
    float sum = s[0];
    for (int64_t kk = k8; kk < k; ++kk) sum += x[kk] * w[kk];
    return sum;
}

// Rows i0 .. i0 + MB of y, columns j0 + r0 .. j0 + r0 + RB (those below n).
template <int MB, int RB>
inline void block(const float* a, int64_t lda, const float* w, float* y, int64_t n, int64_t k,
                  int64_t i0, int64_t j0, int64_t r0) {
    const float* wr[RB];  // {RB, k}: the block's w rows (the last repeated past n)
    for (int r = 0; r < RB; ++r) wr[r] = w + std::min(j0 + r0 + r, n - 1) * k;
    const int64_t k8 = k / kV * kV;
    Vec acc[MB][RB] = {};
    for (int64_t kk = 0; kk < k8; kk += kV) {
        Vec wv[RB];
        for (int r = 0; r < RB; ++r) load(wv[r], wr[r] + kk);
        for (int q = 0; q < MB; ++q) {
            Vec x;
            load(x, a + (i0 + q) * lda + kk);
            for (int r = 0; r < RB; ++r) acc[q][r] += x * wv[r];
        }
    }
    for (int q = 0; q < MB; ++q)
        for (int r = 0; r < RB && j0 + r0 + r < n; ++r)
            y[(i0 + q) * n + j0 + r0 + r] = finish(acc[q][r], a + (i0 + q) * lda, wr[r], k8, k);
}

// Every row of a against w's rows j0 .. j0 + R, with the rows two panels ahead prefetched first:
// the blocks then read w from cache, and the memory system has a panel's R row streams in flight
// at once (a block alone streams RB rows). On this project's 2-vCPU AMD EPYC VM one row against
// the 17M model's LM head (50288 × 256) took 0.51-0.58 ms with the prefetch, 0.78-0.98 without.
template <int R>
void panel(const float* a, int64_t lda, const float* w, float* y, int64_t m, int64_t n, int64_t k,
           int64_t j0) {
    for (int64_t j = j0 + 2 * R; j < std::min(j0 + 3 * R, n); ++j)
        for (int64_t kk = 0; kk < k; kk += 16) __builtin_prefetch(w + j * k + kk, 0, 3);
    constexpr int kRb4 = std::min(R, kAcc / 4), kRb2 = std::min(R, kAcc / 2);
    int64_t i0 = 0;
    for (; i0 + 4 <= m; i0 += 4)
        for (int r0 = 0; r0 < R; r0 += kRb4) block<4, kRb4>(a, lda, w, y, n, k, i0, j0, r0);
    if (i0 + 2 <= m) {
        for (int r0 = 0; r0 < R; r0 += kRb2) block<2, kRb2>(a, lda, w, y, n, k, i0, j0, r0);
        i0 += 2;
    }
    if (i0 < m) block<1, R>(a, lda, w, y, n, k, i0, j0, 0);
}

template <int R>
void run(const float* a, int64_t lda, const float* w, float* y, int64_t m, int64_t n, int64_t k,
         int n_threads) {
    // Below ~64k multiply-adds a fork costs more than it saves.
    const bool parallel = m * n * k >= (int64_t{1} << 16) && n_threads > 1;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (parallel)
    for (int64_t j0 = 0; j0 < n; j0 += R) panel<R>(a, lda, w, y, m, n, k, j0);
}

}  // namespace

void gemm_small_m(const float* a, int64_t lda, const float* w, float* y, int64_t m, int64_t n,
                  int64_t k, int n_threads) {
    if (m <= 0 || n <= 0) return;
    if (n_threads <= 0) n_threads = omp_get_max_threads();
    // Panels of 8 rows for one to three rows of a (more streams in flight); from four rows up, of
    // as many rows as a block of 4 rows of a takes (a panel and a's rows must share L1 with the
    // other hyperthread's; 8 rows measured 20-35% slower there at m = 8).
    if (m < 4) {
        run<8>(a, lda, w, y, m, n, k, n_threads);
    } else {
        run<kAcc / 4>(a, lda, w, y, m, n, k, n_threads);
    }
}

}  // namespace duality::cpu
