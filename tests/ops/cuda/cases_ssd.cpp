// Op-test cases for cuda::ssd_chunked (the chunked SSD prefill over a packed varlen batch).
//
// Each case packs sequences into one batch the way the model does: x, B and C are column ranges
// of one conv-output row (x at 0, B at H·P, C at H·P + G·N), chunks start at every sequence's
// first token, and each sequence owns a state slot picked by a permuted slot map out of a pool
// with spare slots and padding between slots. Expected: the CPU twin (cpu::ssd_chunked, or the
// sequential recurrence cpu::ssd_sequential) in f32, run per sequence from its own copy of the
// slot's initial state; y and the whole slot pool (final states of the touched slots, untouched
// slots and padding unchanged) are compared. Inputs as in spec 9.3: x, B, C ~ N(0,1) rounded to
// the activation dtype, Δ ~ U[1e-3, 0.1], A ~ -U[1, 16], D ≈ 1, initial states 0.5·N(0,1)
// rounded to the state dtype (or 0).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/device_buffer.h"
#include "ops/cpu/ops.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/ops.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

struct SsdCase {
    std::string label;
    int64_t H = 0, P = 0, N = 0, G = 1, Q = 256;
    std::vector<int32_t> lens;  // sequence lengths of the packed batch
    DType act = DType::kBF16;
    DType state_dtype = DType::kF32;
    bool init_state = true;  // non-zero initial states (continuation)
    bool with_D = true;
    bool sequential = false;  // oracle: the sequential recurrence instead of the chunked CPU op
    int64_t row_pad = 0;      // extra columns per conv row (odd: unaligned strides, scalar loads)
    uint32_t seed = 1;
    bool scan = false;                // test cuda::ssd_scan (the sequential-scan prefill) instead
    bool fused = false;               // test cuda::ssd_fused (the single-launch prefill) instead
    float dt_hi = 0.1f;               // Δ is uniform in [1e-3, dt_hi]
    float a_lo = 1.0f, a_hi = 16.0f;  // A is -uniform in [a_lo, a_hi]
    bool gate = false;  // ssd_fused with an SsdGate: y·silu(z)·w and the sums of squares
    bool conv = false;  // ... and an SsdConv: x raw, its conv1d (from per-slot conv states) inside
    bool raw_dt = false;  // ... and a RawDt: Δ computed inside from raw dt columns
    // ssd_fused passing f16 states between chunks (SsdArgs::passed_f16), against the CPU twin
    // rounding the same states (twin_f16) or against the all-f32 twin (its accuracy).
    bool passed_f16 = false, twin_f16 = false;
};

int cpu_threads() {
    return static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 16u));
}

