// Tensor-core MMA shared by the kernels that issue mma.sync directly (ssd_fused, gemm_decode):
//   d {16, 8} += A {16, 16} (row-major) · B {16, 8} (column-major), f32 accumulators,
// operands in bf16 or f16 (sm_80 and later). Fragment layouts are the PTX ISA's for m16n8k16:
// a[0..3] = (row g, k 2t..2t+1), (row g+8, same k), (row g, k 2t+8..2t+9), (row g+8, same k);
// b0 = (k 2t..2t+1, column g), b1 = (k 2t+8..2t+9, column g); d = (row g, columns 2t, 2t+1),
// (row g+8, same columns), with g = lane / 4 and t = lane % 4.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace duality::cuda {

#define DUALITY_MMA_M16N8K16(ty)                           \
    asm("mma.sync.aligned.m16n8k16.row.col.f32." ty "." ty \
        ".f32 {%0, %1, %2, %3}, "                          \
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"  \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])   \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))

template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        DUALITY_MMA_M16N8K16("bf16");
    } else {
        static_assert(std::is_same_v<T, __half>, "bf16 or f16 operands");
        DUALITY_MMA_M16N8K16("f16");
    }
}

#undef DUALITY_MMA_M16N8K16

}  // namespace duality::cuda
