// Op-test cases: cuda::ssm_decode against cpu::dt_softplus + cpu::ssd_sequential (seqlen 1) per
// sequence on a host copy of its slot's state. Checked: y and the whole state pool (the batch's
// slots and the untouched others). x, B and C are read from one xBC-like buffer (rows
// H·P + 2·G·N + pad apart), dt_raw from a wider zxbcdt-like buffer.
//
// Shapes (n_head, head_dim, d_state, n_group): (24,64,128,1) 130m, (80,64,128,1) 2.7b,
// (128,64,128,8) Codestral, (32,80,64,4), (16,32,256,2); batch 1, 7, 64; act f32/f16/bf16; state
// f32 and bf16 (plus f16, the scalar fallback for d_state 48, D = nullptr and a dt clamp).
// Batch 64 with an f32 state takes the bulk kernel on Hopper (also at head_dim 128: the shape
// (8, 128, 64, 2), batch 64 only); other batches the vector kernels.
// The gate epilogue (SsdGate, bf16): expected y·silu(z)·w and ‖v‖ per (sequence, head) from the
// CPU y and cpu::gate_partials, the kernel's head_dim / 16 partial sums added per head, and each
// partial's square root on its own; batch 64 takes the bulk kernel (f32 state), the others the
// vector kernels.
//
// Tolerance: y is f32 math on identically rounded inputs (summation order and the output
// rounding differ): default_tolerance(act). The state with an f32 state is elementwise f32 math:
// within the same tolerance. With a 16-bit state the CPU starts from the same rounded state but
// keeps its f32 result, while the kernel rounds it once more when storing: one rounding of at
// most 2^-9 relative (bf16) or 2^-11 (f16). The case then uses rtol 4e-3 (bf16) / 1e-3 (f16),
// i.e. twice that, and rel_L2 3e-3 / 1e-3, loosened together with y (one tolerance per case).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "core/cuda/check.h"
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
    bool gate = false;     // the SsdGate epilogue (bf16 only)
    int bulk_parts = 0;    // the bulk kernel's blocks per head (0: the default)
    int expect_parts = 0;  // with bulk_parts: the split the bulk kernel should take
    std::string tag;
};

Tolerance state_tolerance(DType act, DType state_dtype) {
    const Tolerance t = default_tolerance(act);
    if (state_dtype == DType::kBF16) return loosest(t, {3e-3, 1e-4, 4e-3});
    if (state_dtype == DType::kF16) return loosest(t, {1e-3, 1e-4, 1e-3});
    return t;
}

// With a requested split: the bulk kernel takes opt.expect_parts blocks per head. It runs on
// Hopper (compute capability 9.x) unless DUALITY_SSM_DECODE_BULK=0; elsewhere the vector kernels
// run the case (ssm_decode_bulk_parts 0) and only their result is checked.
void check_bulk_parts(const cuda::SsdArgs& a, DType act, bool gate, const DecodeOpts& opt) {
    if (opt.bulk_parts == 0) return;
    const int got = cuda::ssm_decode_bulk_parts(a, act, gate, opt.bulk_parts);
    int dev = 0, major = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
    DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    const char* bulk = std::getenv("DUALITY_SSM_DECODE_BULK");
    const bool hopper_bulk = major == 9 && !(bulk != nullptr && std::strcmp(bulk, "0") == 0);
    if (got == 0 && !hopper_bulk) return;
    if (got != opt.expect_parts)
        throw std::runtime_error("the bulk kernel takes " + std::to_string(got) +
                                 " blocks per head, not " + std::to_string(opt.expect_parts));
}

