// Timing of the 2.7b decode GEMMs at 32 and 64 rows, the way the model runs them (cuda::Gemm,
// tuned, output in the activation dtype) against split-k as ONE strided-batched cuBLASLt call
// whose s batches are the k slices, each writing an f32 partial {m, n} that a consumer (the next
// add + RMSNorm) would sum: no reduction kernel, and s times the CTAs of the unsplit product.
// Weights rotate over copies worth several times the L2 cache, so each call reads HBM as in a
// step; each split's parts are checked to sum to the whole product. Disabled by default (a
// benchmark, not a test of speed); run it on a GPU with
//   duality_tests --gtest_also_run_disabled_tests --gtest_filter='GemmSplitTiming.*'
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <utility>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/device_buffer.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/lt_owners.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/timing_util.h"

namespace duality::optest {
namespace {

// Microseconds per call of f(i) (i: the call's index), after a warm-up pass of `iters` calls.
double time_us(const std::function<void(int)>& f, int iters) {
    return 1e3 * time_ms(f, iters, iters);
}

// y_s {m, n} f32 = a[:, s·k/S .. (s+1)·k/S] · w[:, same]ᵀ for s < S, as one batched call (the
// column-major view of gemm.cpp: y_sᵀ {n, m} = op(w_s) {n, k/S} · a_sᵀ {k/S, m}). Times the first
// `cands` algorithms of cuBLASLt's heuristic and returns the fastest, in µs.
double split_best(cublasLtHandle_t handle, const std::vector<cuda::DeviceBuffer>& ws, const void* a,
                  float* y, int64_t m, int64_t n, int64_t k, int S, void* work, size_t work_bytes,
                  int cands, int iters) {
    const int64_t ks = k / S;
    const lt::Desc desc = lt::desc();  // yᵀ = w · aᵀ
    cublasLtMatmulDesc_t op = desc.get();
    const lt::Layout w_layout = lt::layout(CUDA_R_16BF, ks, n, k);
    const lt::Layout a_layout = lt::layout(CUDA_R_16BF, ks, m, k);
    const lt::Layout y_layout = lt::layout(CUDA_R_32F, n, m, n);
    cublasLtMatrixLayout_t lw = w_layout.get(), la = a_layout.get(), ly = y_layout.get();
    const int32_t count = S;
    const int64_t stride_k = ks, stride_y = m * n;
    using LayoutStride = std::pair<cublasLtMatrixLayout_t, int64_t>;
    for (auto [l, stride] :
         std::initializer_list<LayoutStride>{{lw, stride_k}, {la, stride_k}, {ly, stride_y}}) {
        DUALITY_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                              &count, sizeof count));
        DUALITY_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
            l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    }
    const lt::Pref pref = lt::pref(work_bytes);
    std::vector<cublasLtMatmulHeuristicResult_t> res(static_cast<size_t>(cands));
    int found = 0;
    DUALITY_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, op, lw, la, ly, ly, pref.get(),
                                                        cands, res.data(), &found));
    double best = 1e30;
    const float alpha = 1.0f, beta = 0.0f;
    for (int c = 0; c < found; ++c) {
        const double us = time_us(
            [&](int i) {
                const void* w = ws[static_cast<size_t>(i) % ws.size()].data();
                DUALITY_CUBLAS_CHECK(cublasLtMatmul(handle, op, &alpha, w, lw, a, la, &beta, y, ly,
                                                    y, ly, &res[static_cast<size_t>(c)].algo, work,
                                                    work_bytes, nullptr));
            },
            iters);
        best = std::min(best, us);
    }
    return best;
}

TEST(GemmSplitTiming, DISABLED_DecodeShapes) {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    struct Shape {
        const char* name;
        int64_t n, k;
    };
    // The 2.7b's out_proj and the two parts of its split in_proj ([xBC | dt] and z).
    const Shape shapes[] = {
        {"out_proj", 2560, 5120}, {"in_proj xBC|dt", 5456, 2560}, {"in_proj z", 5120, 2560}};
    const lt::Handle handle = lt::handle();
    const size_t work_bytes = size_t{32} << 20;
    cuda::DeviceBuffer work(work_bytes);
    auto gemm = cuda::Gemm::create(work_bytes, cuda::Gemm::kMaxAlgos);
    ASSERT_TRUE(gemm.is_ok());
    constexpr int kIters = 64;
    for (const Shape& s : shapes) {
        // Copies worth at least 200 MB (four times the L2 cache).
        const size_t wbytes = static_cast<size_t>(s.n * s.k) * 2;
        const int copies = static_cast<int>(std::max<size_t>(4, (size_t{200} << 20) / wbytes));
        std::vector<cuda::DeviceBuffer> ws;
        std::vector<const void*> wp;
        for (int c = 0; c < copies; ++c) {
            ws.emplace_back(wbytes);
            DUALITY_CUDA_CHECK(cudaMemset(ws.back().data(), 0x3c, wbytes));  // bf16 ~0.0115
            wp.push_back(ws.back().data());
        }
        for (int64_t m : {32, 64}) {
            cuda::DeviceBuffer a(static_cast<size_t>(m * s.k) * 2);
            DUALITY_CUDA_CHECK(cudaMemset(a.data(), 0x3c, a.bytes()));
            const size_t mn = static_cast<size_t>(m * s.n);
            cuda::DeviceBuffer y(4 * mn * 4), y_whole(mn * 2);
            gemm->tune(a.data(), s.k, wp, y_whole.data(), s.n, DType::kBF16, m, s.n, s.k,
                       DType::kBF16, nullptr);
            const double base = time_us(
                [&](int i) {
                    gemm->run(a.data(), s.k, wp[static_cast<size_t>(i) % wp.size()], y_whole.data(),
                              s.n, DType::kBF16, m, s.n, s.k, DType::kBF16, nullptr);
                },
                kIters);
            const std::vector<float> whole = download_as_f32(DType::kBF16, y_whole.data(), mn);
            std::printf("%-16s m=%-3lld model (Gemm, bf16 out) %6.2f us (%4.0f GB/s)", s.name,
                        static_cast<long long>(m), base, wbytes / (base * 1e3));
            for (int S : {1, 2, 4}) {
                const double us = split_best(handle.get(), ws, a.data(), y.as<float>(), m, s.n, s.k,
                                             S, work.data(), work_bytes, 8, kIters);
                std::printf(" | split %d f32 %6.2f us", S, us);
                // What was timed is the product: its parts sum to the whole product's values
                // (bf16-rounded there; every weight copy holds the same values).
                const std::vector<float> parts =
                    download_as_f32(DType::kF32, y.data(), static_cast<size_t>(S) * mn);
                double worst = 0;
                for (size_t i = 0; i < mn; ++i) {
                    double sum = 0;
                    for (int q = 0; q < S; ++q) sum += parts[static_cast<size_t>(q) * mn + i];
                    worst = std::max(worst, std::abs(sum - whole[i]) / std::abs(whole[i]));
                }
                EXPECT_LE(worst, 1e-2) << s.name << " m=" << m << " split " << S;
            }
            std::printf("\n");
        }
    }
}

}  // namespace
}  // namespace duality::optest
