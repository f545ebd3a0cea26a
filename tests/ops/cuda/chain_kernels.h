// Test-only kernels for PdlChainTiming (timing_pdl_chain.cpp): what one dependency between two
// kernels of a decode step costs, without any model math. Each link reads part of what the link
// before it wrote (so it truly depends on it) and writes 16 floats a block for the next.
#pragma once

#include <cuda_runtime.h>

namespace duality::optest {

// One link: `blocks` blocks of 256 threads wait for the kernel in front (pdl::wait() when `pdl`,
// else by stream order), each reads in[0, reads) (every thread a strided share, all loads issued
// before the sum) and writes out[16 · block, 16 · block + 16). With `pdl` the launch carries the
// programmatic-serialization attribute, as every small kernel of the model's steps does.
void chain_link(const float* in, float* out, int blocks, int reads, bool pdl, cudaStream_t stream);

// The same dependency chain inside one persistent launch: `blocks` co-resident blocks (a
// cooperative launch) run `rounds` rounds; in round r each block reads in[0, reads) of buffer
// r % 2 (written by every block in round r − 1), writes its 16 floats into buffer (r + 1) % 2,
// then fences and adds one to counters[r]; before round r + 1 it waits until counters[r] reaches
// `blocks` (acquire). bufs: 2 × 16 · blocks floats; counters: `rounds` ints, zero.
void chain_persistent(float* bufs, int* counters, int blocks, int reads, int rounds,
                      cudaStream_t stream);

}  // namespace duality::optest
