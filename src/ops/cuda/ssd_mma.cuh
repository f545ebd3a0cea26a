// Block-level tile GEMM of the chunked SSD kernels: a {64, 32·kFrag} f32 accumulator tile held by
// the 4 warps of a block, fed from operand tiles staged in shared memory.
//
//   acc += A · B,  A {64, k} and B {k, 32·kFrag} in shared memory; each is row-major
//   (wmma::row_major: A[m·lda + k], B[k·ldb + n]) or column-major (wmma::col_major:
//   A[k·lda + m], B[n·ldb + k]).
//
// f16/bf16: tensor cores through nvcuda::wmma m16n16k16 with f32 accumulation. Warp w owns rows
//   [32·(w/2), +32) and columns [16·kFrag·(w%2), +16·kFrag): 2 × kFrag fragments. k must be a
//   multiple of 16 (tiles are zero-padded), lda/ldb multiples of 8, tile bases 32-byte aligned.
// f32: plain FMAs on the CUDA cores (no TF32). Thread t owns rows (t/16) + 8·r, r < 8, and
//   columns (t%16) + 16·c, c < 2·kFrag.
// store()/load() move the accumulators to/from a row-major f32 tile {64, 32·kFrag} in shared
// memory (ld a multiple of 4, base 32-byte aligned), where epilogues read and rescale them.
#pragma once

#include <mma.h>

#include <type_traits>

#include "ops/cuda/ssd_tile.cuh"

namespace duality::cuda::ssd {

namespace wmma = nvcuda::wmma;

template <typename T, int kFrag>
struct BlockMma {
    static_assert(sizeof(T) == 2, "tensor-core path: f16 or bf16");
    static constexpr int kBN = 32 * kFrag;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][kFrag];
    int row0, col0;

    __device__ BlockMma() {
        const int warp = static_cast<int>(threadIdx.x) / 32;
        row0 = (warp >> 1) * 32;
        col0 = (warp & 1) * 16 * kFrag;
    }
    __device__ void zero() {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < kFrag; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    }
    template <typename LA, typename LB>
    __device__ void step(const T* As, int lda, const T* Bs, int ldb, int k_len) {
        constexpr bool kArow = std::is_same_v<LA, wmma::row_major>;
        constexpr bool kBrow = std::is_same_v<LB, wmma::row_major>;
        for (int k = 0; k < k_len; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, LA> a[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int m = row0 + 16 * i;
                wmma::load_matrix_sync(a[i], kArow ? As + m * lda + k : As + k * lda + m, lda);
            }
#pragma unroll
            for (int j = 0; j < kFrag; ++j) {
                const int n = col0 + 16 * j;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LB> b;
                wmma::load_matrix_sync(b, kBrow ? Bs + k * ldb + n : Bs + n * ldb + k, ldb);
#pragma unroll
                for (int i = 0; i < 2; ++i) wmma::mma_sync(acc[i][j], a[i], b, acc[i][j]);
            }
        }
    }
    __device__ void store(float* S, int lds) const {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < kFrag; ++j)
                wmma::store_matrix_sync(S + (row0 + 16 * i) * lds + col0 + 16 * j, acc[i][j], lds,
                                        wmma::mem_row_major);
    }
    __device__ void load(const float* S, int lds) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < kFrag; ++j)
                wmma::load_matrix_sync(acc[i][j], S + (row0 + 16 * i) * lds + col0 + 16 * j, lds,
                                       wmma::mem_row_major);
    }
};

template <int kFrag>
struct BlockMma<float, kFrag> {
    static constexpr int kBN = 32 * kFrag, kCols = 2 * kFrag;
    float acc[8][kCols];
    int ty, tx;

    __device__ BlockMma() {
        ty = static_cast<int>(threadIdx.x) / 16;
        tx = static_cast<int>(threadIdx.x) % 16;
    }
    __device__ void zero() {
#pragma unroll
        for (int r = 0; r < 8; ++r)
#pragma unroll
            for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0f;
    }
    template <typename LA, typename LB>
    __device__ void step(const float* As, int lda, const float* Bs, int ldb, int k_len) {
        constexpr bool kArow = std::is_same_v<LA, wmma::row_major>;
        constexpr bool kBrow = std::is_same_v<LB, wmma::row_major>;
#pragma unroll 4
        for (int k = 0; k < k_len; ++k) {
            float a[8], b[kCols];
#pragma unroll
            for (int r = 0; r < 8; ++r)
                a[r] = kArow ? As[(ty + 8 * r) * lda + k] : As[k * lda + ty + 8 * r];
#pragma unroll
            for (int c = 0; c < kCols; ++c)
                b[c] = kBrow ? Bs[k * ldb + tx + 16 * c] : Bs[(tx + 16 * c) * ldb + k];
#pragma unroll
            for (int r = 0; r < 8; ++r)
#pragma unroll
                for (int c = 0; c < kCols; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
        }
    }
    __device__ void store(float* S, int lds) const {
#pragma unroll
        for (int r = 0; r < 8; ++r)
#pragma unroll
            for (int c = 0; c < kCols; ++c) S[(ty + 8 * r) * lds + tx + 16 * c] = acc[r][c];
    }
    __device__ void load(const float* S, int lds) {
#pragma unroll
        for (int r = 0; r < 8; ++r)
#pragma unroll
            for (int c = 0; c < kCols; ++c) acc[r][c] = S[(ty + 8 * r) * lds + tx + 16 * c];
    }
};

}  // namespace duality::cuda::ssd
