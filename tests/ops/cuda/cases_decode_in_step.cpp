// Op-test cases: cuda::decode_in_step (a batch-1 layer's in_proj, conv and step in one launch)
// against the CPU ops of the kernel chain it replaces, composed: cpu::gemm (the whole in_proj
// row, times the RowScale factor, rounded to act as zxbcdt), cpu::conv1d_causal on xBC's channels
// (rounded to act as xbc), cpu::dt_softplus, cpu::ssd_sequential over one token, and
// cpu::gate_partials. Then gemv_fused's residual form with the commit (out_proj's, which shifts
// the B and C windows that decode_in_step leaves pending) on a separate product.
//
// Checked: v·w; each partial Σ v² over 8 channels (its square root, against the CPU's v = g / w
// summed in double); the SSM state pool (slot 2 of 4; the others must stay as they were); the
// conv state pool after decode_in_step (x's windows shifted, B's and C's not yet) and bc_raw (B's
// and C's raw values); and the conv state pool after the commit, against conv1d's.
//
// Shapes (d_model, n_head, d_state, n_group; head_dim 64): the 130m's (768, 24, 128, 1), the
// bundled model's (256, 8, 128, 1), two groups at d_state 64 (512, 16, 64, 2) and d_state 256
// (256, 8, 256, 1); with and without an input scale. bf16 only (the op's limit); on GPUs before
// Hopper the op is unsupported and the cases check only that decode_in_step_supported says so.
//
// Tolerance: default_tolerance(bf16): the same rounded inputs on both sides; the kernel's dot
// order differs from cpu::gemm's, which may move a rounding to bf16 by one ulp.
#include <cmath>
#include <cstdio>
#include <numeric>
#include <stdexcept>

#include "core/cuda/check.h"
#include "ops/cpu/ops.h"
#include "ops/cuda/gemm_small_m.h"
#include "ops/cuda/kern_util.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

constexpr float kEps = 1e-5f;
constexpr DType kAct = DType::kBF16;

struct InStepShape {
    int64_t d_model, n_head, d_state, n_group;
};

