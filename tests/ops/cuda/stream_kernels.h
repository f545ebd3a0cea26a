// Test-only kernels for the timing tests: in-place f32 read-modify-write streams, p[i] = p[i] · a +
// b over n4 float4s, in the access patterns a decode step's state update could take
// (StateStreamTiming, timing_state_stream.cpp), and a read stream (GemvTiming, timing_gemv.cpp).
// They measure what the HBM allows, not model math.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace duality::optest {

enum class RmwPattern {
    kOneVec,          // one float4 per thread, one block per 256 float4s
    kDecodeLike,      // 128-thread blocks, each warp 4 float4s per lane in 4 rows (ssm_decode's)
    kPersistent,      // SMs × 8 blocks of 256 threads, grid-stride, 4 float4s in flight each
    kPersistentHint,  // kPersistent with the streaming cache hints (__ldcs / __stcs)
};

void rmw_stream(float* p, int64_t n4, RmwPattern pattern, int sms, cudaStream_t stream);

// Reads n4 float4s of p once (SMs × 8 blocks of 256 threads, grid-stride, `in_flight` float4s a
// thread issued together: 4 or 8) and writes each block's sum to out[block] (SMs × 8 floats), so
// that the loads are kept.
void read_stream(const float* p, int64_t n4, int in_flight, int sms, float* out,
                 cudaStream_t stream);

}  // namespace duality::optest
