// What HBM allows for the batched decode step's state traffic, against what cuda::ssm_decode gets:
// the 2.7b shape (n_head 80, head_dim 64, d_state 128, f32 state) at 64 sequences reads and
// writes 168 MB per layer, most of a batch-64 step's bytes. Timed: a device-to-device copy of
// those bytes, in-place read-modify-write streams in several access patterns (stream_kernels.h),
// and ssm_decode itself on a slot pool laid out as the model's ({slot, layer, head, p, n}), each
// call on the next layer so that no call finds the last one's state in L2. Prints GB/s of
// state read + written; asserts only that the update changed the state. Disabled by default (a
// benchmark, not a test of speed); run it on a GPU with
//   duality_tests --gtest_also_run_disabled_tests --gtest_filter='StateStreamTiming.*'
// (DUALITY_SSM_DECODE_BULK=0 times the vector kernel in place of the bulk one).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/device_buffer.h"
#include "ops/cuda/kern_util.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/ops.h"
#include "ops/cuda/stream_kernels.h"
#include "ops/cuda/timing_util.h"

namespace duality::optest {
namespace {

constexpr int64_t kHeads = 80, kHeadDim = 64, kState = 128, kSeqs = 64, kLayers = 4;
constexpr int64_t kLayerFloats = kHeads * kHeadDim * kState;  // one sequence's state of a layer
constexpr int kIters = 20;

void report(const char* what, double ms, double bytes) {
    std::printf("%-40s %8.1f us  %6.0f GB/s\n", what, 1e3 * ms, bytes / (ms * 1e-3) / 1e9);
}

TEST(StateStreamTiming, DISABLED_Shape2p7bBatch64) {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    int dev = 0, sms = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
    DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    const int64_t step_floats = kSeqs * kLayerFloats;  // one layer's state of the batch
    const double rw_bytes = 2.0 * static_cast<double>(step_floats) * sizeof(float);

    {  // Copies and streams over kLayers buffers of one layer's state each.
        std::vector<cuda::DeviceBuffer> bufs;
        for (int i = 0; i < kLayers; ++i) {
            bufs.emplace_back(static_cast<size_t>(step_floats) * sizeof(float));
            DUALITY_CUDA_CHECK(cudaMemset(bufs.back().data(), 0, bufs.back().bytes()));
        }
        report("cudaMemcpyAsync device to device",
               time_ms(
                   [&](int i) {
                       const auto& a = bufs[size_t(i) % kLayers];
                       const auto& b = bufs[size_t(i + 1) % kLayers];
                       DUALITY_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), a.bytes(),
                                                          cudaMemcpyDeviceToDevice));
                   },
                   kIters, 3),
               rw_bytes);
        const std::pair<RmwPattern, const char*> patterns[] = {
            {RmwPattern::kOneVec, "rmw: one float4 per thread"},
            {RmwPattern::kDecodeLike, "rmw: ssm_decode's access pattern"},
            {RmwPattern::kPersistent, "rmw: persistent, 4 float4 in flight"},
            {RmwPattern::kPersistentHint, "rmw: persistent, streaming hints"}};
        for (const auto& [pattern, name] : patterns)
            report(name,
                   time_ms(
                       [&](int i) {
                           rmw_stream(bufs[size_t(i) % kLayers].as<float>(), step_floats / 4,
                                      pattern, sms, nullptr);
                       },
                       kIters, 3),
                   rw_bytes);
    }

    // ssm_decode on a model-like pool: slot s holds kLayers layers; call i updates layer i %
    // kLayers.
    std::mt19937 rng(7);
    const int64_t n_slots = kSeqs + 1, slot_stride = kLayers * kLayerFloats;
    const int64_t xbc_stride = kHeads * kHeadDim + 2 * kState;
    DeviceBatch b = make_batch(std::vector<int32_t>(kSeqs, 1), shuffled_slots(rng, kSeqs, n_slots));
    cuda::DeviceBuffer pool = upload_as(DType::kF32, normal(rng, size_t(n_slots * slot_stride)));
    cuda::DeviceBuffer xbc = upload_as(DType::kBF16, normal(rng, size_t(kSeqs * xbc_stride)));
    cuda::DeviceBuffer raw = upload_as(DType::kBF16, normal(rng, size_t(kSeqs * kHeads), -2.0f));
    cuda::DeviceBuffer bias = upload_f32(std::vector<float>(kHeads, 0.0f));
    cuda::DeviceBuffer A = upload_f32(std::vector<float>(kHeads, -1.0f));
    cuda::DeviceBuffer D = upload_f32(std::vector<float>(kHeads, 1.0f));
    cuda::DeviceBuffer y(size_t(kSeqs * kHeads * kHeadDim) * 2);
    cuda::SsdArgs a;
    a.batch = b.batch;
    a.n_head = kHeads;
    a.head_dim = kHeadDim;
    a.d_state = kState;
    a.n_group = 1;
    a.x = xbc.data();
    a.x_stride = xbc_stride;
    a.B = xbc.as<char>() + kHeads * kHeadDim * 2;
    a.C = xbc.as<char>() + (kHeads * kHeadDim + kState) * 2;
    a.bc_stride = xbc_stride;
    a.A = A.as<float>();
    a.D = D.as<float>();
    a.state_slot_stride = slot_stride;
    a.state_dtype = DType::kF32;
    a.y = y.data();
    cuda::RawDt dt;
    dt.dt_raw = raw.data();
    dt.raw_stride = kHeads;
    dt.dt_bias = bias.as<float>();
    dt.dt_max = 1e9f;
    const float* first = pool.as<float>() + b.slots[0] * slot_stride;  // sequence 0, layer 0
    const std::vector<float> before = download_as_f32(DType::kF32, first, 1024);
    report("ssm_decode (as dispatched)",
           time_ms(
               [&](int i) {
                   a.state = pool.as<float>() + (i % kLayers) * kLayerFloats;
                   cuda::ssm_decode(a, dt, DType::kBF16, nullptr);
               },
               kIters, 3),
           rw_bytes);
    DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> after = download_as_f32(DType::kF32, first, 1024);
    EXPECT_NE(before, after) << "sequence 0's state of layer 0 should have been updated";
}

}  // namespace
}  // namespace duality::optest