std::vector<Output> run_case(const SsdCase& k) {
    std::mt19937 rng(k.seed);
    const int64_t H = k.H, P = k.P, N = k.N, G = k.G, Q = k.Q;
    const int64_t n_seq = static_cast<int64_t>(k.lens.size());
    std::vector<int32_t> cu(n_seq + 1, 0);
    for (int64_t s = 0; s < n_seq; ++s) cu[s + 1] = cu[s] + k.lens[s];
    const int64_t T = cu[n_seq];
    const int64_t row = H * P + 2 * G * N + k.row_pad;  // conv row: [x | B | C | pad]
    const int64_t b_off = H * P, c_off = H * P + G * N;

    const std::vector<float> xbc = rounded(k.act, normal(rng, T * row));
    // With raw_dt the GPU reads raw dt columns {T, H + 3} in the activation dtype (softplus⁻¹ of
    // [1e-3, dt_hi] and a bias of ±0.3, every 7th value 2 beyond dt_min's or dt_max's end, so
    // that each clamp is hit), and the CPU SSD reads their Δ from cpu::dt_softplus, the twin of
    // the fused SSD's softplus.
    const int64_t raw_ld = H + 3;
    std::vector<float> dt_raw, dt_bias;
    std::vector<float> dt = uniform(rng, T * H, 1e-3f, k.dt_hi);
    if (k.raw_dt) {
        const float lo = std::log(std::expm1(1e-3f)), hi = std::log(std::expm1(k.dt_hi));
        dt_raw = uniform(rng, T * raw_ld, lo + 0.25f, hi - 0.25f);
        for (size_t i = 0; i < dt_raw.size(); i += 7) dt_raw[i] = i % 2 ? lo - 2.0f : hi + 2.0f;
        dt_raw = rounded(k.act, std::move(dt_raw));
        dt_bias = uniform(rng, H, -0.3f, 0.3f);
        cpu::dt_softplus(dt_raw.data(), raw_ld, dt_bias.data(), 1e-3f, k.dt_hi, dt.data(), T, H);
    }
    std::vector<float> A = uniform(rng, H, k.a_lo, k.a_hi);
    for (float& a : A) a = -a;
    std::vector<float> D = normal(rng, H, 1.0f, 0.1f);
    // The gate's z (rows z_stride apart, as in the model's zxbcdt) and norm weight, drawn so that
    // |silu(z)·w| < 1: the gated output then carries at most y's own error (y's tolerance).
    const int64_t z_stride = H * P + 8;
    const std::vector<float> z =
        k.gate ? rounded(k.act, uniform(rng, T * z_stride, -1.5f, 1.0f)) : std::vector<float>{};
    const std::vector<float> gate_w =
        k.gate ? uniform(rng, H * P, 0.7f, 1.3f) : std::vector<float>{};

    // Slot pool: n_seq + 3 slots, slot_stride = H·P·N + 16 (padding between slots).
    const int64_t slot_elems = H * P * N, slot_stride = slot_elems + 16, n_slots = n_seq + 3;
    std::vector<int32_t> ids(n_slots);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    const std::vector<int32_t> slots(ids.begin(), ids.begin() + n_seq);
    std::vector<float> pool = normal(rng, n_slots * slot_stride, 0.0f, 0.5f);
    if (!k.init_state)
        for (int32_t sl : slots) std::fill_n(pool.begin() + sl * slot_stride, slot_elems, 0.0f);
    pool = rounded(k.state_dtype, std::move(pool));

    // Chunk tables: each sequence is cut into chunks of Q from its first token.
    std::vector<int32_t> chunk_start, chunk_len, chunk_seq, cu_chunks{0};
    for (int64_t s = 0; s < n_seq; ++s) {
        for (int32_t t0 = 0; t0 < k.lens[s]; t0 += static_cast<int32_t>(Q)) {
            chunk_start.push_back(cu[s] + t0);
            chunk_len.push_back(std::min<int32_t>(static_cast<int32_t>(Q), k.lens[s] - t0));
            chunk_seq.push_back(static_cast<int32_t>(s));
        }
        cu_chunks.push_back(static_cast<int32_t>(chunk_start.size()));
    }
    const int64_t n_chunk = static_cast<int64_t>(chunk_start.size());

    // SsdConv: xbc's x columns are raw, and the x the SSD sees is silu(conv1d(x_raw)) from each
    // sequence's conv state (cpu::conv1d_causal, the conv's CPU twin), rounded to the activation
    // dtype as conv1d's output would be. The conv state pool: per slot {3, row} f32 (x's channels
    // first, as in the model), padded; zero where the case has no initial states.
    const int64_t HP = H * P, conv_slot_stride = 3 * row + 4;
    std::vector<float> conv_w, conv_b, conv_pool, x_conv;
    if (k.conv) {
        conv_w = uniform(rng, HP * 4, -0.6f, 0.6f);
        conv_b = uniform(rng, HP, -0.3f, 0.3f);
        conv_pool = normal(rng, n_slots * conv_slot_stride);
        if (!k.init_state) std::fill(conv_pool.begin(), conv_pool.end(), 0.0f);
        x_conv = xbc;
        std::vector<float> out(T * HP);
        for (int64_t s = 0; s < n_seq; ++s) {
            std::vector<float> st(3 * HP);  // x's channels of the slot's conv state
            for (int64_t r = 0; r < 3; ++r)
                std::copy_n(conv_pool.begin() + slots[s] * conv_slot_stride + r * row, HP,
                            st.begin() + r * HP);
            Conv1dParams cp;
            cp.seqlen = k.lens[s];
            cp.channels = HP;
            cp.width = 4;
            cp.x = xbc.data() + cu[s] * row;
            cp.x_stride = row;
            cp.weight = conv_w.data();
            cp.bias = conv_b.data();
            cp.state = st.data();
            cp.out = out.data() + cu[s] * HP;
            cpu::conv1d_causal(cp, cpu_threads());
        }
        out = rounded(k.act, std::move(out));
        for (int64_t t = 0; t < T; ++t)
            std::copy_n(out.begin() + t * HP, HP, x_conv.begin() + t * row);
    }
    const std::vector<float>& xbc_ref = k.conv ? x_conv : xbc;  // what the CPU SSD reads

    // CPU reference, one sequence at a time from its own copy of the slot's state.
    std::vector<float> y_ref(T * H * P), pool_ref = pool;
    for (int64_t s = 0; s < n_seq; ++s) {
        std::vector<float> st(pool.begin() + slots[s] * slot_stride,
                              pool.begin() + slots[s] * slot_stride + slot_elems);
        SsdParams p;
        p.seqlen = k.lens[s];
        p.n_head = H;
        p.head_dim = P;
        p.d_state = N;
        p.n_group = G;
        p.chunk_size = Q;
        p.x = xbc_ref.data() + cu[s] * row;
        p.x_stride = row;
        p.B = xbc_ref.data() + cu[s] * row + b_off;
        p.C = xbc_ref.data() + cu[s] * row + c_off;
        p.bc_stride = row;
        p.dt = dt.data() + cu[s] * H;
        p.A = A.data();
        p.D = k.with_D ? D.data() : nullptr;
        p.state = st.data();
        p.y = y_ref.data() + cu[s] * H * P;
        p.passed_f16 = k.twin_f16;
        if (k.sequential) {
            cpu::ssd_sequential(p, cpu_threads());
        } else {
            cpu::ssd_chunked(p, cpu_threads());
        }
        std::copy(st.begin(), st.end(), pool_ref.begin() + slots[s] * slot_stride);
    }
    std::vector<float> ssq_ref;
    if (k.gate) {
        std::vector<float> g(y_ref.size());
        ssq_ref.resize(T * H);
        cpu::gate_partials(y_ref.data(), z.data(), z_stride, gate_w.data(), g.data(),
                           ssq_ref.data(), T, H, P);
        y_ref = std::move(g);
    }

    // CUDA. Outputs and workspace start as NaN (0xff bytes), so anything unwritten or read
    // before it is written shows up.
    const size_t act_size = dtype_size(k.act);
    cuda::DeviceBuffer d_xbc = upload_as(k.act, xbc);
    cuda::DeviceBuffer d_dt = upload_f32(dt), d_A = upload_f32(A), d_D = upload_f32(D);
    cuda::DeviceBuffer d_pool = upload_as(k.state_dtype, pool);
    cuda::DeviceBuffer d_cu = upload_i32(cu), d_slots = upload_i32(slots);
    cuda::DeviceBuffer d_cstart = upload_i32(chunk_start), d_clen = upload_i32(chunk_len);
    cuda::DeviceBuffer d_cseq = upload_i32(chunk_seq), d_cuc = upload_i32(cu_chunks);
    cuda::DeviceBuffer d_y(T * H * P * act_size);
    DUALITY_CUDA_CHECK(cudaMemset(d_y.data(), 0xff, d_y.bytes()));

    cuda::SsdArgs a;
    a.batch.n_seq = n_seq;
    a.batch.n_tokens = T;
    a.batch.cu_seqlens = d_cu.as<int32_t>();
    a.batch.slots = d_slots.as<int32_t>();
    a.batch.n_chunk = n_chunk;
    a.batch.chunk_start = d_cstart.as<int32_t>();
    a.batch.chunk_len = d_clen.as<int32_t>();
    a.batch.chunk_seq = d_cseq.as<int32_t>();
    a.batch.cu_chunks = d_cuc.as<int32_t>();
    a.n_head = H;
    a.head_dim = P;
    a.d_state = N;
    a.n_group = G;
    a.chunk_size = Q;
    const auto* base = static_cast<const unsigned char*>(d_xbc.data());
    a.x = base;
    a.x_stride = row;
    a.B = base + b_off * act_size;
    a.C = base + c_off * act_size;
    a.bc_stride = row;
    a.A = d_A.as<float>();
    a.D = k.with_D ? d_D.as<float>() : nullptr;
    a.state = d_pool.data();
    a.state_slot_stride = slot_stride;
    a.state_dtype = k.state_dtype;
    a.passed_f16 = k.passed_f16;
    a.y = d_y.data();
    cuda::DeviceBuffer ws(std::max<size_t>(cuda::ssd_chunked_workspace_bytes(a), 256));
    DUALITY_CUDA_CHECK(cudaMemset(ws.data(), 0xff, ws.bytes()));
    if (k.fused) {
        if (!cuda::ssd_fused_supported(a, k.act)) {
            std::vector<Output> out;
            out.push_back({"ssd_fused_supported (false on this device)", {1.0f}, {0.0f}});
            return out;
        }
        cuda::DeviceBuffer fws(std::max<size_t>(cuda::ssd_fused_workspace_bytes(a), 256));
        DUALITY_CUDA_CHECK(cudaMemset(fws.data(), 0xff, fws.bytes()));
        cuda::DeviceBuffer sync(cuda::ssd_fused_sync_bytes(a));
        DUALITY_CUDA_CHECK(cudaMemset(sync.data(), 0, sync.bytes()));
        // A first launch on a copy of the pool (same sync buffer): the checked launch below then
        // also checks that a launch leaves the counters and flags ready for the next one.
        cuda::DeviceBuffer pool2(d_pool.bytes()), y2(d_y.bytes());
        DUALITY_CUDA_CHECK(
            cudaMemcpy(pool2.data(), d_pool.data(), d_pool.bytes(), cudaMemcpyDeviceToDevice));
        cuda::SsdArgs a2 = a;
        a2.state = pool2.data();
        a2.y = y2.data();
        if (k.gate) {
            cuda::DeviceBuffer d_z = upload_as(k.act, z), d_w = upload_f32(gate_w);
            cuda::DeviceBuffer d_ssq(T * H * sizeof(float)), ssq2(d_ssq.bytes());
            DUALITY_CUDA_CHECK(cudaMemset(d_ssq.data(), 0xff, d_ssq.bytes()));
            cuda::SsdGate gate{d_z.data(), z_stride, d_w.as<float>(), ssq2.as<float>()};
            cuda::DeviceBuffer d_cw = upload_f32(conv_w), d_cb = upload_f32(conv_b),
                               d_cpool = upload_f32(conv_pool);
            cuda::SsdConv conv;
            conv.weight = d_cw.as<float>();
            conv.bias = d_cb.as<float>();
            conv.state = d_cpool.as<float>();
            conv.state_ld = row;
            conv.state_slot_stride = conv_slot_stride;
            if (k.conv && !cuda::ssd_conv_supported(a, conv)) {
                std::vector<Output> out;
                out.push_back({"ssd_conv_supported (false)", {1.0f}, {0.0f}});
                return out;
            }
            const cuda::SsdConv* cv = k.conv ? &conv : nullptr;
            cuda::DeviceBuffer d_raw = upload_as(k.act, dt_raw), d_bias = upload_f32(dt_bias);
            cuda::RawDt raw{d_raw.data(), raw_ld, d_bias.as<float>(), 1e-3f, k.dt_hi};
            const cuda::RawDt* rd = k.raw_dt ? &raw : nullptr;
            const float* dev_dt = k.raw_dt ? nullptr : d_dt.as<float>();  // Δ only from raw
            cuda::ssd_fused(a2, dev_dt, fws.data(), sync.data(), k.act, nullptr, &gate, cv, rd);
            gate.ssq = d_ssq.as<float>();
            cuda::ssd_fused(a, dev_dt, fws.data(), sync.data(), k.act, nullptr, &gate, cv, rd);
            DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
            std::vector<Output> out;
            out.push_back(
                {"y·silu(z)·w", std::move(y_ref), download_as_f32(k.act, d_y.data(), T * H * P)});
            // ‖v‖ per (token, head): as conditioned as v itself (Σ v² doubles relative errors).
            std::vector<float> norm = download_as_f32(DType::kF32, d_ssq.data(), T * H);
            for (float& v : norm) v = std::sqrt(v);
            for (float& v : ssq_ref) v = std::sqrt(v);
            out.push_back({"sqrt(ssq)", std::move(ssq_ref), std::move(norm)});
            out.push_back({"state_pool", std::move(pool_ref),
                           download_as_f32(k.state_dtype, d_pool.data(), pool.size())});
            if (k.conv)  // read, never written
                out.push_back({"conv_state_pool", conv_pool,
                               download_as_f32(DType::kF32, d_cpool.data(), conv_pool.size())});
            return out;
        }
        cuda::ssd_fused(a2, d_dt.as<float>(), fws.data(), sync.data(), k.act, nullptr);
        cuda::ssd_fused(a, d_dt.as<float>(), fws.data(), sync.data(), k.act, nullptr);
    } else if (k.scan) {
        cuda::ssd_scan(a, d_dt.as<float>(), k.act, nullptr);
    } else {
        cuda::ssd_chunked(a, d_dt.as<float>(), ws.data(), k.act, nullptr);
    }
    DUALITY_CUDA_CHECK(cudaDeviceSynchronize());

    std::vector<Output> out;
    out.push_back({"y", std::move(y_ref), download_as_f32(k.act, d_y.data(), T * H * P)});
    out.push_back({"state_pool", std::move(pool_ref),
                   download_as_f32(k.state_dtype, d_pool.data(), pool.size())});
    return out;
}