void in_step_case(const InStepShape& sh, bool scaled, uint32_t seed) {
    char name[160];
    std::snprintf(name, sizeof name, "decode_in_step/k%lld_h%lld_n%lld_g%lld%s/bf16",
                  static_cast<long long>(sh.d_model), static_cast<long long>(sh.n_head),
                  static_cast<long long>(sh.d_state), static_cast<long long>(sh.n_group),
                  scaled ? "_scaled" : "");
    register_case(
        {name, default_tolerance(kAct), [=] {
             std::mt19937 rng(seed);
             constexpr int64_t P = 64, W = 4, kSlots = 4, kSlot = 2;
             const int64_t K = sh.d_model, H = sh.n_head, N = sh.d_state, G = sh.n_group;
             const int64_t E = H * P, GN = G * N, cd = E + 2 * GN, n_in = 2 * E + 2 * GN + H;
             const int64_t conv_stride = (W - 1) * cd + 8, ssm_stride = H * P * N + 16;

             const std::vector<float> u = rounded(kAct, normal(rng, static_cast<size_t>(K)));
             const std::vector<float> w_in =
                 rounded(kAct, normal(rng, static_cast<size_t>(n_in * K), 0.0f,
                                      1.0f / std::sqrt(static_cast<float>(K))));
             const std::vector<float> parts = uniform(rng, 40, 0.5f, 3.0f);
             const std::vector<float> conv_w = normal(rng, static_cast<size_t>(cd * W), 0.0f, 0.5f);
             const std::vector<float> conv_b = normal(rng, static_cast<size_t>(cd), 0.0f, 0.2f);
             const std::vector<float> conv_pool0 =
                 normal(rng, static_cast<size_t>(kSlots * conv_stride));
             const std::vector<float> ssm_pool0 =
                 normal(rng, static_cast<size_t>(kSlots * ssm_stride), 0.0f, 0.5f);
             std::vector<float> dt_bias(static_cast<size_t>(H)), A(static_cast<size_t>(H));
             const std::vector<float> D = normal(rng, static_cast<size_t>(H), 1.0f, 0.1f);
             std::uniform_real_distribution<float> dt0(1e-3f, 0.1f), a_log(0.0f, std::log(16.0f));
             for (int64_t h = 0; h < H; ++h) {
                 dt_bias[static_cast<size_t>(h)] = std::log(std::expm1(dt0(rng)));
                 A[static_cast<size_t>(h)] = -std::exp(a_log(rng));
             }
             const std::vector<float> gate_w = uniform(rng, static_cast<size_t>(E), 0.7f, 1.3f);

             // CPU: zxbcdt = act(s · u · w_inᵀ); xbc = act(conv1d(xBC)); Δ; the step; the gate.
             std::vector<float> zx(static_cast<size_t>(n_in));
             cpu::gemm(u.data(), K, w_in.data(), nullptr, zx.data(), 1, n_in, K);
             if (scaled) {
                 const double sum = std::accumulate(parts.begin(), parts.end(), 0.0);
                 const float s = 1.0f / std::sqrt(static_cast<float>(sum) / 80.0f + kEps);
                 for (float& v : zx) v *= s;
             }
             zx = rounded(kAct, zx);
             std::vector<float> conv_pool = conv_pool0, xbc(static_cast<size_t>(cd));
             Conv1dParams cp;
             cp.seqlen = 1;
             cp.channels = cd;
             cp.width = W;
             cp.x = zx.data() + E;
             cp.x_stride = n_in;
             cp.weight = conv_w.data();
             cp.bias = conv_b.data();
             cp.state = conv_pool.data() + kSlot * conv_stride;
             cp.out = xbc.data();
             cpu::conv1d_causal(cp, 1);
             xbc = rounded(kAct, xbc);
             std::vector<float> dt(static_cast<size_t>(H));
             cpu::dt_softplus(zx.data() + E + cd, n_in, dt_bias.data(), 0.0f, INFINITY, dt.data(),
                              1, H);
             std::vector<float> ssm_pool = ssm_pool0, y(static_cast<size_t>(E));
             SsdParams p;
             p.seqlen = 1;
             p.n_head = H;
             p.head_dim = P;
             p.d_state = N;
             p.n_group = G;
             p.x = xbc.data();
             p.x_stride = cd;
             p.B = xbc.data() + E;
             p.C = xbc.data() + E + GN;
             p.bc_stride = cd;
             p.dt = dt.data();
             p.A = A.data();
             p.D = D.data();
             p.state = ssm_pool.data() + kSlot * ssm_stride;
             p.y = y.data();
             cpu::ssd_sequential(p, kCpuThreads);
             std::vector<float> g(static_cast<size_t>(E)), head_ssq(static_cast<size_t>(H));
             cpu::gate_partials(y.data(), zx.data(), n_in, gate_w.data(), g.data(), head_ssq.data(),
                                1, H, P);
             // After decode_in_step alone: x's windows shifted, B's and C's as they were.
             std::vector<float> conv_pending = conv_pool;
             for (int64_t r = 0; r < W - 1; ++r)
                 for (int64_t c = E; c < cd; ++c) {
                     const size_t i = static_cast<size_t>(kSlot * conv_stride + r * cd + c);
                     conv_pending[i] = conv_pool0[i];
                 }
             const std::vector<float> bc_raw(zx.begin() + E, zx.begin() + cd);

             const std::vector<int32_t> slot{static_cast<int32_t>(kSlot)};
             auto d_slot = upload_i32(slot);
             auto d_u = upload_as(kAct, u), d_w = upload_as(kAct, w_in);
             auto d_parts = upload_f32(parts), d_conv_w = upload_f32(conv_w),
                  d_conv_b = upload_f32(conv_b), d_conv = upload_f32(conv_pool0),
                  d_ssm = upload_f32(ssm_pool0), d_bias = upload_f32(dt_bias), d_A = upload_f32(A),
                  d_D = upload_f32(D), d_gw = upload_f32(gate_w);
             cuda::DeviceBuffer d_v(static_cast<size_t>(E) * dtype_size(kAct));
             cuda::DeviceBuffer d_ssq(static_cast<size_t>(E / cuda::kDecodeInStepPart) * 4);
             cuda::DeviceBuffer d_bc(static_cast<size_t>(2 * GN) * 4);
             cuda::DecodeInStep a;
             a.u = d_u.data();
             if (scaled) a.in_scale = RowScale{d_parts.as<float>(), 40, 80.0f, kEps};
             a.w_in = d_w.data();
             a.d_model = K;
             a.conv.batch.slots = d_slot.as<int32_t>();
             a.conv.channels = cd;
             a.conv.width = W;
             a.conv.weight = d_conv_w.as<float>();
             a.conv.bias = d_conv_b.as<float>();
             a.conv.state = d_conv.as<float>();
             a.conv.state_slot_stride = conv_stride;
             a.ssm.n_head = H;
             a.ssm.head_dim = P;
             a.ssm.d_state = N;
             a.ssm.n_group = G;
             a.ssm.A = d_A.as<float>();
             a.ssm.D = d_D.as<float>();
             a.ssm.state = d_ssm.data();
             a.ssm.state_slot_stride = ssm_stride;
             a.dt.dt_bias = d_bias.as<float>();
             a.dt.dt_min = 0.0f;
             a.dt.dt_max = INFINITY;
             a.gate_w = d_gw.as<float>();
             a.v = d_v.data();
             a.ssq = d_ssq.as<float>();
             a.bc_raw = d_bc.as<float>();
             int major = 0, dev = 0;
             DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
             DUALITY_CUDA_CHECK(
                 cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
             const bool supported = cuda::decode_in_step_supported(a, kAct);
             if (major == 9 && !supported)
                 throw std::runtime_error("decode_in_step_supported says no on Hopper");
             if (major < 9)  // (clusters and bulk copies: the op is Hopper's only)
                 return std::vector<Output>{
                     {"supported before Hopper", {0.0f}, {supported ? 1.0f : 0.0f}}};
             cuda::decode_in_step(a, kAct, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             const std::vector<float> got_pending =
                 download_as_f32(DType::kF32, d_conv.data(), conv_pool.size());

             // out_proj's residual form (a small product of its own) with the commit.
             const int64_t n_out = 24, k_out = 64;
             const std::vector<float> a_out = rounded(kAct, normal(rng, size_t{k_out}));
             const std::vector<float> w_out = rounded(kAct, normal(rng, size_t{n_out * k_out}));
             auto d_aout = upload_as(kAct, a_out), d_wout = upload_as(kAct, w_out);
             auto d_res = upload_f32(std::vector<float>(size_t{n_out}, 0.0f));
             auto d_wnext = upload_f32(std::vector<float>(size_t{n_out}, 1.0f));
             cuda::DeviceBuffer d_un(static_cast<size_t>(n_out) * dtype_size(kAct));
             cuda::DeviceBuffer d_oparts(static_cast<size_t>(cuda::gemv_fused_parts(n_out)) * 4);
             cuda::GemvFused f;
             f.epilogue = cuda::GemvFused::kResidual;
             f.residual = d_res.as<float>();
             f.w_next = d_wnext.as<float>();
             f.u = d_un.data();
             f.out_parts = d_oparts.as<float>();
             f.conv = a.conv;
             f.commit_x = d_bc.as<float>();
             f.commit_begin = E;
             f.commit_count = 2 * GN;
             cuda::gemv_fused(d_aout.data(), d_wout.data(), n_out, k_out, kAct, -1, f, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());

             const std::vector<float> ssq_got = download_as_f32(
                 DType::kF32, d_ssq.data(), static_cast<size_t>(E / cuda::kDecodeInStepPart));
             std::vector<float> part_ref(ssq_got.size()), part_got(ssq_got.size());
             for (size_t i = 0; i < ssq_got.size(); ++i) {
                 double sum = 0.0;
                 for (size_t c = i * 8; c < i * 8 + 8; ++c) {
                     const double v = g[c] / gate_w[c];
                     sum += v * v;
                 }
                 part_ref[i] = static_cast<float>(std::sqrt(sum));
                 part_got[i] = std::sqrt(ssq_got[i]);
             }
             return std::vector<Output>{
                 {"v·w", g, download_as_f32(kAct, d_v.data(), static_cast<size_t>(E))},
                 {"sqrt(ssq part)", part_ref, part_got},
                 {"ssm_state_pool", ssm_pool,
                  download_as_f32(DType::kF32, d_ssm.data(), ssm_pool.size())},
                 {"conv_pool_pending", conv_pending, got_pending},
                 {"bc_raw", bc_raw,
                  download_as_f32(DType::kF32, d_bc.data(), static_cast<size_t>(2 * GN))},
                 {"conv_pool_committed", conv_pool,
                  download_as_f32(DType::kF32, d_conv.data(), conv_pool.size())}};
         }});
}

DUALITY_OP_CASES(decode_in_step) {
    const InStepShape shapes[] = {
        {768, 24, 128, 1}, {256, 8, 128, 1}, {512, 16, 64, 2}, {256, 8, 256, 1}};
    uint32_t seed = 900;
    for (const InStepShape& sh : shapes)
        for (bool scaled : {false, true}) in_step_case(sh, scaled, seed++);
}

}  // namespace
}  // namespace duality::optest
