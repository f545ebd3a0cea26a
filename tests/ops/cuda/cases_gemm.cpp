// GEMM cases: Gemm::run (cuBLASLt, or the skinny kernel for m = 1) against cpu::gemm,
// in the model's real shapes, with row strides, f32 and act-typed outputs.
#include <memory>

#include "ops/cpu/ops.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

struct GemmShape {
    const char* name;
    int64_t m, n, k, lda_pad;  // lda = k + lda_pad
    bool f32_out, small_m_kernel;
};

void add_case(const GemmShape& s, DType act) {
    OpCase c;
    c.name = std::string("gemm/") + s.name + "_m" + std::to_string(s.m) +
             (s.f32_out ? "_f32out" : "") + (s.small_m_kernel ? "" : "_cublaslt") + "/" +
             std::string(dtype_name(act));
    c.tol = default_tolerance(act);
    c.run = [s, act] {
        std::mt19937 rng(static_cast<uint32_t>(s.m * 1000003 + s.n * 31 + s.k));
        const int64_t lda = s.k + s.lda_pad;
        const float scale = 1.0f / std::sqrt(static_cast<float>(s.k));
        const std::vector<float> a = rounded(act, normal(rng, static_cast<size_t>(s.m * lda)));
        const std::vector<float> w =
            rounded(act, normal(rng, static_cast<size_t>(s.n * s.k), 0.0f, scale));
        std::vector<float> expected(static_cast<size_t>(s.m * s.n));
        cpu::gemm(a.data(), lda, w.data(), nullptr, expected.data(), s.m, s.n, s.k);
        const DType y_dtype = s.f32_out ? DType::kF32 : act;
        if (!s.f32_out) expected = rounded(act, expected);
        auto da = upload_as(act, a), dw = upload_as(act, w);
        cuda::DeviceBuffer dy(static_cast<size_t>(s.m * s.n) * dtype_size(y_dtype));
        auto gemm = cuda::Gemm::create();
        if (!gemm) throw std::runtime_error(gemm.status().message());
        gemm->set_small_m_kernel(s.small_m_kernel);
        gemm->run(da.data(), lda, dw.data(), dy.data(), s.n, y_dtype, s.m, s.n, s.k, act, nullptr);
        DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
        return std::vector<Output>{
            {"y", expected, download_as_f32(y_dtype, dy.data(), static_cast<size_t>(s.m * s.n))}};
    };
    register_case(std::move(c));
}

DUALITY_OP_CASES(gemm) {
    // in_proj and out_proj of mamba2-130m and -2.7b, the 2.7b LM head (f32 logits), a tiny model.
    const GemmShape shapes[] = {
        {"in_proj_130m", 1, 3352, 768, 0, false, true},
        {"in_proj_130m", 5, 3352, 768, 0, false, true},
        {"in_proj_130m", 8, 3352, 768, 0, false, true},
        {"in_proj_130m", 64, 3352, 768, 0, false, true},
        {"in_proj_130m", 300, 3352, 768, 0, false, true},
        {"out_proj_2.7b", 1, 2560, 5120, 0, false, true},
        {"out_proj_2.7b", 3, 2560, 5120, 0, false, false},
        {"out_proj_2.7b", 257, 2560, 5120, 0, false, true},
        {"lm_head_2.7b", 1, 50288, 2560, 0, true, true},
        {"lm_head_2.7b", 7, 50288, 2560, 0, true, true},
        {"strided_a", 4, 96, 64, 40, false, true},
        {"tiny", 2, 40, 24, 0, false, true},
    };
    for (const GemmShape& s : shapes)
        for (DType act : {DType::kF32, DType::kF16, DType::kBF16}) add_case(s, act);
}

}  // namespace
}  // namespace duality::optest