// n lengths in [1, 600]: every 5th a multiple of Q (Q or 2Q, capped to 600 when Q allows), every
// 7th a single token, the rest uniform.
std::vector<int32_t> varlen(int n, int32_t Q, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> len(1, 600), pick(1, 2);
    std::vector<int32_t> lens(n);
    for (int i = 0; i < n; ++i) {
        if (i % 5 == 2) {
            const int32_t m = Q * pick(rng);
            lens[i] = m <= 600 ? m : Q;
        } else if (i % 7 == 3) {
            lens[i] = 1;
        } else {
            lens[i] = len(rng);
        }
    }
    return lens;
}

void add(SsdCase k) {
    std::ostringstream name;
    name << (k.fused  ? "ssd_fused/"
             : k.scan ? "ssd_scan/"
                      : "ssd_chunked/")
         << k.label << "_H" << k.H << "P" << k.P << "N" << k.N << "G" << k.G << "Q" << k.Q
         << (k.init_state ? "_init" : "_zero") << (k.with_D ? "" : "_noD")
         << (k.sequential ? "_seqref" : "") << (k.gate ? "_gate" : "") << (k.conv ? "_conv" : "")
         << (k.raw_dt ? "_rawdt" : "")
         << (k.passed_f16 ? (k.twin_f16 ? "_passedf16" : "_passedf16_vs_f32") : "") << "/"
         << dtype_name(k.act);
    if (k.state_dtype != DType::kF32) name << "_state" << dtype_name(k.state_dtype);
    OpCase c;
    c.name = name.str();
    c.tol = default_tolerance(k.act);
    // The policy's atol is for outputs of the spec's d_state (128). y is a sum over d_state
    // products of this data, so its magnitude, and the absolute error of the same bf16/f16
    // roundings, grow as sqrt(d_state): atol scales with it above 128 (rel_L2, scale-free, does
    // not). docs/numerics.md.
    if (k.N > 128) c.tol.atol *= std::sqrt(static_cast<double>(k.N) / 128.0);
    c.run = [k] { return run_case(k); };
    register_case(std::move(c));
}

