// Programmatic dependent launch (PDL, Hopper and later): a kernel launched with pdl::launch() may
// be scheduled while the kernel before it in the stream is still finishing, which hides the
// launch latency between the many small kernels of a decode step (also inside CUDA graphs, where
// the dependency becomes a programmatic edge).
//
// The contract, for every kernel launched with pdl::launch(): its first statement is
// pdl::wait(), which returns once every earlier kernel of the stream has completed and its
// writes are visible, so nothing before it touches global memory (except L2 prefetch hints for
// weights, core/cuda/prefetch.cuh, which cannot change what any load returns, and the early reads
// below); then
// pdl::allow_next() lets the following kernel be scheduled (its blocks start once all of this
// grid's blocks have started, and wait in their own pdl::wait()). Both compile to nothing for
// architectures before sm_90, so the attribute is only set when the code that runs on this device
// was compiled for sm_90 or later (pdl::enabled(), from a probe kernel's PTX version): a Hopper
// binary on Hopper, not the compute_80 PTX that a newer GPU would JIT-compile. DUALITY_PDL=0 in the
// environment turns it off (for measuring what it buys).
//
// Early reads (early_reads()): since every kernel launched with pdl::launch() allows the next one
// only after its own wait, a kernel's blocks start only once everything before the kernel in
// front of it has completed (the one in front may still run; an operation launched without PDL,
// such as a cuBLASLt GEMM or a copy, starts only after everything before it has completed), and
// the writes of kernels that completed before a kernel started are visible to it (the same
// guarantee that makes stream order work without PDL; it is the kernel in front whose writes need
// the wait). So before its pdl::wait() a kernel may also read memory that neither the operation
// right in front of it in the stream nor anything running concurrently writes: weights, the batch
// description (except its token ids, which a device-fed decode loop's argmax writes in front of
// the next step: only the embedding reads them, and it reads nothing before its wait), and
// recurrent state, which in a step only the kernels of its own layer write (the
// decode step's SSM state: ssm_decode, the prefill SSD, slot copies; the conv window: conv1d, or
// in batch-1 passes with the GEMV epilogues the in_proj product's conv form, gemv_fused). The
// caller keeps that true: the model does by its order of kernels; a benchmark that repeats one op
// must give consecutive calls different state (op_bench alternates two buffers). ssm_decode,
// conv1d's decode kernel and the batch-1 GEMV (its weights; gemv_fused's conv form also its
// taps, slot and window) issue those loads first, so they stream while the
// kernel in front finishes. Writes always come after pdl::wait().
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "core/cuda/check.h"

namespace duality::cuda::pdl {

__device__ __forceinline__ void wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_next() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether the current device runs code of this library compiled for sm_90 or later (a probe
// kernel's PTX version; not the compute_80 PTX a newer GPU would JIT-compile). Also for kernels
// with other Hopper-only instructions (ssm_decode's bulk copies). Decided once per process.
bool runs_sm90_code();

// Whether launches carry the PDL attribute: DUALITY_PDL is not "0" and runs_sm90_code().
bool enabled();

// Whether kernels issue their early reads (above) before pdl::wait(): enabled() and
// DUALITY_PDL_EARLY is not "0" (for measuring what they buy).
bool early_reads();

// kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent launch.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            Args&&... args) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = enabled() ? 1 : 0;
    DUALITY_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...));
}

}  // namespace duality::cuda::pdl
