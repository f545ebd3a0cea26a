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
#include <tuple>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/device_buffer.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/lt_owners.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/timing_util.h"

namespace duality::optest {
namespace {

enum class Form {
    kPlain,      // yᵀ = w · aᵀ (column-major view), no scale
    kOuterVec,   // the same with r as B's outer-vector scale
    kAlphaRows,  // y = a · wᵀ with D in row order, r as a per-row alpha vector
};

// D {m, n} f32 = [r ⊙] a {m, k} · w {n, k}ᵀ + D (the residual, in place) in one Form: its
// descriptor, layouts and cuBLASLt's candidates, built once. `status` is what cuBLASLt said to the
// form's attributes or its heuristic; `found` how many candidates it offered.
class ResidualProduct {
  public:
    ResidualProduct(cublasLtHandle_t handle, const void* w, const void* a, float* d, const float* r,
                    Form form, int64_t m, int64_t n, int64_t k, void* work, size_t work_bytes)
        : handle_(handle),
          d_(d),
          work_(work),
          work_bytes_(work_bytes),
          desc_(lt::desc()),
          lw_(lt::layout(CUDA_R_16BF, k, n, k)),
          la_(lt::layout(CUDA_R_16BF, k, m, k)),
          // D {m, n} in row order for kAlphaRows, else the column-major {n, m} of gemm.cpp.
          ld_(form == Form::kAlphaRows ? lt::layout(CUDA_R_32F, m, n, n)
                                       : lt::layout(CUDA_R_32F, n, m, n)) {
        cublasLtMatmulDesc_t op = desc_.get();
        alpha_ = &one_;
        if (form == Form::kAlphaRows) {
            const int32_t mode = CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST;
            status = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_POINTER_MODE, &mode,
                                                    sizeof mode);
            const int32_t order = CUBLASLT_ORDER_ROW;
            DUALITY_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
                ld_.get(), CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order));
            alpha_ = r;
        }
        if (form == Form::kOuterVec) {
            // Both sides take the mode: A's vector (the weight's rows) is ones.
            ones_ = upload_f32(std::vector<float>(static_cast<size_t>(n), 1.0f));
            const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
            const void* pa = ones_.data();
            const void* pb = r;
            for (auto [attr, value, size] :
                 {std::tuple{CUBLASLT_MATMUL_DESC_A_SCALE_MODE, static_cast<const void*>(&mode),
                             sizeof mode},
                  std::tuple{CUBLASLT_MATMUL_DESC_B_SCALE_MODE, static_cast<const void*>(&mode),
                             sizeof mode},
                  std::tuple{CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(&pa),
                             sizeof pa},
                  std::tuple{CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(&pb),
                             sizeof pb}})
                if (status == CUBLAS_STATUS_SUCCESS)
                    status = cublasLtMatmulDescSetAttribute(op, attr, value, size);
        }
        // kAlphaRows computes a · wᵀ: its A is a ({k, m} column-major, transposed), its B w.
        const bool rows = form == Form::kAlphaRows;
        a_op_ = rows ? a : w;
        b_op_ = rows ? w : a;
        la_op_ = rows ? la_.get() : lw_.get();
        lb_op_ = rows ? lw_.get() : la_.get();
        if (status != CUBLAS_STATUS_SUCCESS) return;
        const lt::Pref pref = lt::pref(work_bytes);
        status = cublasLtMatmulAlgoGetHeuristic(handle, op, la_op_, lb_op_, ld_.get(), ld_.get(),
                                                pref.get(), kCands, res_, &found);
    }

    // One call of candidate c.
    cublasStatus_t run(int c) const {
        const float beta = 1.0f;
        return cublasLtMatmul(handle_, desc_.get(), alpha_, a_op_, la_op_, b_op_, lb_op_, &beta, d_,
                              ld_.get(), d_, ld_.get(), &res_[c].algo, work_, work_bytes_, nullptr);
    }
    // The fastest candidate's µs per call (`iters` calls each, after two).
    double fastest_us(int iters) const {
        double best = 1e30;
        for (int c = 0; c < found; ++c) {
            cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
            const double ms = time_ms(
                [&](int) {
                    if (st == CUBLAS_STATUS_SUCCESS) st = run(c);
                },
                iters, 2);
            if (st == CUBLAS_STATUS_SUCCESS) best = std::min(best, 1e3 * ms);
        }
        return best;
    }

    cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
    int found = 0;

  private:
    static constexpr int kCands = 8;
    cublasLtHandle_t handle_;
    float* d_;
    void* work_;
    size_t work_bytes_;
    lt::Desc desc_;
    lt::Layout lw_, la_, ld_;
    cuda::DeviceBuffer ones_;
    const float one_ = 1.0f;
    const void* alpha_ = nullptr;
    const void *a_op_ = nullptr, *b_op_ = nullptr;
    cublasLtMatrixLayout_t la_op_ = nullptr, lb_op_ = nullptr;
    cublasLtMatmulHeuristicResult_t res_[kCands] = {};
};

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
    const cuda::DeviceBuffer res0 = upload_f32(res_h);  // the residual every form starts from
    cuda::DeviceBuffer d(res0.bytes());
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
    const auto reset = [&] {
        DUALITY_CUDA_CHECK(cudaMemcpy(d.data(), res0.data(), d.bytes(), cudaMemcpyDeviceToDevice));
    };
    for (const Form form : {Form::kPlain, Form::kOuterVec, Form::kAlphaRows}) {
        const bool scaled = form != Form::kPlain;
        const char* name = form == Form::kPlain      ? ""
                           : form == Form::kOuterVec ? ", r as B's outer-vector scale"
                                                     : ", r as a row alpha vector, D row order";
        const ResidualProduct p(handle.get(), w.data(), a.data(), d.as<float>(),
                                scaled ? r.as<float>() : nullptr, form, m, n, k, work.data(),
                                work_bytes);
        std::printf("  f32 out, C = D = residual%s: status %d, %d candidates", name,
                    static_cast<int>(p.status), p.found);
        if (form == Form::kPlain) {
            // The unscaled form is what gemm.cpp's f32-output products already use: it must exist.
            EXPECT_EQ(p.status, CUBLAS_STATUS_SUCCESS);
            EXPECT_GT(p.found, 0);
        }
        if (p.status != CUBLAS_STATUS_SUCCESS || p.found == 0) {
            std::printf("\n");
            continue;
        }
        // One call from the original residual, checked against the model's product:
        // d − residual = [r ⊙] h, h rounded to bf16 there (a relative bound on the whole).
        reset();
        ASSERT_EQ(p.run(0), CUBLAS_STATUS_SUCCESS);
        const std::vector<float> got = download_as_f32(DType::kF32, d.data(), h.size());
        double err = 0, ref = 0;
        for (size_t i = 0; i < h.size(); ++i) {
            const double want = res_h[i] + (scaled ? r_h[i / static_cast<size_t>(n)] : 1.0f) * h[i];
            err += (got[i] - want) * (got[i] - want);
            ref += want * want;
        }
        std::printf(", rel_l2 %.2e", std::sqrt(err / ref));
        EXPECT_LE(std::sqrt(err / ref), 1e-2) << name;
        // Time: every call adds the product again (values grow; the time does not care).
        reset();
        const double us = p.fastest_us(kIters);
        std::printf(", fastest %7.1f us (%4.0f TFLOP/s)\n", us, flop / (us * 1e6));
    }
}

}  // namespace
}  // namespace duality::optest
