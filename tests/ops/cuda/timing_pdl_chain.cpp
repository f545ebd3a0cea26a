// What one dependency between two kernels of a decode step costs on this GPU, apart from any
// model math: graphs of chained kernels (chain_kernels.h), each link reading part of what the link
// in front wrote, as plain launches and as programmatic dependent launches (the model's small
// kernels), in grids of the 130m's batch-1 kernels (419 blocks: in_proj; 96: the decode step and
// out_proj) and of one block; then the same chain in one persistent launch whose rounds hand over
// through a counter (a release by each block, an acquire poll). Each figure is the marginal time
// of a link: (time of 2n links − time of n links) / n, so the graph's or launch's own start is
// left out. Prints µs per link (disabled by default: a benchmark, not a test of speed; run it on a
// GPU with duality_tests --gtest_also_run_disabled_tests --gtest_filter='PdlChainTiming.*').
// PdlChain.LinksReadWhatTheLinkInFrontWrote (enabled) checks what the chains compute.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
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
}

// What the chains compute, on the host: a link's block sum of in[0, reads), then each block's 16
// outputs s · 0.5 + t (chain_kernels.cu).
std::vector<double> host_link(const std::vector<double>& in, int blocks, int reads) {
    double sum = 0;
    for (int i = 0; i < reads; ++i) sum += in[static_cast<size_t>(i)];
    std::vector<double> out(static_cast<size_t>(16 * blocks));
    for (size_t i = 0; i < out.size(); ++i) out[i] = sum * 0.5 + static_cast<double>(i % 16);
    return out;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want,
                  const char* what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-5 * std::abs(want[i]) + 1e-6) << what << ", [" << i << "]";
}

// The chains the timing above runs compute what they claim: each link reads what the link in
// front wrote (a programmatic launch that read before its predecessor's stores, or a round that
// passed its counter early, would read the old values), checked against the host over three
// links of the 130m's grids and three rounds of the persistent launch.
TEST(PdlChain, LinksReadWhatTheLinkInFrontWrote) {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    const size_t floats = 16 * kMaxBlocks;
    std::vector<float> init(floats);
    for (size_t i = 0; i < floats; ++i) init[i] = 0.25f * static_cast<float>(i % 5);
    cuda::Stream stream;
    const cudaStream_t s = stream.get();
    {
        cuda::DeviceBuffer b0(floats * 4), b1(floats * 4);
        DUALITY_CUDA_CHECK(cudaMemcpy(b0.data(), init.data(), floats * 4, cudaMemcpyHostToDevice));
        DUALITY_CUDA_CHECK(cudaMemset(b1.data(), 0, b1.bytes()));
        const Link links[] = {{96, 768}, {419, 768}, {96, 384}};
        std::vector<double> want(init.begin(), init.end());
        for (int i = 0; i < 3; ++i) {
            chain_link(i % 2 ? b1.as<float>() : b0.as<float>(),
                       i % 2 ? b0.as<float>() : b1.as<float>(), links[i].blocks, links[i].reads,
                       true, s);
            want = host_link(want, links[i].blocks, links[i].reads);
        }
        DUALITY_CUDA_CHECK(cudaStreamSynchronize(s));
        std::vector<float> got(want.size());
        DUALITY_CUDA_CHECK(
            cudaMemcpy(got.data(), b1.data(), got.size() * 4, cudaMemcpyDeviceToHost));
        expect_close(got, want, "three programmatic links");
    }
    {
        constexpr int kBlocks = 96, kRounds = 3;
        const size_t half = 16 * kBlocks;
        cuda::DeviceBuffer bufs(2 * half * 4), counters(sizeof(int) * kRounds);
        DUALITY_CUDA_CHECK(cudaMemcpy(bufs.data(), init.data(), half * 4, cudaMemcpyHostToDevice));
        DUALITY_CUDA_CHECK(cudaMemset(counters.data(), 0, counters.bytes()));
        chain_persistent(bufs.as<float>(), counters.as<int>(), kBlocks, 768, kRounds, s);
        std::vector<double> want(init.begin(), init.begin() + static_cast<int64_t>(half));
        for (int r = 0; r < kRounds; ++r) want = host_link(want, kBlocks, 768);
        DUALITY_CUDA_CHECK(cudaStreamSynchronize(s));
        std::vector<float> got(half);  // round 2 wrote buffer (2 + 1) % 2 = 1
        DUALITY_CUDA_CHECK(
            cudaMemcpy(got.data(), bufs.as<float>() + half, half * 4, cudaMemcpyDeviceToHost));
        expect_close(got, want, "three persistent rounds");
    }
}

}  // namespace
}  // namespace duality::optest
