// Timing of the 2.7b prefill out_proj (8k rows) the way the model runs it (cuda::Gemm, output in
// bf16, which add + RMSNorm then adds to the f32 residual with the gate's row scale r) against
// cuBLASLt forms that would do the residual add in the GEMM's epilogue: D f32 = r ⊙ (a · wᵀ) + 1 ·
// residual, written in place over the residual (C = D), so that the norm after it reads 6 bytes an
// element instead of 12. r is per token: in gemm.cpp's column-major view (yᵀ = w · aᵀ) the
// tokens are the columns, so r is B's outer-vector scale
// (CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F), which cuBLASLt may or may not offer for bf16; the
// test prints what its heuristic returns. Each timed form is checked against the model's product.
// Disabled by default (a benchmark); run it on a GPU with
//   duality_tests --gtest_also_run_disabled_tests --gtest_filter='GemmResidualTiming.*'
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/device_buffer.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/lt_owners.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/timing_util.h"

namespace duality::optest {
namespace {

struct Probe {
    int found = 0;
    double us = 0;  // the fastest candidate's time
    cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
};

enum class Form {
    kPlain,      // yᵀ = w · aᵀ (column-major view), no scale
    kOuterVec,   // the same with r as B's outer-vector scale
    kAlphaRows,  // y = a · wᵀ with D in row order, r as a per-row alpha vector
};

// D {m, n} f32 = [r ⊙] a {m, k} · w {n, k}ᵀ + residual, in place (see Form). iters == 0: one
// untimed call of the first candidate.
Probe fused_residual(cublasLtHandle_t handle, const void* w, const void* a, float* d,
                     const float* r, Form form, int64_t m, int64_t n, int64_t k, void* work,
                     size_t work_bytes, int iters) {
    Probe p;
    const lt::Desc desc = lt::desc();
    cublasLtMatmulDesc_t op = desc.get();
    if (form == Form::kAlphaRows) {
        const int32_t mode = CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST;
        p.status = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_POINTER_MODE, &mode,
                                                  sizeof mode);
        if (p.status != CUBLAS_STATUS_SUCCESS) return p;
    }
    // A float vector of ones for A's side when B takes an outer-vector scale (both sides then
    // use the same mode).
    std::vector<float> ones(static_cast<size_t>(n), 1.0f);
    cuda::DeviceBuffer ones_dev = upload_f32(ones);
    if (form == Form::kOuterVec) {
        const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
        const void* pa = ones_dev.data();
        const void* pb = r;
        p.status = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode,
                                                  sizeof mode);
        if (p.status == CUBLAS_STATUS_SUCCESS)
            p.status = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode,
                                                      sizeof mode);
        if (p.status == CUBLAS_STATUS_SUCCESS)
            p.status = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &pa,
                                                      sizeof pa);
        if (p.status == CUBLAS_STATUS_SUCCESS)
            p.status = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &pb,
                                                      sizeof pb);
        if (p.status != CUBLAS_STATUS_SUCCESS) return p;
    }
    const lt::Layout lw = lt::layout(CUDA_R_16BF, k, n, k), la = lt::layout(CUDA_R_16BF, k, m, k);
    // D {m, n} in row order for kAlphaRows, else the column-major {n, m} of gemm.cpp's view.
    const lt::Layout ld = form == Form::kAlphaRows ? lt::layout(CUDA_R_32F, m, n, n)
                                                   : lt::layout(CUDA_R_32F, n, m, n);
    if (form == Form::kAlphaRows) {
        const int32_t order = CUBLASLT_ORDER_ROW;
        DUALITY_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
            ld.get(), CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order));
    }
    // kAlphaRows computes a · wᵀ: its A is a ({k, m} column-major, transposed), its B w.
    const void* pa_op = form == Form::kAlphaRows ? a : w;
    const void* pb_op = form == Form::kAlphaRows ? w : a;
    cublasLtMatrixLayout_t la_op = form == Form::kAlphaRows ? la.get() : lw.get();
    cublasLtMatrixLayout_t lb_op = form == Form::kAlphaRows ? lw.get() : la.get();
    const lt::Pref pref = lt::pref(work_bytes);
    constexpr int kCands = 8;
    cublasLtMatmulHeuristicResult_t res[kCands] = {};
    p.status = cublasLtMatmulAlgoGetHeuristic(handle, op, la_op, lb_op, ld.get(), ld.get(),
                                              pref.get(), kCands, res, &p.found);
    const float one = 1.0f, beta = 1.0f;
    const void* alpha = form == Form::kAlphaRows ? static_cast<const void*>(r) : &one;
    double best = 1e30;
    if (iters == 0 && p.found > 0 && p.status == CUBLAS_STATUS_SUCCESS) {  // one call, untimed
        p.status = cublasLtMatmul(handle, op, alpha, pa_op, la_op, pb_op, lb_op, &beta, d, ld.get(),
                                  d, ld.get(), &res[0].algo, work, work_bytes, nullptr);
        DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
    }
    for (int c = 0; iters > 0 && c < p.found && p.status == CUBLAS_STATUS_SUCCESS; ++c) {
        cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
        const double ms = time_ms(
            [&](int) {
                if (st == CUBLAS_STATUS_SUCCESS)
                    st = cublasLtMatmul(handle, op, alpha, pa_op, la_op, pb_op, lb_op, &beta, d,
                                        ld.get(), d, ld.get(), &res[c].algo, work, work_bytes,
                                        nullptr);
            },
            iters, 2);
        if (st == CUBLAS_STATUS_SUCCESS) best = std::min(best, 1e3 * ms);
    }
    p.us = best;
    return p;
}