constexpr DType kF32 = DType::kF32, kF16 = DType::kF16, kBF16 = DType::kBF16;

// A case with non-zero initial states, D, the chunked CPU oracle and aligned strides; the
// modifiers below change one of those.
SsdCase shape(std::string label, int64_t H, int64_t P, int64_t N, int64_t G, int64_t Q,
              std::vector<int32_t> lens, DType act, uint32_t seed) {
    SsdCase k;
    k.label = std::move(label);
    k.H = H;
    k.P = P;
    k.N = N;
    k.G = G;
    k.Q = Q;
    k.lens = std::move(lens);
    k.act = act;
    k.seed = seed;
    return k;
}
SsdCase zero(SsdCase k) {
    k.init_state = false;
    return k;
}
SsdCase no_d(SsdCase k) {
    k.with_D = false;
    return k;
}
SsdCase seqref(SsdCase k) {
    k.sequential = true;
    return k;
}
SsdCase row_pad(SsdCase k, int64_t pad) {
    k.row_pad = pad;
    return k;
}
SsdCase state(SsdCase k, DType dt) {
    k.state_dtype = dt;
    return k;
}
// Δ up to 1 (default 0.1): most 32-token blocks then decay by more than e^32, where ssd_fused
// computes its intra-chunk decays per element instead of factored per block.
SsdCase big_dt(SsdCase k) {
    k.dt_hi = 1.0f;
    k.label += "_bigdt";
    return k;
}

