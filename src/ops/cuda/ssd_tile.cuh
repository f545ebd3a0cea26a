// Device helpers of the chunked SSD kernels: the global -> shared tile loader that every
// GEMM-like step uses to stage its operands.
//
// Tiles in shared memory are row-major {R, CC} with a padded leading dimension (CC + kPad), so
// rows stay 16-byte aligned and wmma fragment loads avoid bank conflicts. Values outside the valid
// rows/columns are written as zeros, so a GEMM can run over a tile padded to 16 (wmma) without
// masks. Each staged value goes through f32: f(r, c, value) can scale or mask it there (operand
// scaling is computed in f32 and rounded once to the tile's dtype, spec 9.1).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "ops/cuda/dtype.cuh"

namespace duality::cuda::ssd {

constexpr int kThreads = 128;  // every tile kernel: 4 warps
constexpr int kBM = 64;        // rows of a block tile

using dtype::from_f32;  // (dtype.cuh: scalar f32 <-> act conversions)
using dtype::to_f32;

// Geometry of the staged tiles for an operand dtype T: the K step of the tile GEMMs (128 bytes
// of a row: 64 halves or 32 floats) and the row padding (16 bytes).
template <typename T>
struct TileCfg {
    static constexpr int kBK = 128 / static_cast<int>(sizeof(T));
    static constexpr int kPad = 16 / static_cast<int>(sizeof(T));
};

constexpr int round16(int v) {
    return (v + 15) & ~15;
}

// An aligned group of N elements, moved as one vector load/store.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
    T v[N];
};

// dst[r * lds + c] (T, shared) = f(r, c, src[r * ld + c]) for r < valid_r and c < valid_c, and 0
// elsewhere, over the whole {R, CC} tile. `vec`: src rows may be read in 16-byte vectors (base
// aligned, ld a multiple of the vector length); otherwise every element is loaded on its own.
// dst must be 16-byte aligned and lds a multiple of the vector length. Call with all threads of
// the block (kThreads).
template <int R, int CC, typename T, typename S, typename F>
__device__ __forceinline__ void load_tile(T* __restrict__ dst, int lds, const S* __restrict__ src,
                                          int64_t ld, int valid_r, int valid_c, bool vec, F f) {
    constexpr int kSz = sizeof(S) > sizeof(T) ? sizeof(S) : sizeof(T);
    constexpr int VE = 16 / kSz;  // elements per vector
    static_assert(CC % VE == 0, "tile width must be a multiple of the vector length");
    constexpr int kVecPerRow = CC / VE;
#pragma unroll 2
    for (int v = threadIdx.x; v < R * kVecPerRow; v += kThreads) {
        const int r = v / kVecPerRow, c = (v % kVecPerRow) * VE;
        float val[VE];
        if (r < valid_r && vec && c + VE <= valid_c) {
            const Vec<S, VE> in = *reinterpret_cast<const Vec<S, VE>*>(src + r * ld + c);
#pragma unroll
            for (int e = 0; e < VE; ++e) val[e] = f(r, c + e, to_f32(in.v[e]));
        } else {
#pragma unroll
            for (int e = 0; e < VE; ++e)
                val[e] = (r < valid_r && c + e < valid_c) ? f(r, c + e, to_f32(src[r * ld + c + e]))
                                                          : 0.0f;
        }
        Vec<T, VE> out;
#pragma unroll
        for (int e = 0; e < VE; ++e) out.v[e] = from_f32<T>(val[e]);
        *reinterpret_cast<Vec<T, VE>*>(dst + r * lds + c) = out;
    }
}

struct Identity {
    __device__ __forceinline__ float operator()(int, int, float v) const { return v; }
};

}  // namespace duality::cuda::ssd
