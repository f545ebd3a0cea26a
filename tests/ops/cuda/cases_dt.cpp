// Op-test cases: cuda::dt_softplus against cpu::dt_softplus.
//
// Tolerance: Δ is f32 on both sides and computed from identically rounded inputs, so only
// expf/log1pf ulp differences remain whatever the act dtype: the f32 tolerance applies to every
// case. Raw values span both sides of the softplus threshold (20) and the clamp bounds.
#include <cmath>
#include <cstdio>
#include <limits>

#include "ops/cpu/ops.h"
#include "ops/cuda/kern_util.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

void dt_case(int64_t rows, int64_t n_head, int64_t raw_stride, float dt_min, float dt_max,
             const char* limit, DType act) {
    char name[160];
    std::snprintf(name, sizeof name, "dt_softplus/r%lld_h%lld_s%lld_%s/%s",
                  static_cast<long long>(rows), static_cast<long long>(n_head),
                  static_cast<long long>(raw_stride), limit, dt_name(act).c_str());
    register_case(
        {name, default_tolerance(DType::kF32), [=] {
             std::mt19937 rng(static_cast<uint32_t>(rows * 13 + n_head));
             std::vector<float> raw =
                 uniform(rng, static_cast<size_t>(rows * raw_stride), -30.0f, 30.0f);
             // Values at and around the threshold and the clamp bounds.
             const float special[] = {20.0f, 19.99f, 20.01f, 0.0f, -20.0f,
                                      25.0f, -6.9f,  -2.25f, 4.6f};
             for (size_t i = 0; i < std::size(special) && i < raw.size(); ++i)
                 raw[i * static_cast<size_t>(raw_stride) % raw.size()] = special[i];
             raw = rounded(act, raw);
             const std::vector<float> bias = uniform(rng, static_cast<size_t>(n_head), -4.0f, 0.5f);
             std::vector<float> expected(static_cast<size_t>(rows * n_head));
             cpu::dt_softplus(raw.data(), raw_stride, bias.data(), dt_min, dt_max, expected.data(),
                              rows, n_head);

             cuda::DeviceBuffer d_raw = upload_as(act, raw), d_b = upload_f32(bias);
             cuda::DeviceBuffer d_dt(expected.size() * sizeof(float));
             cuda::dt_softplus(d_raw.data(), raw_stride, d_b.as<float>(), dt_min, dt_max,
                               d_dt.as<float>(), rows, n_head, act, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             return std::vector<Output>{
                 {"dt", expected, download_as_f32(DType::kF32, d_dt.data(), expected.size())}};
         }});
}

DUALITY_OP_CASES(dt) {
    const float inf = std::numeric_limits<float>::infinity();
    for (DType act : kActs) {
        dt_case(1, 24, 3352, 0.0f, inf, "nolimit", act);     // 130m decode row of zxbcdt
        dt_case(300, 80, 10576, 0.0f, inf, "nolimit", act);  // 2.7b prefill
        dt_case(64, 128, 131, 1e-3f, 0.1f, "clamp", act);    // both bounds bite
        dt_case(7, 5, 5, 0.05f, 5.0f, "clamp2", act);        // dense, odd
    }
}

}  // namespace
}  // namespace duality::optest