// Slow decays (long memory): A in -[0.05, 0.5] and Δ up to 0.02, so |A·Δ| is 5e-5 to 1e-2 per
// token and a state (the initial one included) lives on for hundreds to tens of thousands of
// tokens, across every chunk of the case; the default data forgets a state within a few tokens.
SsdCase slow_decay(SsdCase k) {
    k.a_lo = 0.05f;
    k.a_hi = 0.5f;
    k.dt_hi = 0.02f;
    k.label += "_slow";
    return k;
}

DUALITY_OP_CASES(ssd_chunked) {
    // The mamba2-2.7b head shape (H 80, P 64, N 128, G 1, Q 256), single sequences; the short
    // ones against the sequential recurrence.
    for (int32_t L : {1, 255, 256, 257})
        add(seqref(shape("L" + std::to_string(L), 80, 64, 128, 1, 256, {L}, kBF16, L)));
    add(seqref(zero(shape("L7", 80, 64, 128, 1, 256, {7}, kBF16, 7))));
    add(seqref(shape("L257", 80, 64, 128, 1, 256, {257}, kF32, 13)));
    add(seqref(shape("L256", 80, 64, 128, 1, 256, {256}, kF16, 14)));
    add(shape("L1000", 80, 64, 128, 1, 256, {1000}, kBF16, 11));
    add(zero(shape("L1000", 80, 64, 128, 1, 256, {1000}, kF16, 12)));
    // Long sequences with fewer heads (the CPU reference stays fast).
    add(shape("L4096", 8, 64, 128, 1, 256, {4096}, kBF16, 15));
    add(zero(shape("L4096", 8, 64, 128, 1, 256, {4096}, kF32, 16)));
    add(shape("L4096", 4, 64, 128, 2, 256, {4096}, kF16, 17));
    // Codestral (H 128, P 64, N 128, G 8).
    add(shape("L300", 128, 64, 128, 8, 256, {300}, kBF16, 21));
    add(no_d(zero(shape("L600", 128, 64, 128, 8, 256, {600}, kF16, 22))));
    add(shape("L257", 128, 64, 128, 8, 256, {257}, kF32, 23));
    // head_dim 80 (not a power of two), 32 and 128; d_state 64 and 256; chunk_size 128.
    add(shape("L513", 32, 80, 128, 4, 256, {513}, kBF16, 31));
    add(shape("L300", 32, 80, 128, 4, 256, {300}, kF32, 32));
    add(shape("L300", 16, 32, 64, 2, 256, {300}, kF16, 33));
    add(shape("L700", 16, 64, 64, 2, 256, {700}, kBF16, 34));
    add(shape("L600", 8, 64, 256, 1, 256, {600}, kBF16, 35));
    add(zero(shape("L600", 8, 64, 256, 1, 256, {600}, kF16, 36)));
    add(shape("L300", 8, 128, 256, 2, 256, {300}, kF32, 37));
    // Fast decays at d_state 256 (the data of ssd_fused's case 180, so the two paths' errors
    // can be compared).
    add(big_dt(shape("L1000", 8, 64, 256, 1, 128, {1000}, kBF16, 180)));
    add(shape("L400", 8, 128, 128, 1, 128, {400}, kBF16, 38));
    // Tiny test models: small heads and states, small and unusual chunk sizes.
    for (DType act : {kF32, kF16, kBF16})
        add(seqref(shape("L100", 8, 16, 16, 2, 32, {100}, act, 41)));
    add(seqref(shape("L37", 4, 16, 24, 1, 16, {37}, kBF16, 42)));
    add(seqref(shape("L37", 4, 16, 16, 1, 8, {37}, kF32, 43)));
    add(seqref(shape("L130", 8, 32, 16, 4, 48, {130}, kF16, 44)));
    // Unaligned layouts (d_state 20; odd row strides): the scalar-load fallback.
    add(seqref(shape("unaligned_L130", 6, 80, 20, 3, 32, {130}, kBF16, 45)));
    add(row_pad(shape("unaligned_L300", 4, 64, 128, 1, 256, {300}, kF32, 46), 3));
    add(row_pad(shape("unaligned_L300", 4, 64, 128, 1, 256, {300}, kF16, 47), 1));
    // Packed varlen batches with permuted slots.
    add(shape("varlen3", 16, 64, 128, 2, 256, {1, 256, 513}, kBF16, 51));
    add(zero(shape("varlen3", 16, 64, 128, 2, 256, {300, 7, 512}, kF32, 52)));
    add(shape("varlen37", 16, 64, 128, 4, 256, varlen(37, 256, 53), kBF16, 53));
    add(zero(shape("varlen37", 16, 64, 128, 4, 256, varlen(37, 256, 54), kF16, 54)));
    add(shape("varlen300", 4, 32, 64, 2, 64, varlen(300, 64, 55), kBF16, 55));
    add(shape("varlen300", 2, 64, 128, 1, 256, varlen(300, 256, 56), kF32, 56));
    // Reduced-precision state slots: the final state is rounded once to the slot dtype, which
    // stays within the activation dtype's tolerance (bf16 state with bf16 act, f16 with f16).
    add(state(shape("varlen37", 16, 64, 128, 4, 256, varlen(37, 256, 57), kBF16, 57), kBF16));
    add(state(shape("varlen3", 16, 64, 128, 2, 256, {100, 256, 5}, kF16, 58), kF16));
    // Long memory: every chunk's output reads states carried from the first token on.
    add(slow_decay(shape("L4096", 8, 64, 128, 1, 256, {4096}, kBF16, 59)));
    add(slow_decay(shape("L4096", 4, 64, 128, 2, 128, {4096}, kF32, 60)));
}