void decode_case(const DecodeShape& sh, int64_t batch, DType act, DType state_dtype,
                 const DecodeOpts& opt, uint32_t seed) {
    char name[200];
    std::snprintf(name, sizeof name, "ssm_decode/h%lld_p%lld_n%lld_g%lld_b%lld%s/%s_state_%s",
                  static_cast<long long>(sh.n_head), static_cast<long long>(sh.head_dim),
                  static_cast<long long>(sh.d_state), static_cast<long long>(sh.n_group),
                  static_cast<long long>(batch), opt.tag.c_str(), dt_name(act).c_str(),
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
             cuda::RawDt ddt;
             ddt.dt_raw = d_raw.data();
             ddt.raw_stride = raw_stride;
             ddt.dt_bias = d_bias.as<float>();
             ddt.dt_min = opt.dt_min;
             ddt.dt_max = opt.dt_max;
             if (opt.gate) {
                 // z in a zxbcdt-like buffer (rows z_stride apart), drawn as in the ssd_fused
                 // gate cases so that |silu(z)·w| < 1.
                 const int64_t z_stride = raw_stride;
                 const std::vector<float> z =
                     rounded(act, uniform(rng, static_cast<size_t>(batch * z_stride), -1.5f, 1.0f));
                 const std::vector<float> gw = uniform(rng, static_cast<size_t>(H * P), 0.7f, 1.3f);
                 std::vector<float> g(y.size()), ssq(static_cast<size_t>(batch * H));
                 cpu::gate_partials(y.data(), z.data(), z_stride, gw.data(), g.data(), ssq.data(),
                                    batch, H, P);
                 const int64_t parts = cuda::ssm_decode_gate_parts(P);
                 cuda::DeviceBuffer d_z = upload_as(act, z), d_w = upload_f32(gw);
                 cuda::DeviceBuffer d_ssq(static_cast<size_t>(batch * H * parts) * sizeof(float));
                 DUALITY_CUDA_CHECK(cudaMemset(d_ssq.data(), 0xff, d_ssq.bytes()));
                 const cuda::SsdGate gate{d_z.data(), z_stride, d_w.as<float>(), d_ssq.as<float>()};
                 if (!cuda::ssm_decode_gate_supported(a, gate, act))
                     throw std::runtime_error("the decode gate should take this case");
                 check_bulk_parts(a, act, true, opt);
                 cuda::ssm_decode(a, ddt, act, nullptr, &gate, opt.bulk_parts);
                 DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
                 const std::vector<float> parts_got =
                     download_as_f32(DType::kF32, d_ssq.data(), batch * H * parts);
                 std::vector<float> norm_got(ssq.size()), norm_ref(ssq.size());
                 for (size_t i = 0; i < ssq.size(); ++i) {
                     float sum = 0.0f;
                     for (int64_t k = 0; k < parts; ++k)
                         sum += parts_got[i * static_cast<size_t>(parts) + static_cast<size_t>(k)];
                     norm_got[i] = std::sqrt(sum);
                     norm_ref[i] = std::sqrt(ssq[i]);
                 }
                 // Each 16-channel partial on its own (a part stored in another part's place
                 // would keep the per-head sums): Σ v² with v = g / w from the CPU's g = v·w.
                 std::vector<float> part_got(parts_got.size()), part_ref(parts_got.size());
                 for (size_t i = 0; i < parts_got.size(); ++i) {
                     const int64_t row = static_cast<int64_t>(i) / (H * parts);      // sequence
                     const int64_t c0 = static_cast<int64_t>(i) % (H * parts) * 16;  // channel
                     double sum = 0.0;
                     for (int64_t c = c0; c < c0 + 16; ++c) {
                         const double v =
                             g[static_cast<size_t>(row * H * P + c)] / gw[static_cast<size_t>(c)];
                         sum += v * v;
                     }
                     part_ref[i] = static_cast<float>(std::sqrt(sum));
                     part_got[i] = std::sqrt(parts_got[i]);
                 }
                 return std::vector<Output>{
                     {"y·silu(z)·w", g, download_as_f32(act, d_y.data(), y.size())},
                     {"sqrt(ssq)", norm_ref, norm_got},
                     {"sqrt(ssq part)", part_ref, part_got},
                     {"state_pool", pool,
                      download_as_f32(state_dtype, d_pool.data(), pool.size())}};
             }
             check_bulk_parts(a, act, false, opt);
             cuda::ssm_decode(a, ddt, act, nullptr, nullptr, opt.bulk_parts);
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
    // head_dim 128 at batch 64: the bulk kernel's 128-row head (32 rows per warp).
    for (DType act : kActs) decode_case({8, 128, 64, 2}, 64, act, DType::kF32, {}, seed++);
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
    // The gate epilogue: the 2.7b and 130m heads on the vector kernels (batch 1, 7) and the bulk
    // kernel (batch 64, f32 state), bf16 state, head_dim 80 and 32 with d_state 64 and 256.
    DecodeOpts gate;
    gate.gate = true;
    gate.tag = "_gate";
    DecodeOpts gate_no_d = gate;
    gate_no_d.with_D = false;
    gate_no_d.tag = "_gate_noD";
    for (int64_t batch : {1, 7, 64}) {
        decode_case({80, 64, 128, 1}, batch, DType::kBF16, DType::kF32, gate, seed++);
        decode_case({24, 64, 128, 1}, batch, DType::kBF16, DType::kBF16, gate, seed++);
    }
    decode_case({32, 80, 64, 4}, 64, DType::kBF16, DType::kF32, gate, seed++);
    decode_case({16, 32, 256, 2}, 7, DType::kBF16, DType::kF32, gate_no_d, seed++);
    // The bulk kernel with a head's rows in 1, 2 or 4 blocks (batch 64, f32 state; 4 is the
    // default): 64, 32 and 16 rows of the 2.7b head, 80, 40 or 20 of head_dim 80, 128, 64 or 32 of
    // head_dim 128 at d_state 64, and the gate's 16-row sums split between blocks. head_dim 80
    // under the gate (40 or 20 rows, not whole 16-row sums) keeps one block per head: those cases
    // check the fallback.
    for (int parts : {1, 2, 4}) {
        const std::string n = std::to_string(parts);
        DecodeOpts split;
        split.bulk_parts = parts;
        split.expect_parts = parts;
        split.tag = "_parts" + n;
        DecodeOpts split_gate = split;
        split_gate.gate = true;
        split_gate.tag = "_gate_parts" + n;
        DecodeOpts whole_gate = split_gate;
        whole_gate.expect_parts = 1;
        for (DType act : kActs) decode_case({80, 64, 128, 1}, 64, act, DType::kF32, split, seed++);
        decode_case({32, 80, 64, 4}, 64, DType::kBF16, DType::kF32, split, seed++);
        decode_case({8, 128, 64, 2}, 64, DType::kF16, DType::kF32, split, seed++);
        decode_case({80, 64, 128, 1}, 64, DType::kBF16, DType::kF32, split_gate, seed++);
        decode_case({32, 80, 64, 4}, 64, DType::kBF16, DType::kF32, whole_gate, seed++);
    }
}

}  // namespace
}  // namespace duality::optest
