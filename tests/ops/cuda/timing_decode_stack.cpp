// Timing of cuda::decode_stack (a whole batch-1 decode step in one launch) on the 130m and 2.7b
// shapes with random bf16 weights: time per step, weight bytes per second against the device's
// HBM bandwidth, and where a block's time goes per layer (from the kernel's stage timestamps:
// each stage's work and its grid-barrier wait, the median over blocks, averaged over layers).
// Not a correctness test and disabled by default; run it on a GPU with
//   duality_tests --gtest_also_run_disabled_tests --gtest_filter='DecodeStackTiming.*'
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/device_buffer.h"
#include "ops/cuda/kern_util.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/ops.h"

namespace duality::optest {
namespace {

struct StackTimingShape {
    const char* name;
    int64_t d_model, n_layer, n_head, head_dim, d_state, n_group, vocab;
};

TEST(DecodeStackTiming, DISABLED_ModelShapes) {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    ASSERT_TRUE(cuda::decode_stack_available()) << "decode_stack needs a Hopper GPU (sm_90 code)";
    const StackTimingShape shapes[] = {{"130m", 768, 24, 24, 64, 128, 1, 50288},
                                       {"2.7b", 2560, 64, 80, 64, 128, 1, 50288}};
    for (const StackTimingShape& sh : shapes) {
        const int64_t D = sh.d_model, H = sh.n_head, P = sh.head_dim, N = sh.d_state,
                      G = sh.n_group, L = sh.n_layer, W = 4;
        const int64_t E = H * P, conv_dim = E + 2 * G * N, n_in = E + conv_dim + H;
        const DType act = DType::kBF16;
        uint64_t seed = 1;
        auto bf16 = [&](int64_t n, float scale) {
            cuda::DeviceBuffer b(static_cast<size_t>(n) * 2);
            cuda::fill_uniform(b.data(), n, act, seed++, -scale, scale, nullptr);
            return b;
        };
        auto f32 = [&](int64_t n, float lo, float hi) {
            cuda::DeviceBuffer b(static_cast<size_t>(n) * 4);
            cuda::fill_uniform(b.data(), n, DType::kF32, seed++, lo, hi, nullptr);
            return b;
        };
        cuda::DeviceBuffer in_proj = bf16(L * n_in * D, 0.02f), out_proj = bf16(L * D * E, 0.02f);
        cuda::DeviceBuffer norm = f32(L * D, 0.9f, 1.1f),
                           conv_w = f32(L * conv_dim * W, -0.5f, 0.5f);
        cuda::DeviceBuffer dt_bias = f32(L * H, -4.0f, -1.0f), A = f32(L * H, -8.0f, -1.0f);
        cuda::DeviceBuffer Dv = f32(L * H, 0.5f, 1.5f), gate = f32(L * E, 0.9f, 1.1f);
        cuda::DeviceBuffer emb = bf16(sh.vocab * D, 1.0f), head = bf16(sh.vocab * D, 0.02f);
        cuda::DeviceBuffer norm_f = f32(D, 0.9f, 1.1f);
        std::vector<cuda::DeviceLayer> layers;
        for (int64_t l = 0; l < L; ++l)
            layers.push_back({norm.as<float>() + l * D, in_proj.as<char>() + l * n_in * D * 2,
                              nullptr, conv_w.as<float>() + l * conv_dim * W, nullptr,
                              dt_bias.as<float>() + l * H, A.as<float>() + l * H,
                              Dv.as<float>() + l * H, gate.as<float>() + l * E,
                              out_proj.as<char>() + l * D * E * 2, nullptr});
        cuda::DeviceBuffer d_layers(layers.size() * sizeof(cuda::DeviceLayer));
        cuda::upload(d_layers.data(), layers.data(), d_layers.bytes());
        cuda::DeviceBuffer conv_state(static_cast<size_t>(L * (W - 1) * conv_dim) * 4);
        cuda::DeviceBuffer ssm_state(static_cast<size_t>(L * H * P * N) * 4);
        DUALITY_CUDA_CHECK(cudaMemset(conv_state.data(), 0, conv_state.bytes()));
        DUALITY_CUDA_CHECK(cudaMemset(ssm_state.data(), 0, ssm_state.bytes()));
        cuda::DeviceBuffer zx(static_cast<size_t>(n_in) * 2), res(static_cast<size_t>(D) * 4),
            v(static_cast<size_t>(E) * 4), ssq(static_cast<size_t>(H * P / 16) * 4),
            logits(static_cast<size_t>(sh.vocab) * 4), sync(cuda::decode_stack_sync_bytes());
        DUALITY_CUDA_CHECK(cudaMemset(sync.data(), 0, sync.bytes()));
        const std::vector<int32_t> tok = {7}, slot = {0};
        cuda::DeviceBuffer d_tok = upload_i32(tok), d_slot = upload_i32(slot);
        const int grid = cuda::decode_stack_grid();
        cuda::DeviceBuffer prof(static_cast<size_t>((L + 1) * 8 * grid) * 8);

        cuda::DecodeStackArgs a = stack_shape(L, D, H, P, N, G, W, sh.vocab);
        a.layers = d_layers.as<cuda::DeviceLayer>();
        a.embedding = emb.data();
        a.head = head.data();
        a.norm_f = norm_f.as<float>();
        a.token = d_tok.as<int32_t>();
        a.slot = d_slot.as<int32_t>();
        a.conv_state = conv_state.as<float>();
        a.ssm_state = ssm_state.as<float>();
        a.zxbcdt = zx.data();
        a.residual = res.as<float>();
        a.v = v.as<float>();
        a.ssq = ssq.as<float>();
        a.logits = logits.as<float>();
        a.sync = sync.as<uint32_t>();
        ASSERT_TRUE(cuda::decode_stack_supported(a, layers, act, DType::kF32));
        cudaEvent_t e0, e1;
        DUALITY_CUDA_CHECK(cudaEventCreate(&e0));
        DUALITY_CUDA_CHECK(cudaEventCreate(&e1));
        const double bytes = 2.0 * (L * (n_in * D + D * E) + sh.vocab * D);
        // The default, then other distances of the producer's L2 requests ahead of its ring,
        // then grids of half and a quarter of the SMs (fewer blocks at each barrier).
        struct Variant {
            int ahead, blocks;
        };
        for (const Variant var : {Variant{-1, 0}, Variant{4, 0}, Variant{12, 0},
                                  Variant{-1, grid / 2}, Variant{-1, grid / 4}}) {
            a.l2_ahead = var.ahead;
            a.blocks = var.blocks;
            for (int i = 0; i < 3; ++i) cuda::decode_stack(a, act, nullptr);
            DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
            constexpr int kIters = 20;
            DUALITY_CUDA_CHECK(cudaEventRecord(e0));
            for (int i = 0; i < kIters; ++i) cuda::decode_stack(a, act, nullptr);
            DUALITY_CUDA_CHECK(cudaEventRecord(e1));
            DUALITY_CUDA_CHECK(cudaEventSynchronize(e1));
            float ms = 0;
            DUALITY_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
            ms /= kIters;
            std::printf(
                "decode_stack %s (L2 ahead %d): %.3f ms per step, %.0f GB/s of weights (%d "
                "blocks)\n",
                sh.name, var.ahead, ms, bytes / (ms * 1e-3) / 1e9,
                cuda::decode_stack_grid(var.blocks));
        }
        a.l2_ahead = -1;
        a.blocks = 0;

        a.profile = prof.as<uint64_t>();
        cuda::decode_stack(a, act, nullptr);
        DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<uint64_t> t(static_cast<size_t>((L + 1) * 8 * grid));
        cuda::download(t.data(), prof.data(), t.size() * 8);
        auto at = [&](int64_t l, int k, int b) {
            return static_cast<double>(t[static_cast<size_t>((l * 8 + k) * grid + b)]);
        };
        // Per layer: median over blocks of each interval, then the mean over layers (µs).
        const char* names[] = {"norm",      "in_proj",   "barrier A", "SSM step",
                               "barrier B", "gate+conv", "out_proj",  "barrier C"};
        double sum[8] = {};
        for (int64_t l = 0; l < L; ++l)
            for (int k = 0; k < 8; ++k) {
                std::vector<double> d;
                for (int b = 0; b < grid; ++b) {
                    const double end = k < 7 ? at(l, k + 1, b) : at(l + 1, 0, b);
                    d.push_back((end - at(l, k, b)) * 1e-3);
                }
                std::nth_element(d.begin(), d.begin() + grid / 2, d.end());
                sum[k] += d[static_cast<size_t>(grid / 2)];
            }
        std::printf("  per layer (µs, median block):");
        for (int k = 0; k < 8; ++k) std::printf(" %s %.2f", names[k], sum[k] / L);
        double first = at(0, 0, 0), last = 0;
        for (int b = 0; b < grid; ++b) {
            first = std::min(first, at(0, 0, b));
            last = std::max(last, at(L, 2, b));
        }
        std::printf("\n  head: norm %.2f µs, GEMV %.2f µs (block 0); stamps span %.1f µs\n",
                    (at(L, 1, 0) - at(L, 0, 0)) * 1e-3, (at(L, 2, 0) - at(L, 1, 0)) * 1e-3,
                    (last - first) * 1e-3);
    }
}

}  // namespace
}  // namespace duality::optest
