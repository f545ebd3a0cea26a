// What one dependency between two kernels of a decode step costs on this GPU, apart from any
// model math: graphs of chained kernels (chain_kernels.h), each link reading part of what the link
// in front wrote, as plain launches and as programmatic dependent launches (the model's small
// kernels), in grids of the 130m's batch-1 kernels (419 blocks: in_proj; 96: the decode step and
// out_proj) and of one block; then the same chain in one persistent launch whose rounds hand over
// through a counter (a release by each block, an acquire poll). Each figure is the marginal time
// of a link: (time of 2n links − time of n links) / n, so the graph's or launch's own start is
// left out. Prints µs per link; asserts only that the chains ran (the output changed). Disabled by
// default (a benchmark, not a test of speed); run it on a GPU with
//   duality_tests --gtest_also_run_disabled_tests --gtest_filter='PdlChainTiming.*'
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/device_buffer.h"
#include "core/cuda/stream.h"
#include "ops/cuda/chain_kernels.h"
#include "ops/cuda/timing_util.h"

namespace duality::optest {
namespace {

constexpr int kLinks = 72;  // the 130m's 24 layers of three kernels
constexpr int kIters = 50;
constexpr int kMaxBlocks = 419;

struct Link {
    int blocks, reads;
};

// µs per link of `pattern` repeated: a graph of 2n links against one of n.
double link_us(const std::vector<Link>& pattern, bool pdl, float* buf0, float* buf1,
               cudaStream_t s) {
    const auto graph_ms = [&](int n) {
        cuda::Graph g = cuda::Graph::capture(s, [&] {
            for (int i = 0; i < n; ++i) {
                const Link& l = pattern[static_cast<size_t>(i) % pattern.size()];
                chain_link(i % 2 ? buf1 : buf0, i % 2 ? buf0 : buf1, l.blocks, l.reads, pdl, s);
            }
        });
        return time_ms([&](int) { g.launch(s); }, kIters, 3, s);
    };
    return 1e3 * (graph_ms(2 * kLinks) - graph_ms(kLinks)) / kLinks;
}

TEST(PdlChainTiming, DISABLED_KernelBoundaries) {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    const size_t floats = 16 * kMaxBlocks;
    cuda::DeviceBuffer b0(floats * 4), b1(floats * 4);
    DUALITY_CUDA_CHECK(cudaMemset(b0.data(), 0, b0.bytes()));
    DUALITY_CUDA_CHECK(cudaMemset(b1.data(), 0, b1.bytes()));
    cuda::Stream stream;
    const cudaStream_t s = stream.get();
    float* p0 = b0.as<float>();
    float* p1 = b1.as<float>();

    struct Case {
        const char* name;
        std::vector<Link> pattern;
    };
    // The reads stay within what the link in front wrote (16 floats a block).
    const Case cases[] = {
        {"1 block, reads 16", {{1, 16}}},
        {"96 blocks, reads 768", {{96, 768}}},
        {"132 blocks, reads 768", {{132, 768}}},
        {"210 blocks, reads 768", {{210, 768}}},
        {"419 blocks, reads 768", {{419, 768}}},
        {"130m layer, in_proj as 210 blocks", {{210, 768}, {96, 384}, {96, 1536}}},
        {"130m layer: 419 r768, 96 r384, 96 r1536", {{419, 768}, {96, 384}, {96, 1536}}},
    };
    std::printf("%-44s %12s %12s\n", "chain (per link)", "plain us", "PDL us");
    for (const Case& c : cases) {
        const double plain = link_us(c.pattern, false, p0, p1, s);
        const double pdl = link_us(c.pattern, true, p0, p1, s);
        std::printf("%-44s %12.2f %12.2f\n", c.name, plain, pdl);
    }

    // One persistent launch: rounds hand over through a counter.
    cuda::DeviceBuffer counters(sizeof(int) * 2 * kLinks);
    int sms = 0, dev = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
    DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    for (const int blocks : {96, sms}) {
        const auto run_ms = [&](int rounds) {
            return time_ms(
                [&](int) {
                    DUALITY_CUDA_CHECK(cudaMemsetAsync(counters.data(), 0, counters.bytes(), s));
                    chain_persistent(p0, counters.as<int>(), blocks, 768, rounds, s);
                },
                kIters, 3, s);
        };
        const double us = 1e3 * (run_ms(2 * kLinks) - run_ms(kLinks)) / kLinks;
        std::printf("persistent, %3d blocks, reads 768, counter   %12.2f us a round\n", blocks, us);
    }
    DUALITY_CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<float> host(floats);
    DUALITY_CUDA_CHECK(cudaMemcpy(host.data(), p0, floats * 4, cudaMemcpyDeviceToHost));
    double sum = 0;
    for (float v : host) sum += v;
    EXPECT_NE(sum, 0.0) << "the chains wrote nothing";
}

}  // namespace
}  // namespace duality::optest
