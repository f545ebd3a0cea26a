// The fused SSD's S blocks (ssd_fused_kernel.cuh, which alone includes this): S = C·Bᵀ of one
// (chunk, group), computed once for all the group's heads, its causal 16×32 tiles stored f16 scaled
// per tile (ssd_fused_common.cuh: tiles_before, s_record_words) and a release flag the chunk's head
// blocks wait on. Parallelization: the 8 warps of the block take tiles w, w + 8, ...; one S block
// per (chunk, group) in the same launch, a chunk ahead of the head blocks that read it. Limits:
// those of ssd_fused.cu (d_state a multiple of 64, chunks of at most 256 tokens).
#pragma once

#include "core/cuda/sync.cuh"
#include "ops/cuda/ssd_fused_common.cuh"

namespace duality::cuda::fused {

using sync::st_release;

// An S block: S = C·Bᵀ of chunk c and group g, the causal tiles of the chunk's strips
// (tiles_before), scaled f16 (kTileWords), then a release flag the chunk's head blocks wait on.
// Warp w computes tiles w, w + 8, ... (d_state / 16 k-steps, fragments straight from shared
// memory: the block is 1/(heads per group + 1) of the grid and bound by its loads).
template <typename T, int kN>
__device__ void score_block(const FusedParams& p, int64_t c, int g, uint32_t epoch, T* Cs, T* Bs) {
    using M = Act<T>;
    constexpr int kLdC = kN + 8;
    const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
    const int64_t start = p.chunk_start[c];
    const int len = p.chunk_len[c];
    const int rows = (len + 31) & ~31;  // up to the last strip's 32-token block
    const T* Bg = static_cast<const T*>(p.B) + start * p.bc_stride + g * kN;  // {len, kN}
    const T* Cg = static_cast<const T*>(p.C) + start * p.bc_stride + g * kN;  // {len, kN}
    cp_rows<kN / 8>(Cs, kLdC, RowMajor<kLdC>{}, Cg, p.bc_stride, rows, len);
    cp_rows<kN / 8>(Bs, kLdC, RowMajor<kLdC>{}, Bg, p.bc_stride, rows, len);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    const int qa = (p.chunk_size + 31) & ~31;
    const int n_tile = tiles_before((len + 15) / 16);
    uint32_t* out = p.s_tiles + (c * p.n_group + g) * s_record_words(qa);
    float* back = reinterpret_cast<float*>(out + tiles_before(qa / 16) * kTileWords);
    for (int t = warp; t < n_tile; t += kWarps) {
        int s = 0;
        while (tiles_before(s + 1) <= t) ++s;
        const int i0 = 16 * s, j0 = 32 * (t - tiles_before(s));
        float sc[4][4] = {};
#pragma unroll
        for (int kk = 0; kk < kN / 16; ++kk) {
            uint32_t a[4], b[2][4];
            ldsm_x4(a, Cs + (i0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * kLdC + 16 * kk +
                           8 * (lane >> 4));
#pragma unroll
            for (int hb = 0; hb < 2; ++hb)
                ldsm_x4(b[hb], Bs + (j0 + 16 * hb + (lane & 7) + 8 * (lane >> 4)) * kLdC + 16 * kk +
                                   8 * ((lane >> 3) & 1));
#pragma unroll
            for (int hb = 0; hb < 2; ++hb) {
                M::mma(sc[2 * hb], a, b[hb][0], b[hb][1]);
                M::mma(sc[2 * hb + 1], a, b[hb][2], b[hb][3]);
            }
        }
        // Masked entries (j > i) are zeroed first: the head blocks never use them, and left in
        // they could set the tile's scale and cost its kept entries bits. Accumulator element
        // (q, e) is row i0 + lane / 4 + 8·(e / 2), column j0 + 8·q + 2·(lane % 4) + e % 2.
        if (j0 + 31 > i0) {
#pragma unroll
            for (int q = 0; q < 4; ++q)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (j0 + 8 * q + 2 * (lane % 4) + e % 2 > i0 + lane / 4 + 8 * (e / 2))
                        sc[q][e] = 0.0f;
        }
        // The tile's scale: |S| <= amax < 2^E; stored S·2^(15−E) (E >= −100, so that both
        // factors are normal f32; zero, subnormal, inf and NaN maxima unscaled). The largest
        // |S| of the warp's tile from its f32 bit patterns (ordered as integers when >= 0).
        float amax = 0.0f;
#pragma unroll
        for (int q = 0; q < 4; ++q)
#pragma unroll
            for (int e = 0; e < 4; ++e) amax = fmaxf(amax, fabsf(sc[q][e]));
        const int biased = (__reduce_max_sync(0xffffffffu, __float_as_uint(amax)) >> 23) & 0xff;
        float up = 1.0f, down = 1.0f;
        if (biased > 0 && biased < 255) {
            const int E = max(biased - 126, -100);
            up = __int_as_float((127 + 15 - E) << 23);
            down = __int_as_float((127 - 15 + E) << 23);
        }
        auto h2 = [up](float lo, float hi) {
            const __half2 v = __floats2half2_rn(lo * up, hi * up);
            return *reinterpret_cast<const uint32_t*>(&v);
        };
        uint32_t* dst = out + t * kTileWords + lane * 4;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const float(&u)[4] = sc[2 * half];
            const float(&v)[4] = sc[2 * half + 1];
            __stcg(reinterpret_cast<uint4*>(dst + half * 128),
                   make_uint4(h2(u[0], u[1]), h2(u[2], u[3]), h2(v[0], v[1]), h2(v[2], v[3])));
        }
        if (lane == 0) __stcg(back + t, down);
    }
    __syncthreads();
    if (tid == 0) st_release(s_flag(p, c, g), epoch);
}

}  // namespace duality::cuda::fused