TEST(GemmResidualTiming, DISABLED_PrefillOutProj) {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    const int64_t m = 8192, n = 2560, k = 5120;  // the 2.7b's out_proj at 8k tokens
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    auto randn = [&](size_t count, float scale) {
        std::vector<float> v(count);
        for (float& x : v) x = scale * dist(rng);
        return v;
    };
    const std::vector<float> w_h = randn(static_cast<size_t>(n * k), 0.02f);
    const std::vector<float> a_h = randn(static_cast<size_t>(m * k), 1.0f);
    const std::vector<float> res_h = randn(static_cast<size_t>(m * n), 1.0f);
    std::vector<float> r_h(static_cast<size_t>(m));
    for (size_t i = 0; i < r_h.size(); ++i) r_h[i] = 0.5f + static_cast<float>(i % 7) * 0.25f;
    cuda::DeviceBuffer w = upload_as(DType::kBF16, w_h);
    cuda::DeviceBuffer a = upload_as(DType::kBF16, a_h);
    cuda::DeviceBuffer r = upload_f32(r_h);
    cuda::DeviceBuffer d = upload_f32(res_h);
    cuda::DeviceBuffer y(static_cast<size_t>(m * n) * 2);
    const size_t work_bytes = size_t{32} << 20;
    cuda::DeviceBuffer work(work_bytes);
    const lt::Handle handle = lt::handle();
    auto gemm = cuda::Gemm::create(work_bytes, cuda::Gemm::kMaxAlgos);
    ASSERT_TRUE(gemm.is_ok());
    constexpr int kIters = 20;
    const double base = 1e3 * time_ms(
                                  [&](int) {
                                      gemm->run(a.data(), k, w.data(), y.data(), n, DType::kBF16, m,
                                                n, k, DType::kBF16, nullptr);
                                  },
                                  kIters, 2);
    const std::vector<float> h =
        download_as_f32(DType::kBF16, y.data(), static_cast<size_t>(m * n));
    const double flop = 2.0 * m * n * k;
    std::printf("out_proj 8192x2560x5120: model (Gemm, bf16 out) %7.1f us (%4.0f TFLOP/s)\n", base,
                flop / (base * 1e6));
    for (const Form form : {Form::kPlain, Form::kOuterVec, Form::kAlphaRows}) {
        const bool scaled = form != Form::kPlain;
        const char* name = form == Form::kPlain      ? ""
                           : form == Form::kOuterVec ? ", r as B's outer-vector scale"
                                                     : ", r as a row alpha vector, D row order";
        DUALITY_CUDA_CHECK(
            cudaMemcpy(d.data(), upload_f32(res_h).data(), d.bytes(), cudaMemcpyDeviceToDevice));
        const Probe p = fused_residual(handle.get(), w.data(), a.data(), d.as<float>(),
                                       scaled ? r.as<float>() : nullptr, form, m, n, k, work.data(),
                                       work_bytes, 1);
        std::printf("  f32 out, C = D = residual%s: status %d, %d candidates", name,
                    static_cast<int>(p.status), p.found);
        if (p.status != CUBLAS_STATUS_SUCCESS || p.found == 0) {
            std::printf("\n");
            continue;
        }
        // One call from the original residual, checked against the model's product:
        // d − residual = [r ⊙] h, h rounded to bf16 there (a relative bound on the whole).
        DUALITY_CUDA_CHECK(
            cudaMemcpy(d.data(), upload_f32(res_h).data(), d.bytes(), cudaMemcpyDeviceToDevice));
        const Probe once = fused_residual(handle.get(), w.data(), a.data(), d.as<float>(),
                                          scaled ? r.as<float>() : nullptr, form, m, n, k,
                                          work.data(), work_bytes, 0);
        ASSERT_EQ(once.status, CUBLAS_STATUS_SUCCESS);
        const std::vector<float> got = download_as_f32(DType::kF32, d.data(), h.size());
        double err = 0, ref = 0;
        for (size_t i = 0; i < h.size(); ++i) {
            const double want = res_h[i] + (scaled ? r_h[i / static_cast<size_t>(n)] : 1.0f) * h[i];
            err += (got[i] - want) * (got[i] - want);
            ref += want * want;
        }
        std::printf(", rel_l2 %.2e", std::sqrt(err / ref));
        EXPECT_LE(std::sqrt(err / ref), 1e-2) << name;
        DUALITY_CUDA_CHECK(
            cudaMemcpy(d.data(), upload_f32(res_h).data(), d.bytes(), cudaMemcpyDeviceToDevice));
        // Time: every call adds the product again (values grow; the time does not care).
        const Probe timed = fused_residual(handle.get(), w.data(), a.data(), d.as<float>(),
                                           scaled ? r.as<float>() : nullptr, form, m, n, k,
                                           work.data(), work_bytes, kIters);
        std::printf(", fastest %7.1f us (%4.0f TFLOP/s)\n", timed.us, flop / (timed.us * 1e6));
    }
}

}  // namespace
}  // namespace duality::optest
