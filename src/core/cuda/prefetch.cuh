// L2 prefetch hints for kernels launched with pdl::launch() (core/cuda/pdl.cuh). Before its
// pdl::wait() a kernel may ask for data that no kernel of a step writes (weights), so that HBM
// streams them into L2 while the kernel before it is still finishing: at decode batch 1 the GEMV
// kernels otherwise start reading their weights only after the latency-bound norm, conv and
// decode-step kernels in front of them have drained. A prefetch never changes what a load returns
// (L2 is the point of coherence), so it can waste bandwidth but never break correctness.
#pragma once

#include <cstdint>

namespace duality::cuda {

// Brings [p, p + bytes) into L2 with bulk prefetches (cp.async.bulk.prefetch.L2, one per 32 KiB).
// p and bytes must be multiples of 16. Called by one thread. Sm_90 and later only; a no-op below
// (where pdl::wait() is one too, so nothing would overlap).
__device__ __forceinline__ void prefetch_l2_bulk(const void* p, int64_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr int64_t kPiece = 32 * 1024;
    const char* c = static_cast<const char*>(p);
    for (int64_t off = 0; off < bytes; off += kPiece) {
        const auto n = static_cast<uint32_t>(bytes - off < kPiece ? bytes - off : kPiece);
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(c + off), "r"(n)
                     : "memory");
    }
#else
    (void)p;
    (void)bytes;
#endif
}

// Brings the 128-byte line holding p into L2 (prefetch.global.L2; any architecture).
__device__ __forceinline__ void prefetch_l2_line(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

}  // namespace duality::cuda
