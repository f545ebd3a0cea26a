// Timing of cuda::ssd_chunked and of each of its five steps on model shapes, then of the fused
// single launch (cuda::ssd_fused: its speed-up, its fraction of the fused roofline and, for the
// head_dim-64/d_state-128 shapes, its per-phase breakdown). Not a correctness test and disabled by
// default; run it on a GPU with
//   duality_tests --gtest_also_run_disabled_tests --gtest_filter='SsdChunkedTiming.*'
// Reference (spec 10.4: mamba_ssm's Triton kernels on an H100, bf16, the 2.7B head shape):
// b1×2k 0.105 ms, b1×32k 1.65 ms, of which K5 1.07, K3 0.35, K4 0.18, K1 0.05, K2 0.04 ms.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/device_buffer.h"
#include "core/env.h"
#include "engine/roofline.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/ops.h"
#include "ops/cuda/ssd_plan.h"
#include "ops/cuda/timing_util.h"

namespace duality::optest {
namespace {

struct TimingShape {
    const char* name;
    int64_t H, P, N, G, Q, n_seq, seqlen;
    DType act;
};

template <typename T>
void time_steps(const cuda::ssd::Plan& p, double out[5], int iters) {
    out[0] = time_ms([&] { cuda::ssd::launch_chunk_cumsum(p, nullptr); }, iters);
    out[1] = time_ms([&] { cuda::ssd::launch_bmm<T>(p, nullptr); }, iters);
    out[2] = time_ms([&] { cuda::ssd::launch_chunk_state<T>(p, nullptr); }, iters);
    out[3] = time_ms([&] { cuda::ssd::launch_state_passing<float>(p, nullptr); }, iters);
    out[4] = time_ms([&] { cuda::ssd::launch_chunk_scan<T>(p, nullptr); }, iters);
}

void run_timing(const TimingShape& s) {
    const int64_t T = s.n_seq * s.seqlen, row = s.H * s.P + 2 * s.G * s.N;
    const size_t el = dtype_size(s.act);
    std::mt19937 rng(1);
    // x, B, C: a random block repeated over the conv rows.
    const std::vector<float> block = normal(rng, size_t{1} << 20);
    cuda::DeviceBuffer xbc_block = upload_as(s.act, block);
    cuda::DeviceBuffer xbc(static_cast<size_t>(T * row) * el);
    for (size_t at = 0; at < xbc.bytes(); at += xbc_block.bytes())
        DUALITY_CUDA_CHECK(cudaMemcpy(static_cast<char*>(xbc.data()) + at, xbc_block.data(),
                                      std::min(xbc_block.bytes(), xbc.bytes() - at),
                                      cudaMemcpyDeviceToDevice));
    cuda::DeviceBuffer dt = upload_f32(uniform(rng, static_cast<size_t>(T * s.H), 1e-3f, 0.1f));
    std::vector<float> A = uniform(rng, static_cast<size_t>(s.H), 1.0f, 16.0f);
    for (float& a : A) a = -a;
    cuda::DeviceBuffer dA = upload_f32(A), dD = upload_f32(std::vector<float>(s.H, 1.0f));
    cuda::DeviceBuffer state(static_cast<size_t>(s.n_seq * s.H * s.P * s.N) * sizeof(float));
    DUALITY_CUDA_CHECK(cudaMemset(state.data(), 0, state.bytes()));
    cuda::DeviceBuffer y(static_cast<size_t>(T * s.H * s.P) * el);

    std::vector<int32_t> cu{0}, slots, cstart, clen, cseq, cuc{0};
    for (int64_t q = 0; q < s.n_seq; ++q) {
        for (int64_t t0 = 0; t0 < s.seqlen; t0 += s.Q) {
            cstart.push_back(static_cast<int32_t>(q * s.seqlen + t0));
            clen.push_back(static_cast<int32_t>(std::min(s.Q, s.seqlen - t0)));
            cseq.push_back(static_cast<int32_t>(q));
        }
        cu.push_back(static_cast<int32_t>((q + 1) * s.seqlen));
        cuc.push_back(static_cast<int32_t>(cstart.size()));
        slots.push_back(static_cast<int32_t>(q));
    }
    cuda::DeviceBuffer d_cu = upload_i32(cu), d_slots = upload_i32(slots);
    cuda::DeviceBuffer d_cstart = upload_i32(cstart), d_clen = upload_i32(clen);
    cuda::DeviceBuffer d_cseq = upload_i32(cseq), d_cuc = upload_i32(cuc);

    cuda::SsdArgs a;
    a.batch.n_seq = s.n_seq;
    a.batch.n_tokens = T;
    a.batch.cu_seqlens = d_cu.as<int32_t>();
    a.batch.slots = d_slots.as<int32_t>();
    a.batch.n_chunk = static_cast<int64_t>(cstart.size());
    a.batch.chunk_start = d_cstart.as<int32_t>();
    a.batch.chunk_len = d_clen.as<int32_t>();
    a.batch.chunk_seq = d_cseq.as<int32_t>();
    a.batch.cu_chunks = d_cuc.as<int32_t>();
    a.n_head = s.H;
    a.head_dim = s.P;
    a.d_state = s.N;
    a.n_group = s.G;
    a.chunk_size = s.Q;
    const auto* base = static_cast<const char*>(xbc.data());
    a.x = base;
    a.x_stride = row;
    a.B = base + s.H * s.P * el;
    a.C = base + (s.H * s.P + s.G * s.N) * el;
    a.bc_stride = row;
    a.A = dA.as<float>();
    a.D = dD.as<float>();
    a.state = state.data();
    a.state_slot_stride = s.H * s.P * s.N;
    a.y = y.data();
    a.passed_f16 = env_is("DUALITY_SSD_PASSED_F16", "1");  // (the fused SSD only)
    const size_t ws_bytes = cuda::ssd_chunked_workspace_bytes(a);
    cuda::DeviceBuffer ws(ws_bytes);

    const int iters = 20;
    const double total =
        time_ms([&] { cuda::ssd_chunked(a, dt.as<float>(), ws.data(), s.act, nullptr); }, iters);
    cuda::ssd::Plan p;
    ASSERT_TRUE(cuda::ssd::make_plan(a, dt.as<float>(), ws.data(), s.act, &p));
    double step[5];
    switch (s.act) {
        case DType::kF32:
            time_steps<float>(p, step, iters);
            break;
        case DType::kF16:
            time_steps<__half>(p, step, iters);
            break;
        default:
            time_steps<__nv_bfloat16>(p, step, iters);
            break;
    }
    std::printf(
        "%-28s %-4s T=%-6lld total %.3f ms (%.1f ns/token) | K1 %.3f K2 %.3f K3 %.3f K4 %.3f "
        "K5 %.3f ms | workspace %.1f MB%s\n",
        s.name, std::string(dtype_name(s.act)).c_str(), static_cast<long long>(T), total,
        total * 1e6 / static_cast<double>(T), step[0], step[1], step[2], step[3], step[4],
        static_cast<double>(ws_bytes) / 1e6, p.vec ? "" : " (scalar loads)");

    // The fused single launch, and its fraction of the fused roofline (spec 10.2: x, B, C, Δ read
    // once, y written once, states read and written once) at the device's peak HBM bandwidth.
    if (!cuda::ssd_fused_supported(a, s.act)) {
        std::printf("%-28s %-4s T=%-6lld fused: unsupported here (five-step path)\n", s.name,
                    std::string(dtype_name(s.act)).c_str(), static_cast<long long>(T));
        return;
    }
    cuda::DeviceBuffer fws(cuda::ssd_fused_workspace_bytes(a));
    cuda::DeviceBuffer sync(cuda::ssd_fused_sync_bytes(a));
    DUALITY_CUDA_CHECK(cudaMemset(sync.data(), 0, sync.bytes()));
    const double fused = time_ms(
        [&] { cuda::ssd_fused(a, dt.as<float>(), fws.data(), sync.data(), s.act, nullptr); },
        iters);
    const double bytes =
        static_cast<double>(T) * (2.0 * s.H * s.P + 2.0 * s.G * s.N) * static_cast<double>(el) +
        static_cast<double>(T) * s.H * 4.0 + 2.0 * s.n_seq * s.H * s.P * s.N * 4.0;
    cudaDeviceProp prop{};
    DUALITY_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const auto peak = roofline::known_gpu_peak(prop.name);
    std::printf(
        "%-28s %-4s T=%-6lld FUSED %.3f ms (%.1f ns/token) | %.2fx vs five-step | "
        "%.0f GB/s = %s of the fused roofline on %s\n",
        s.name, std::string(dtype_name(s.act)).c_str(), static_cast<long long>(T), fused,
        fused * 1e6 / static_cast<double>(T), total / fused, bytes / (fused * 1e-3) / 1e9,
        peak ? (std::to_string(
                    static_cast<int>(100.0 * bytes / peak->bytes_per_s / (fused * 1e-3))) +
                "%")
                   .c_str()
             : "n/a",
        prop.name);

    // Phase breakdown of the fused kernel (mean µs per (chunk, head) item: a block's, or with
    // blocks of two heads each head's share of its block; see ssd::fused_profile).
    if (s.act == DType::kBF16 && s.P == 64 && s.N == 128) {
        const int64_t blocks = a.batch.n_chunk * s.H;
        cuda::DeviceBuffer stamps(static_cast<size_t>(blocks) * 8 * sizeof(uint64_t));
        cuda::ssd::fused_profile(a, dt.as<float>(), fws.data(), sync.data(), s.act,
                                 stamps.as<uint64_t>(), nullptr);
        DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<uint64_t> st(static_cast<size_t>(blocks) * 8);
        DUALITY_CUDA_CHECK(
            cudaMemcpy(st.data(), stamps.data(), stamps.bytes(), cudaMemcpyDeviceToHost));
        double sum[6] = {0, 0, 0, 0, 0, 0};
        uint64_t t_min = ~uint64_t{0}, t_max = 0;
        for (int64_t b = 0; b < blocks; ++b) {
            const uint64_t* t = &st[static_cast<size_t>(b) * 8];
            for (int k = 0; k < 5; ++k) sum[k] += static_cast<double>(t[k + 1] - t[k]);
            sum[5] += static_cast<double>(t[5] - t[0]);
            t_min = std::min(t_min, t[0]);
            t_max = std::max(t_max, t[5]);
        }
        const double n = static_cast<double>(blocks) * 1e3;
        const double span = static_cast<double>(t_max - t_min);
        std::printf(
            "%-28s PHASES (us/head) load+cumsum %.2f | chunk state %.2f | wait %.2f | "
            "publish %.2f | outputs %.2f | total %.2f | span %.3f ms, %.2f blocks "
            "in flight per SM\n",
            s.name, sum[0] / n, sum[1] / n, sum[2] / n, sum[3] / n, sum[4] / n, sum[5] / n,
            span * 1e-6, sum[5] / span / prop.multiProcessorCount);
    }
}

TEST(SsdChunkedTiming, DISABLED_ModelShapes) {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    const TimingShape shapes[] = {
        {"2.7b b1x512", 80, 64, 128, 1, 256, 1, 512, DType::kBF16},
        {"2.7b b1x2k", 80, 64, 128, 1, 256, 1, 2048, DType::kBF16},
        {"2.7b b1x8k", 80, 64, 128, 1, 256, 1, 8192, DType::kBF16},
        {"2.7b b1x32k", 80, 64, 128, 1, 256, 1, 32768, DType::kBF16},
        {"2.7b b1x8k", 80, 64, 128, 1, 256, 1, 8192, DType::kF16},
        {"2.7b b1x8k", 80, 64, 128, 1, 256, 1, 8192, DType::kF32},
        {"2.7b b16x512 (varlen)", 80, 64, 128, 1, 256, 16, 512, DType::kBF16},
        {"codestral b1x8k", 128, 64, 128, 8, 256, 1, 8192, DType::kBF16},
        {"2.7b b8x4k", 80, 64, 128, 1, 256, 8, 4096, DType::kBF16},
        {"hd80 H64 G8 b1x8k", 64, 80, 128, 8, 256, 1, 8192, DType::kBF16},
        {"2.7b Q128 b1x8k", 80, 64, 128, 1, 128, 1, 8192, DType::kBF16},
        {"2.7b Q128 b1x32k", 80, 64, 128, 1, 128, 1, 32768, DType::kBF16},
        {"2.7b Q128 b8x4k", 80, 64, 128, 1, 128, 8, 4096, DType::kBF16},
        // d_state 256 (chunks of at most 128 tokens for the fused SSD's shared memory).
        {"N256 H80 Q128 b1x8k", 80, 64, 256, 1, 128, 1, 8192, DType::kBF16},
        {"N256 H80 Q256 b1x8k", 80, 64, 256, 1, 256, 1, 8192, DType::kBF16},
    };
    for (const TimingShape& s : shapes) run_timing(s);
}

}  // namespace
}  // namespace duality::optest
