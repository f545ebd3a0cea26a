// Warpgroup MMAs (sm_90a: wgmma) for the kernels that issue them directly (the fused SSD's pairs of
// heads, bench/proto/ssd_outputs_wgmma.cu):
//   d {64, 64} += A {64, 16} (registers) · B {16, 64} (shared memory, by descriptor), f32
//   accumulators, operands in bf16 or f16. The four warps of a warpgroup issue it together; warp w
//   holds rows 16w.. of A as the m16n8k16 A fragment (mma.cuh) and of d as four m16n8k16
//   accumulators per 8 columns: d[4t + e] is mma.cuh's d[e] of columns 8t...
// B's descriptor (smem_desc) takes the 128-byte swizzle only: rows of 128 bytes whose 16-byte
// pieces are XORed with the row's index mod 8, the pattern starting on a 1,024-byte boundary.
// K-major B ({n, k}, k contiguous: kTransB = 0) steps k by 32 bytes within a row and n by 8 rows
// (stride 1,024 bytes); N-major B ({k, n}, n contiguous: kTransB = 1) steps k by 8 rows.
// Ordering rules (PTX ISA, wgmma): wg_fence() before the first product and after any other access
// to its registers; products are asynchronous until wg_commit() and wg_wait<N>() (at most N
// groups left in flight); pin() keeps the compiler from moving a register's accesses across that
// point (define every input of a group's products before wg_fence(): ptxas serializes the
// products, warning C7513, where an ordinary instruction defines a register a product in flight
// reads, which register pressure alone can also cause); shared memory written by ordinary stores or
// cp.async needs fence.proxy.async (proxy_fence()) by the writing threads before the barrier that
// precedes the products. The instructions exist on sm_90a only: a kernel compiled for other targets
// too calls these under DUALITY_WGMMA (defined here where the target has them).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "core/cuda/sync.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define DUALITY_WGMMA 1
#endif

namespace duality::cuda::wgmma {

// A shared-memory matrix descriptor with the 128-byte swizzle: start address, leading and stride
// byte offsets (each a multiple of 16).
__device__ __forceinline__ uint64_t smem_desc(const void* p, uint32_t lbo, uint32_t sbo) {
    return static_cast<uint64_t>((sync::smem_addr(p) & 0x3FFFF) >> 4) |
           static_cast<uint64_t>(lbo >> 4) << 16 | static_cast<uint64_t>(sbo >> 4) << 32 |
           uint64_t{1} << 62;
}

__device__ __forceinline__ void wg_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void proxy_fence() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void pin(float& r) {
    asm volatile("" : "+f"(r)::"memory");
}
__device__ __forceinline__ void pin(uint32_t& r) {
    asm volatile("" : "+r"(r)::"memory");
}
__device__ __forceinline__ void pin(uint64_t& r) {
    asm volatile("" : "+l"(r)::"memory");
}

#define DUALITY_WGMMA_M64N64K16(ty)                                                              \
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." ty "." ty                         \
                 " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, " \
                 "%17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "  \
                 "{%32, %33, %34, %35}, %36, 1, 1, 1, %37;\n"                                    \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),       \
                   "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),     \
                   "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), \
                   "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), \
                   "+f"(d[30]), "+f"(d[31])                                                      \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(kTransB))

// d += A · B: A from registers (a: the warp's m16n8k16 A fragment), B by descriptor b.
template <typename T, int kTransB>
__device__ __forceinline__ void m64n64k16(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        DUALITY_WGMMA_M64N64K16("bf16");
    } else {
        static_assert(std::is_same_v<T, __half>, "bf16 or f16 operands");
        DUALITY_WGMMA_M64N64K16("f16");
    }
}

#undef DUALITY_WGMMA_M64N64K16

}  // namespace duality::cuda::wgmma