SsdCase scan(SsdCase k) {
    k.scan = true;
    return seqref(k);
}

DUALITY_OP_CASES(ssd_scan) {
    // The sequential-scan prefill against the CPU recurrence: the 2.7b head shape, Codestral,
    // head_dim 80, d_state 16-256, varlen packs, all act dtypes and a bf16 state.
    add(scan(shape("L257", 80, 64, 128, 1, 256, {257}, kBF16, 61)));
    add(scan(zero(shape("L7", 80, 64, 128, 1, 256, {7}, kF32, 62))));
    add(scan(shape("L300", 128, 64, 128, 8, 256, {300}, kF16, 63)));
    add(scan(shape("L130", 32, 80, 128, 4, 256, {130}, kBF16, 64)));
    add(scan(shape("L100", 8, 64, 256, 1, 256, {100}, kF32, 65)));
    add(scan(shape("L100", 8, 128, 64, 2, 256, {100}, kBF16, 66)));
    add(scan(shape("L37", 4, 16, 24, 1, 16, {37}, kF32, 67)));
    add(scan(shape("varlen37", 16, 64, 128, 4, 256, varlen(37, 256, 68), kBF16, 68)));
    add(scan(state(shape("varlen3", 16, 64, 128, 2, 256, {100, 256, 5}, kBF16, 69), kBF16)));
}

// ssd_fused with f16 passed states: against the twin that rounds them too (`twin`), or
// against the f32 twin.
SsdCase passed_f16(SsdCase k, bool twin) {
    k.passed_f16 = true;
    k.twin_f16 = twin;
    k.fused = true;
    return k;
}
SsdCase fused(SsdCase k) {
    k.fused = true;
    return k;
}
// ssd_fused with its gate epilogue (SsdGate): expected y·silu(z)·w and Σ v² per (token, head)
// from the CPU SSD and cpu::gate_partials.
SsdCase gated(SsdCase k) {
    k.gate = true;
    return fused(k);
}

// ... and with its conv prologue (SsdConv): expected from cpu::conv1d_causal, then as gated().
SsdCase convolved(SsdCase k) {
    k = gated(k);
    k.conv = true;
    return k;
}

// ... with Δ from raw dt columns (RawDt): expected from cpu::dt_softplus, then as before.
SsdCase raw_dt(SsdCase k) {
    k.raw_dt = true;
    return k;
}

