// Op-test cases: cuda::ssm_decode against cpu::dt_softplus + cpu::ssd_sequential (seqlen 1) per
// sequence on a host copy of its slot's state. Checked: y and the whole state pool (the batch's
// slots and the untouched others). x, B and C are read from one xBC-like buffer (rows
// H·P + 2·G·N + pad apart), dt_raw from a wider zxbcdt-like buffer.
//
// Shapes (n_head, head_dim, d_state, n_group): (24,64,128,1) 130m, (80,64,128,1) 2.7b,
// (128,64,128,8) Codestral, (32,80,64,4), (16,32,256,2); batch 1, 7, 64; act f32/f16/bf16; state
// f32 and bf16 (plus f16, the scalar fallback for d_state 48, D = nullptr and a dt clamp).
//
// Tolerance: y is f32 math on identically rounded inputs (summation order and the output
// rounding differ): default_tolerance(act). The state with an f32 state is elementwise f32 math:
// within the same tolerance. With a 16-bit state the CPU starts from the same rounded state but
// keeps its f32 result, while the kernel rounds it once more when storing: one rounding of at
// most 2^-9 relative (bf16) or 2^-11 (f16). The case then uses rtol 4e-3 (bf16) / 1e-3 (f16),
// i.e. twice that, and rel_L2 3e-3 / 1e-3, loosened together with y (one tolerance per case).
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/half.h"
#include "ops/cpu/ops.h"
#include "ops/cuda/kern_util.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

struct DecodeShape {
    int64_t n_head, head_dim, d_state, n_group;
};

struct DecodeOpts {
    bool with_D = true;
    float dt_min = 0.0f, dt_max = std::numeric_limits<float>::infinity();
    const char* tag = "";
};

Tolerance state_tolerance(DType act, DType state_dtype) {
    const Tolerance t = default_tolerance(act);
    if (state_dtype == DType::kBF16) return loosest(t, {3e-3, 1e-4, 4e-3});
    if (state_dtype == DType::kF16) return loosest(t, {1e-3, 1e-4, 1e-3});
    return t;
}