DUALITY_OP_CASES(ssd_fused) {
    // The fused single-launch prefill against the CPU twin, same tolerances as ssd_chunked.
    // The mamba2-2.7b head shape: lengths 1, 7, 255, 256, 257 against the sequential recurrence,
    // 1000 and 4096 against the chunked CPU op.
    for (int32_t L : {1, 255, 256, 257})
        add(fused(
            seqref(shape("L" + std::to_string(L), 80, 64, 128, 1, 256, {L}, kBF16, 100 + L))));
    add(fused(seqref(zero(shape("L7", 80, 64, 128, 1, 256, {7}, kBF16, 107)))));
    add(fused(seqref(shape("L256", 80, 64, 128, 1, 256, {256}, kF16, 108))));
    add(fused(shape("L1000", 80, 64, 128, 1, 256, {1000}, kBF16, 109)));
    add(fused(zero(shape("L1000", 80, 64, 128, 1, 256, {1000}, kF16, 110))));
    add(fused(shape("L4096", 80, 64, 128, 1, 256, {4096}, kBF16, 111)));
    add(fused(zero(shape("L4096", 8, 64, 128, 1, 256, {4096}, kF16, 112))));
    add(fused(no_d(shape("L4096", 4, 64, 128, 2, 256, {4096}, kBF16, 113))));
    // Codestral (H 128, P 64, N 128, G 8).
    add(fused(shape("L300", 128, 64, 128, 8, 256, {300}, kBF16, 121)));
    add(fused(no_d(zero(shape("L600", 128, 64, 128, 8, 256, {600}, kF16, 122)))));
    // head_dim 80, 32, 128; d_state 64; chunk sizes 64, 128, 48, 16.
    add(fused(shape("L513", 32, 80, 128, 4, 256, {513}, kBF16, 131)));
    add(fused(shape("L300", 32, 80, 64, 4, 256, {300}, kF16, 132)));
    add(fused(shape("L300", 16, 32, 64, 2, 256, {300}, kF16, 133)));
    add(fused(shape("L700", 16, 64, 64, 2, 256, {700}, kBF16, 134)));
    add(fused(shape("L300", 16, 32, 128, 16, 256, {300}, kBF16, 135)));
    add(fused(shape("L400", 8, 128, 128, 1, 128, {400}, kBF16, 136)));
    add(fused(zero(shape("L1000", 8, 128, 64, 2, 256, {1000}, kF16, 137))));
    add(fused(shape("L1000", 16, 64, 128, 2, 64, {1000}, kBF16, 138)));
    add(fused(seqref(shape("L100", 8, 32, 64, 2, 48, {100}, kBF16, 139))));
    add(fused(seqref(shape("L37", 4, 64, 64, 1, 16, {37}, kF16, 140))));
    add(fused(seqref(shape("L130", 8, 80, 128, 4, 128, {130}, kF16, 141))));
    // Packed varlen batches with permuted slots.
    add(fused(shape("varlen3", 16, 64, 128, 2, 256, {1, 256, 513}, kBF16, 151)));
    add(fused(zero(shape("varlen3", 16, 64, 128, 2, 256, {300, 7, 512}, kF16, 152))));
    add(fused(shape("varlen37", 16, 64, 128, 4, 256, varlen(37, 256, 153), kBF16, 153)));
    add(fused(zero(shape("varlen37", 16, 64, 128, 4, 256, varlen(37, 256, 154), kF16, 154))));
    add(fused(shape("varlen300", 4, 32, 64, 2, 64, varlen(300, 64, 155), kBF16, 155)));
    add(fused(shape("varlen300", 2, 64, 128, 1, 256, varlen(300, 256, 156), kF16, 156)));
    add(fused(shape("varlen100", 8, 80, 128, 2, 128, varlen(100, 128, 157), kBF16, 157)));
    // Several sequences of many chunks each (fewer than half as many sequences as chunks): the
    // passed states go through two workspace entries per sequence in turn (state_entries), which
    // slow decays carry across every chunk; pairs of heads at chunk 256, two blocks per SM at 128.
    add(fused(slow_decay(shape("ring4", 16, 64, 128, 2, 128, {1000, 1, 700, 513}, kBF16, 158))));
    add(fused(slow_decay(zero(shape("ring3", 16, 64, 128, 1, 256, {1500, 3, 1100}, kF16, 159)))));
    // Blocks of two heads (chunks over 128 tokens whose rows, padded to 32, make 64-row tiles,
    // head_dim 64, d_state 128, no gate, an even number of heads per group; DUALITY_SSD_PAIR=0
    // turns them off; on sm_90a their output phase is the warpgroup form): chunks of 192 (three
    // tiles: one warpgroup takes one, the other two); chunks of 200 and 160 tokens (rows padded to
    // 224 and 160: one head a block); and the shapes that keep one head a block at chunk 256: 3
    // and 1 heads per group.
    add(fused(seqref(shape("L500", 8, 64, 128, 2, 192, {500}, kBF16, 246))));
    add(fused(seqref(shape("L300", 8, 64, 128, 1, 200, {300}, kBF16, 241))));
    add(fused(shape("varlen37", 16, 64, 128, 2, 160, varlen(37, 160, 242), kF16, 242)));
    add(fused(shape("L1000", 6, 64, 128, 2, 256, {1000}, kBF16, 244)));
    add(fused(zero(shape("L600", 4, 64, 128, 4, 256, {600}, kF16, 245))));
    // The 2.7b head shape at chunk 128, which the model runs where two blocks per SM fit.
    add(fused(seqref(shape("L257", 80, 64, 128, 1, 128, {257}, kBF16, 161))));
    add(fused(shape("L1000", 80, 64, 128, 1, 128, {1000}, kBF16, 162)));
    add(fused(zero(shape("L4096", 8, 64, 128, 1, 128, {4096}, kF16, 163))));
    add(fused(shape("varlen37", 16, 64, 128, 4, 128, varlen(37, 128, 164), kBF16, 164)));
    // d_state 64 at chunk 128 (two blocks per SM): the S record outgrows B's rows there.
    add(fused(shape("L1000", 16, 64, 64, 2, 128, {1000}, kBF16, 165)));
    add(fused(seqref(shape("L300", 8, 80, 64, 1, 96, {300}, kF16, 166))));
    // Fast decays: the per-element form of the intra-chunk decays (the default data, Δ <= 0.1,
    // mostly takes the factored form; see ssd_fused.cu).
    add(fused(big_dt(shape("L1000", 16, 64, 128, 1, 256, {1000}, kBF16, 171))));
    add(fused(big_dt(shape("L1000", 16, 64, 128, 1, 128, {1000}, kF16, 172))));
    add(fused(big_dt(shape("L1000", 16, 64, 128, 1, 128, {1000}, kBF16, 174))));
    add(fused(big_dt(seqref(shape("L300", 8, 80, 128, 2, 256, {300}, kBF16, 173)))));
    // f16 states passed between chunks: against the twin rounding them (2.7b head shape at both
    // chunk sizes, groups, varlen with a bf16 slot state, fast decays, f16 act, d_state 64/256),
    // then against the f32 twin (the option's accuracy, docs/numerics.md).
    for (bool twin : {true, false}) {
        add(passed_f16(shape("L4096", 80, 64, 128, 1, 256, {4096}, kBF16, 211), twin));
        add(passed_f16(shape("L4096", 80, 64, 128, 1, 128, {4096}, kBF16, 212), twin));
        add(passed_f16(zero(shape("L1000", 16, 64, 128, 8, 256, {1000}, kF16, 213)), twin));
        add(passed_f16(
            state(shape("varlen37", 16, 64, 128, 4, 128, varlen(37, 128, 214), kBF16, 214), kBF16),
            twin));
        add(passed_f16(big_dt(shape("L1000", 16, 64, 128, 1, 128, {1000}, kBF16, 215)), twin));
        add(passed_f16(shape("L1000", 16, 64, 128, 1, 256, {1000}, kF16, 216), twin));
        add(passed_f16(shape("L700", 16, 80, 64, 2, 128, {700}, kBF16, 217), twin));
        add(passed_f16(shape("L600", 8, 64, 256, 1, 128, {600}, kBF16, 218), twin));
    }
    // (Several sequences, their f16 states through two entries each.)
    add(passed_f16(shape("ring4", 16, 64, 128, 2, 128, {1000, 1, 700, 513}, kBF16, 219), true));
    // ... and with slow decays, where each passed state's rounding is carried over many chunks
    // (the accuracy docs/numerics.md reports comes from the cases against the f32 twin).
    for (bool twin : {true, false}) {
        add(passed_f16(slow_decay(shape("L4096", 16, 64, 128, 1, 256, {4096}, kBF16, 221)), twin));
        add(passed_f16(slow_decay(shape("L4096", 16, 64, 128, 1, 128, {4096}, kF16, 222)), twin));
        add(passed_f16(
            slow_decay(shape("varlen37", 16, 64, 128, 4, 128, varlen(37, 128, 223), kBF16, 223)),
            twin));
    }
    // Long memory on the default (f32) chain: the 2.7b head shape at both chunk sizes, f16.
    add(fused(slow_decay(shape("L4096", 80, 64, 128, 1, 256, {4096}, kBF16, 224))));
    add(fused(slow_decay(shape("L4096", 80, 64, 128, 1, 128, {4096}, kBF16, 225))));
    add(fused(slow_decay(zero(shape("L4096", 8, 64, 128, 2, 128, {4096}, kF16, 226)))));
    add(gated(slow_decay(shape("L4096", 16, 64, 128, 1, 128, {4096}, kBF16, 227))));
    // d_state 256 (one block per SM; chunk 128 fits up to head_dim 80, chunk 64 for 128).
    add(fused(seqref(shape("L257", 8, 64, 256, 1, 128, {257}, kBF16, 175))));
    add(fused(zero(shape("L600", 8, 64, 256, 1, 64, {600}, kF16, 176))));
    add(fused(shape("L300", 8, 128, 256, 2, 64, {300}, kBF16, 177)));
    add(fused(shape("L300", 8, 32, 256, 1, 128, {300}, kF16, 178)));
    add(fused(shape("L513", 16, 80, 256, 4, 128, {513}, kBF16, 179)));
    add(fused(big_dt(shape("L1000", 8, 64, 256, 1, 128, {1000}, kBF16, 180))));
    add(fused(big_dt(shape("L1000", 8, 64, 256, 1, 128, {1000}, kF16, 181))));
    add(fused(
        state(shape("varlen37", 16, 64, 256, 4, 128, varlen(37, 128, 160), kBF16, 160), kBF16)));
    // Reduced-precision state slots (rounded once on write, as ssd_chunked).
    add(fused(
        state(shape("varlen37", 16, 64, 128, 4, 256, varlen(37, 256, 158), kBF16, 158), kBF16)));
    add(fused(state(shape("varlen3", 16, 64, 128, 2, 256, {100, 256, 5}, kF16, 159), kF16)));
    // The gate epilogue (head_dim 64, d_state 128 only): the 2.7b head shape at both chunk
    // sizes, other chunk sizes and groups, partial chunks, varlen packs, no D.
    add(gated(seqref(shape("L257", 80, 64, 128, 1, 128, {257}, kBF16, 181))));
    add(gated(shape("L1000", 80, 64, 128, 1, 256, {1000}, kBF16, 182)));
    add(gated(zero(shape("L300", 16, 64, 128, 4, 256, {300}, kF16, 183))));
    add(gated(no_d(shape("L300", 8, 64, 128, 2, 64, {300}, kBF16, 184))));
    add(gated(shape("L400", 8, 64, 128, 1, 48, {400}, kF16, 185)));
    add(gated(seqref(shape("L7", 8, 64, 128, 1, 128, {7}, kF16, 186))));
    add(gated(shape("varlen37", 16, 64, 128, 4, 128, varlen(37, 128, 187), kBF16, 187)));
    // With the conv prologue (SsdConv): x raw, its conv from the slots' conv states (sequences
    // of 1 and 2 tokens among the varlen ones) or zero states, chunks after a sequence's first
    // reading the previous chunk's rows.
    add(convolved(seqref(shape("L257", 80, 64, 128, 1, 128, {257}, kBF16, 191))));
    add(convolved(shape("L1000", 80, 64, 128, 1, 128, {1000}, kBF16, 192)));
    add(convolved(shape("L1000", 8, 64, 128, 1, 96, {1000}, kF16, 197)));
    add(convolved(zero(shape("L300", 16, 64, 128, 4, 64, {300}, kF16, 193))));
    add(convolved(shape("L400", 8, 64, 128, 1, 48, {400}, kBF16, 194)));
    add(convolved(shape("varlen37", 16, 64, 128, 4, 128, varlen(37, 128, 195), kBF16, 195)));
    add(convolved(
        row_pad(shape("varlen37", 8, 64, 128, 1, 32, varlen(37, 32, 196), kF16, 196), 8)));
    // Δ computed inside from raw dt (the model's pure prefill passes), with and without the conv.
    add(raw_dt(gated(seqref(shape("L257", 80, 64, 128, 1, 128, {257}, kBF16, 201)))));
    add(raw_dt(gated(big_dt(shape("L1000", 8, 64, 128, 1, 256, {1000}, kF16, 202)))));
    add(raw_dt(convolved(shape("L1000", 80, 64, 128, 1, 128, {1000}, kBF16, 203))));
    add(raw_dt(
        convolved(shape("varlen37", 16, 64, 128, 4, 128, varlen(37, 128, 204), kBF16, 204))));
}

}  // namespace
}  // namespace duality::optest