void decode_case(const DecodeShape& sh, int64_t batch, DType act, DType state_dtype,
                 const DecodeOpts& opt, uint32_t seed) {
    char name[200];
    std::snprintf(name, sizeof name, "ssm_decode/h%lld_p%lld_n%lld_g%lld_b%lld%s/%s_state_%s",
                  static_cast<long long>(sh.n_head), static_cast<long long>(sh.head_dim),
                  static_cast<long long>(sh.d_state), static_cast<long long>(sh.n_group),
                  static_cast<long long>(batch), opt.tag, dt_name(act).c_str(),
                  dt_name(state_dtype).c_str());
    register_case(
        {name, state_tolerance(act, state_dtype), [=] {
             std::mt19937 rng(seed);
             const int64_t H = sh.n_head, P = sh.head_dim, N = sh.d_state, G = sh.n_group;
             const int64_t n_slots = batch + 2;
             const int64_t slot_stride = H * P * N + 16;  // padded slots
             const int64_t xbc_stride = H * P + 2 * G * N + 8;
             const int64_t raw_stride = H + 2 * H * P + 12;
             DeviceBatch b = make_batch(std::vector<int32_t>(static_cast<size_t>(batch), 1),
                                        shuffled_slots(rng, batch, n_slots));

             const std::vector<float> xbc =
                 rounded(act, normal(rng, static_cast<size_t>(batch * xbc_stride)));
             std::vector<float> raw =
                 normal(rng, static_cast<size_t>(batch * raw_stride), 0.0f, 0.5f);
             raw[0] = 25.0f;  // above the softplus threshold
             raw = rounded(act, raw);
             std::vector<float> dt_bias(static_cast<size_t>(H)), A(static_cast<size_t>(H)),
                 D = normal(rng, static_cast<size_t>(H), 1.0f, 0.1f);
             std::uniform_real_distribution<float> dt0(1e-3f, 0.1f), a_log(0.0f, std::log(16.0f));
             for (int64_t h = 0; h < H; ++h) {
                 dt_bias[static_cast<size_t>(h)] = std::log(std::expm1(dt0(rng)));  // mamba2 init
                 A[static_cast<size_t>(h)] = -std::exp(a_log(rng));
             }
             const std::vector<float> pool0 = rounded(
                 state_dtype, normal(rng, static_cast<size_t>(n_slots * slot_stride), 0.0f, 0.5f));

             // CPU: Δ for every row, then one recurrence step per sequence on its slot.
             std::vector<float> dt(static_cast<size_t>(batch * H));
             cpu::dt_softplus(raw.data(), raw_stride, dt_bias.data(), opt.dt_min, opt.dt_max,
                              dt.data(), batch, H);
             std::vector<float> pool = pool0, y(static_cast<size_t>(batch * H * P));
             for (int64_t s = 0; s < batch; ++s) {
                 SsdParams p;
                 p.seqlen = 1;
                 p.n_head = H;
                 p.head_dim = P;
                 p.d_state = N;
                 p.n_group = G;
                 p.x = xbc.data() + s * xbc_stride;
                 p.x_stride = xbc_stride;
                 p.B = p.x + H * P;
                 p.C = p.B + G * N;
                 p.bc_stride = xbc_stride;
                 p.dt = dt.data() + s * H;
                 p.A = A.data();
                 p.D = opt.with_D ? D.data() : nullptr;
                 p.state = pool.data() + b.slots[static_cast<size_t>(s)] * slot_stride;
                 p.y = y.data() + s * H * P;
                 cpu::ssd_sequential(p, kCpuThreads);
             }

             cuda::DeviceBuffer d_xbc = upload_as(act, xbc), d_raw = upload_as(act, raw),
                                d_bias = upload_f32(dt_bias), d_A = upload_f32(A),
                                d_D = upload_f32(D), d_pool = upload_as(state_dtype, pool0);
             cuda::DeviceBuffer d_y(y.size() * dtype_size(act));
             const int64_t el = static_cast<int64_t>(dtype_size(act));
             cuda::SsdArgs a;
             a.batch = b.batch;
             a.n_head = H;
             a.head_dim = P;
             a.d_state = N;
             a.n_group = G;
             a.x = d_xbc.data();
             a.x_stride = xbc_stride;
             a.B = d_xbc.as<char>() + H * P * el;
             a.C = d_xbc.as<char>() + (H * P + G * N) * el;
             a.bc_stride = xbc_stride;
             a.A = d_A.as<float>();
             a.D = opt.with_D ? d_D.as<float>() : nullptr;
             a.state = d_pool.data();
             a.state_slot_stride = slot_stride;
             a.state_dtype = state_dtype;
             a.y = d_y.data();
             cuda::DecodeDt ddt;
             ddt.dt_raw = d_raw.data();
             ddt.raw_stride = raw_stride;
             ddt.dt_bias = d_bias.as<float>();
             ddt.dt_min = opt.dt_min;
             ddt.dt_max = opt.dt_max;
             cuda::ssm_decode(a, ddt, act, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             return std::vector<Output>{
                 {"y", y, download_as_f32(act, d_y.data(), y.size())},
                 {"state_pool", pool, download_as_f32(state_dtype, d_pool.data(), pool.size())}};
         }});
}

DUALITY_OP_CASES(ssm_decode) {
    const DecodeShape shapes[] = {
        {24, 64, 128, 1}, {80, 64, 128, 1}, {128, 64, 128, 8}, {32, 80, 64, 4}, {16, 32, 256, 2}};
    uint32_t seed = 500;
    for (const DecodeShape& sh : shapes)
        for (int64_t batch : {1, 7, 64})
            for (DType act : kActs)
                for (DType st : {DType::kF32, DType::kBF16})
                    decode_case(sh, batch, act, st, {}, seed++);
    DecodeOpts no_d;
    no_d.with_D = false;
    no_d.tag = "_noD";
    DecodeOpts clamp;
    clamp.dt_min = 5e-3f;
    clamp.dt_max = 0.05f;
    clamp.tag = "_clamp";
    for (DType act : kActs) {
        decode_case({24, 64, 128, 1}, 7, act, DType::kF16, {}, seed++);
        decode_case({8, 16, 48, 2}, 5, act, DType::kF32, {}, seed++);  // scalar fallback
        decode_case({8, 16, 48, 2}, 5, act, DType::kBF16, {}, seed++);
        decode_case({24, 64, 128, 1}, 7, act, DType::kF32, no_d, seed++);
        decode_case({32, 80, 64, 4}, 7, act, DType::kF32, clamp, seed++);
    }
}

}  // namespace
}  // namespace duality::optest
