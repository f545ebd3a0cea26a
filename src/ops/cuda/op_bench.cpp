// Per-op GPU timings for `duality bench --ops` (see ops/op_bench.h). One layer's ops in the
// model's real shapes and strides, as the CUDA model calls them: x, B, C inside the conv output
// (rows conv_dim apart), the conv input and the raw dt inside in_proj's output (rows d_in_proj
// apart). Inputs are uniform random; states start at zero and keep evolving across launches.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/cuda/device_buffer.h"
#include "core/cuda/stream.h"
#include "core/profile_range.h"
#include "engine/roofline.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/gemm_decode.h"
#include "ops/cuda/ops.h"
#include "ops/op_bench.h"

namespace duality {
namespace {

using cuda::DeviceBuffer;

// Seconds per call of f: `warmup` untimed calls, then `iters` between two CUDA events.
template <typename F>
double time_calls(F&& f, int warmup, int iters, cudaStream_t s) {
    for (int i = 0; i < warmup; ++i) f();
    cudaEvent_t start, stop;
    DUALITY_CUDA_CHECK(cudaEventCreate(&start));
    DUALITY_CUDA_CHECK(cudaEventCreate(&stop));
    DUALITY_CUDA_CHECK(cudaEventRecord(start, s));
    for (int i = 0; i < iters; ++i) f();
    DUALITY_CUDA_CHECK(cudaEventRecord(stop, s));
    DUALITY_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    DUALITY_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    DUALITY_CUDA_CHECK(cudaEventDestroy(start));
    DUALITY_CUDA_CHECK(cudaEventDestroy(stop));
    return static_cast<double>(ms) * 1e-3 / iters;
}

// A packed batch of n_seq sequences of `len` tokens each (chunks of at most chunk_size tokens),
// with its device arrays.
struct Batch {
    cuda::VarlenBatch b;
    DeviceBuffer cu_seqlens, slots, chunk_start, chunk_len, chunk_seq, cu_chunks;
};
Batch make_batch(int64_t n_seq, int64_t len, int64_t chunk_size) {
    std::vector<int32_t> cu{0}, slots, start, clen, cseq, cu_chunks{0};
    for (int64_t s = 0; s < n_seq; ++s) {
        const int64_t first = cu.back();
        cu.push_back(static_cast<int32_t>(first + len));
        slots.push_back(static_cast<int32_t>(s));
        for (int64_t t = 0; t < len; t += chunk_size) {
            start.push_back(static_cast<int32_t>(first + t));
            clen.push_back(static_cast<int32_t>(std::min(chunk_size, len - t)));
            cseq.push_back(static_cast<int32_t>(s));
        }
        cu_chunks.push_back(static_cast<int32_t>(start.size()));
    }
    Batch b;
    auto up = [](const std::vector<int32_t>& v) {
        return cuda::to_device(std::span<const int32_t>(v));
    };
    b.cu_seqlens = up(cu);
    b.slots = up(slots);
    b.chunk_start = up(start);
    b.chunk_len = up(clen);
    b.chunk_seq = up(cseq);
    b.cu_chunks = up(cu_chunks);
    b.b.n_seq = n_seq;
    b.b.n_tokens = n_seq * len;
    b.b.n_chunk = static_cast<int64_t>(start.size());
    b.b.cu_seqlens = b.cu_seqlens.as<int32_t>();
    b.b.slots = b.slots.as<int32_t>();
    b.b.chunk_start = b.chunk_start.as<int32_t>();
    b.b.chunk_len = b.chunk_len.as<int32_t>();
    b.b.chunk_seq = b.chunk_seq.as<int32_t>();
    b.b.cu_chunks = b.cu_chunks.as<int32_t>();
    return b;
}

void* offset(const DeviceBuffer& b, int64_t elems, DType t) {
    return static_cast<char*>(b.data()) + elems * static_cast<int64_t>(dtype_size(t));
}

class Bench {
  public:
    Bench(const OpBenchOptions& o, cudaStream_t s) : o_(o), c_(o.config), s_(s) {
        a_ = static_cast<double>(dtype_size(o.act));
    }

    Status init_weights() {
        const int64_t D = c_.d_model, E = c_.d_inner, H = c_.n_head, n_in = c_.d_in_proj();
        const int64_t conv_dim = c_.conv_dim(), W = c_.d_conv;
        // Copies of each GEMM weight to rotate through, together at least twice the L2 cache,
        // so that every call reads its weight from HBM as the model's layers do (the 2.7b
        // out_proj, 26 MB, would otherwise stay in an H200's 50 MB L2 from call to call).
        int l2_bytes = 0;
        int device = 0;
        DUALITY_CUDA_CHECK(cudaGetDevice(&device));
        DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device));
        auto copies = [&](int64_t elems) {
            const auto bytes = static_cast<double>(elems) * a_;
            return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(2.0 * l2_bytes / bytes)), 1,
                                       64);
        };
        for (int64_t i = copies(n_in * D); i > 0; --i) {
            DUALITY_ASSIGN_OR_RETURN(DeviceBuffer w, alloc(n_in * D, o_.act, -0.03f, 0.03f));
            w_in_.push_back(std::move(w));
        }
        for (int64_t i = copies(D * E); i > 0; --i) {
            DUALITY_ASSIGN_OR_RETURN(DeviceBuffer w, alloc(D * E, o_.act, -0.02f, 0.02f));
            w_out_.push_back(std::move(w));
        }
        DUALITY_ASSIGN_OR_RETURN(conv_w_, alloc(conv_dim * W, DType::kF32, -0.5f, 0.5f));
        DUALITY_ASSIGN_OR_RETURN(conv_b_, alloc(conv_dim, DType::kF32, -0.1f, 0.1f));
        DUALITY_ASSIGN_OR_RETURN(A_, alloc(H, DType::kF32, -16.0f, -1.0f));
        DUALITY_ASSIGN_OR_RETURN(Dp_, alloc(H, DType::kF32, -1.0f, 1.0f));
        DUALITY_ASSIGN_OR_RETURN(dt_bias_, alloc(H, DType::kF32, -4.0f, -2.0f));
        return Status::ok();
    }

    // in_proj, out_proj, conv1d and the SSD (five-step and fused) for one sequence of T tokens.
    void prefill(int64_t T, std::vector<OpBenchRow>* rows) {
        const std::string shape = "T=" + std::to_string(T);
        const char* ops[] = {"in_proj", "out_proj", "conv1d", "ssd_chunked", "ssd_fused"};
        Status st = run_prefill(T, shape, rows);
        if (!st.is_ok()) skip_missing(ops, shape, st, rows);
    }

    // in_proj, out_proj (GEMMs with m = B), conv1d and the decode step for B sequences.
    void decode(int64_t B, std::vector<OpBenchRow>* rows) {
        const std::string shape = "B=" + std::to_string(B);
        const char* ops[] = {"in_proj", "out_proj", "conv1d", "ssm_decode"};
        Status st = run_decode(B, shape, rows);
        if (!st.is_ok()) skip_missing(ops, shape, st, rows);
    }

    Status init_gemm() {
        DUALITY_ASSIGN_OR_RETURN(gemm_, cuda::Gemm::create());
        // The survey GEMM times the decode kernel and, with --gemm-algos, cuBLASLt's candidates.
        DUALITY_ASSIGN_OR_RETURN(
            survey_,
            cuda::Gemm::create(size_t{32} << 20, o_.gemm_algos > 0 ? cuda::Gemm::kMaxAlgos : 1));
        return Status::ok();
    }

  private:
    Result<DeviceBuffer> alloc(int64_t n, DType t, float lo, float hi) {
        DUALITY_ASSIGN_OR_RETURN(
            DeviceBuffer b,
            DeviceBuffer::allocate(static_cast<size_t>(n) * dtype_size(t), "the op benchmark"));
        cuda::fill_uniform(b.data(), n, t, o_.seed + seq_++, lo, hi, s_);
        return b;
    }
    Result<DeviceBuffer> zeros(int64_t n, DType t) {
        DUALITY_ASSIGN_OR_RETURN(
            DeviceBuffer b,
            DeviceBuffer::allocate(static_cast<size_t>(n) * dtype_size(t), "the op benchmark"));
        DUALITY_CUDA_CHECK(cudaMemsetAsync(b.data(), 0, b.bytes(), s_));
        return b;
    }

    // Rows for the ops of `names` that did not make it into `rows` for this shape.
    template <size_t kN>
    static void skip_missing(const char* const (&names)[kN], const std::string& shape,
                             const Status& why, std::vector<OpBenchRow>* rows) {
        for (const char* name : names) {
            bool done = false;
            for (const OpBenchRow& r : *rows) done |= r.op == name && r.shape == shape;
            if (!done) rows->push_back({name, shape, 0, 0, 0, why.message()});
        }
    }

    template <typename F>
    void add(std::vector<OpBenchRow>* rows, const std::string& op, const std::string& shape,
             double bytes, double flops, F&& f) {
        const ProfileRange range("bench_op");  // the timed calls (scripts/gpu-check.sh profile)
        const double sec = time_calls(f, o_.warmup, o_.iters, s_);
        rows->push_back({op, shape, sec, bytes, flops, ""});
    }

    void gemms(int64_t m, const std::string& shape, const DeviceBuffer& u,
               const DeviceBuffer& zxbcdt, const DeviceBuffer& gated, const DeviceBuffer& h,
               std::vector<OpBenchRow>* rows) {
        gemm_rows("in_proj", m, shape, u, c_.d_model, w_in_, zxbcdt, c_.d_in_proj(), rows);
        gemm_rows("out_proj", m, shape, gated, c_.d_inner, w_out_, h, c_.d_model, rows);
    }

    // y {m, n} = a {m, k} · w {n, k}ᵀ as the row `name`, each call with the next copy of w; for 2
    // <= m <= kDecodeMaxM the decode GEMM (gemm_decode.cu) as "<name>/decode" whatever
    // DUALITY_DECODE_GEMM says; and with --gemm-algos each cuBLASLt candidate as "<name>/lt<i>"
    // (lt2: the heuristic's third choice).
    void gemm_rows(const std::string& name, int64_t m, const std::string& shape,
                   const DeviceBuffer& a, int64_t k, const std::vector<DeviceBuffer>& ws,
                   const DeviceBuffer& y, int64_t n, std::vector<OpBenchRow>* rows) {
        size_t next = 0;
        auto w = [&] { return ws[next++ % ws.size()].data(); };
        const double md = static_cast<double>(m), nd = static_cast<double>(n);
        const double kd = static_cast<double>(k);
        const double bytes = (md * kd + nd * kd + md * nd) * a_, flops = 2 * md * nd * kd;
        // The model's choice: cuBLASLt's candidates timed over the weight copies where
        // Gemm::tune takes the product, as the model does at load.
        std::vector<const void*> copies;
        for (const DeviceBuffer& c : ws) copies.push_back(c.data());
        gemm_.tune(a.data(), k, copies, y.data(), n, o_.act, m, n, k, o_.act, s_);
        add(rows, name, shape, bytes, flops,
            [&] { gemm_.run(a.data(), k, w(), y.data(), n, o_.act, m, n, k, o_.act, s_); });
        if (m >= 2 && m <= cuda::kDecodeMaxM) {
            survey_.set_decode_kernel(true);
            if (survey_.uses_decode_kernel(a.data(), k, ws[0].data(), o_.act, m, n, k, o_.act)) {
                add(rows, name + "/decode", shape, bytes, flops, [&] {
                    survey_.run(a.data(), k, w(), y.data(), n, o_.act, m, n, k, o_.act, s_);
                });
            } else {
                rows->push_back({name + "/decode", shape, 0, 0, 0, "not supported"});
            }
            survey_.set_decode_kernel(cuda::Gemm::DecodeKernel::kOff);
        }
        // Split-k in two parts (Gemm::run_split_k, which the model runs for out_proj at these
        // rows by default from the 780m up; DUALITY_OUT_PROJ_SPLIT), for every product, as
        // "<name>/split2".
        constexpr int kSplits = 2;
        if (m > 16 && m <= 256 &&
            cuda::Gemm::split_k_supported(a.data(), k, ws[0].data(), k, kSplits, o_.act)) {
            auto parts = DeviceBuffer::allocate(static_cast<size_t>(kSplits * m * n) * 4,
                                                "the op benchmark's split-k parts");
            if (parts) {
                float* yp = parts->as<float>();
                gemm_.tune_split_k(a.data(), k, copies, yp, m, n, k, kSplits, o_.act, s_);
                const double split_bytes = (md * kd + nd * kd) * a_ + kSplits * md * nd * 4;
                add(rows, name + "/split2", shape, split_bytes, flops,
                    [&] { gemm_.run_split_k(a.data(), k, w(), yp, m, n, k, kSplits, o_.act, s_); });
            }
        }
        if (o_.gemm_algos <= 0) return;
        survey_.set_small_m_kernel(false);
        const int n_algos =
            survey_.algo_count(a.data(), k, ws[0].data(), y.data(), n, o_.act, m, n, k, o_.act);
        for (int i = 0; i < std::min(o_.gemm_algos, n_algos); ++i) {
            survey_.set_algo_index(i);
            add(rows, name + "/lt" + std::to_string(i), shape, bytes, flops,
                [&] { survey_.run(a.data(), k, w(), y.data(), n, o_.act, m, n, k, o_.act, s_); });
        }
        survey_.set_algo_index(0);
    }

    cuda::Conv1dArgs conv_args(const Batch& b, const DeviceBuffer& zxbcdt,
                               const DeviceBuffer& state, const DeviceBuffer& xbc) const {
        cuda::Conv1dArgs a;
        a.batch = b.b;
        a.channels = c_.conv_dim();
        a.width = c_.d_conv;
        a.x = offset(zxbcdt, c_.d_inner, o_.act);  // [z | xBC | dt]
        a.x_stride = c_.d_in_proj();
        a.weight = conv_w_.as<float>();
        a.bias = c_.conv_bias ? conv_b_.as<float>() : nullptr;
        a.state = state.as<float>();
        a.state_slot_stride = (c_.d_conv - 1) * c_.conv_dim();
        a.out = xbc.data();
        return a;
    }
    double conv_bytes(int64_t tokens, int64_t n_seq) const {
        const auto cd = static_cast<double>(c_.conv_dim());
        return static_cast<double>(tokens) * cd * 2 * a_ +
               cd * static_cast<double>(c_.d_conv + 1) * 4 +
               static_cast<double>(n_seq) * 2 * static_cast<double>(c_.d_conv - 1) * cd * 4;
    }

    cuda::SsdArgs ssd_args(const Batch& b, const DeviceBuffer& xbc, const DeviceBuffer& state,
                           const DeviceBuffer& y) const {
        const int64_t E = c_.d_inner, GN = c_.n_group * c_.d_state;
        cuda::SsdArgs a;
        a.batch = b.b;
        a.n_head = c_.n_head;
        a.head_dim = c_.head_dim;
        a.d_state = c_.d_state;
        a.n_group = c_.n_group;
        a.chunk_size = c_.chunk_size;
        a.x = xbc.data();
        a.x_stride = c_.conv_dim();
        a.B = offset(xbc, E, o_.act);
        a.C = offset(xbc, E + GN, o_.act);
        a.bc_stride = c_.conv_dim();
        a.A = A_.as<float>();
        a.D = Dp_.as<float>();
        a.state = state.data();
        a.state_slot_stride = c_.n_head * c_.head_dim * c_.d_state;
        a.state_dtype = o_.state_dtype;
        a.y = y.data();
        return a;
    }
    // Δ from raw dt columns (rows `stride` apart) with the config's bias and clamps.
    cuda::RawDt raw_dt(const void* dt_raw, int64_t stride) const {
        cuda::RawDt d;
        d.dt_raw = dt_raw;
        d.raw_stride = stride;
        d.dt_bias = dt_bias_.as<float>();
        d.dt_min = c_.dt_min;
        d.dt_max = c_.dt_max;
        return d;
    }
    double state_rw_bytes(int64_t n_seq) const {
        return 2.0 * static_cast<double>(n_seq) *
               static_cast<double>(c_.n_head * c_.head_dim * c_.d_state) *
               static_cast<double>(dtype_size(o_.state_dtype));
    }

    Status run_prefill(int64_t T, const std::string& shape, std::vector<OpBenchRow>* rows) {
        const int64_t D = c_.d_model, E = c_.d_inner, H = c_.n_head, n_in = c_.d_in_proj();
        const int64_t conv_dim = c_.conv_dim(), GN = c_.n_group * c_.d_state;
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer u, alloc(T * D, o_.act, -1, 1));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer zxbcdt, alloc(T * n_in, o_.act, -1, 1));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer gated, alloc(T * E, o_.act, -1, 1));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer h, alloc(T * D, o_.act, -1, 1));
        gemms(T, shape, u, zxbcdt, gated, h, rows);
        u = DeviceBuffer();
        h = DeviceBuffer();
        gated = DeviceBuffer();

        const Batch batch = make_batch(1, T, c_.chunk_size);
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer conv_state,
                                 zeros((c_.d_conv - 1) * conv_dim, DType::kF32));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer xbc, alloc(T * conv_dim, o_.act, -1, 1));
        const cuda::Conv1dArgs ca = conv_args(batch, zxbcdt, conv_state, xbc);
        add(rows, "conv1d", shape, conv_bytes(T, 1),
            static_cast<double>(T) * 2.0 * static_cast<double>(c_.d_conv * conv_dim),
            [&] { cuda::conv1d(ca, o_.act, s_); });
        zxbcdt = DeviceBuffer();

        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer dt, alloc(T * H, DType::kF32, 1e-3f, 0.1f));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer state,
                                 zeros(c_.n_head * c_.head_dim * c_.d_state, o_.state_dtype));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer y, zeros(T * E, o_.act));
        const cuda::SsdArgs sa = ssd_args(batch, xbc, state, y);
        DUALITY_ASSIGN_OR_RETURN(
            DeviceBuffer ws,
            DeviceBuffer::allocate(cuda::ssd_chunked_workspace_bytes(sa), "the SSD workspace"));
        const auto Td = static_cast<double>(T);
        const double bytes =
            Td * (2.0 * static_cast<double>(E) + 2.0 * static_cast<double>(GN)) * a_ +
            Td * static_cast<double>(H) * 4 + state_rw_bytes(1);
        // bytes: x, B, C, Δ read once, y written once, the state read and written: the fused
        // roofline (spec 10.2), so both rows print their fraction of it.
        add(rows, "ssd_chunked", shape, bytes, Td * roofline::prefill_flops_per_token(c_, T).ssd,
            [&] { cuda::ssd_chunked(sa, dt.as<float>(), ws.data(), o_.act, s_); });
        if (T <= 256)  // the sequential scan: what short prefill pieces may use instead
            add(rows, "ssd_scan", shape, bytes, Td * roofline::prefill_flops_per_token(c_, T).ssd,
                [&] { cuda::ssd_scan(sa, dt.as<float>(), o_.act, s_); });
        if (!cuda::ssd_fused_supported(sa, o_.act)) {
            rows->push_back({"ssd_fused", shape, 0, 0, 0,
                             "unsupported shape/dtype/device (five-step path is used)"});
            return Status::ok();
        }
        // One row: ssd_fused over `args` with its own workspace and (zeroed) sync buffer; with
        // `gate` and `raw_dt`, the form pure bf16 prefill passes run (the gate epilogue reading
        // z and writing v·w and Σ v², Δ from the raw dt columns; models with d_inner <= 4096 also
        // take the conv prologue there, which this row leaves out), `gate_bytes` more moved.
        const double flops = Td * roofline::prefill_flops_per_token(c_, T).ssd;
        auto time_fused = [&](const std::string& name, const cuda::SsdArgs& args,
                              const cuda::SsdGate* gate = nullptr,
                              const cuda::RawDt* raw_dt = nullptr,
                              double gate_bytes = 0) -> Status {
            DUALITY_ASSIGN_OR_RETURN(
                DeviceBuffer fws,
                DeviceBuffer::allocate(cuda::ssd_fused_workspace_bytes(args), "the SSD workspace"));
            DUALITY_ASSIGN_OR_RETURN(
                DeviceBuffer sync,
                DeviceBuffer::allocate(cuda::ssd_fused_sync_bytes(args), "the SSD sync buffer"));
            DUALITY_CUDA_CHECK(cudaMemsetAsync(sync.data(), 0, sync.bytes(), s_));
            add(rows, name, shape, bytes + gate_bytes, flops, [&] {
                cuda::ssd_fused(args, dt.as<float>(), fws.data(), sync.data(), o_.act, s_, gate,
                                nullptr, raw_dt);
            });
            return Status::ok();
        };
        DUALITY_RETURN_IF_ERROR(time_fused("ssd_fused", sa));
        // The chunk size the model builds its table with, where it differs (ssd_fused_chunk).
        const int64_t q = cuda::ssd_fused_chunk(sa, o_.act);
        const Batch qbatch = make_batch(1, T, q);
        cuda::SsdArgs qa = ssd_args(qbatch, xbc, state, y);
        qa.chunk_size = q;
        if (q != c_.chunk_size)
            DUALITY_RETURN_IF_ERROR(time_fused("ssd_fused/q" + std::to_string(q), qa));
        // The model's form at that chunk (bf16, one norm group): gate and raw Δ (y then holds
        // v·w). What the gate epilogue costs is this row against ssd_fused/q<chunk> (or against
        // ssd_fused where the config's chunk is already the model's).
        if (o_.act != DType::kBF16 || c_.n_group != 1) return Status::ok();
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer z, alloc(T * E, o_.act, -1, 1));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer gate_w, alloc(E, DType::kF32, 0.5f, 1.5f));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer ssq, zeros(T * H, DType::kF32));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer dt_raw, alloc(T * H, o_.act, -4.0f, 0.0f));
        const cuda::SsdGate gate{z.data(), E, gate_w.as<float>(), ssq.as<float>()};
        if (!cuda::ssd_gate_supported(qa, gate)) return Status::ok();
        const cuda::RawDt rd = raw_dt(dt_raw.data(), H);
        DUALITY_RETURN_IF_ERROR(time_fused(
            "ssd_fused/q" + std::to_string(q) + "+gate", qa, &gate, &rd,
            Td * (static_cast<double>(E) * a_ + H * 4.0 + static_cast<double>(H) * (a_ - 4.0))));
        return Status::ok();
    }

    Status run_decode(int64_t B, const std::string& shape, std::vector<OpBenchRow>* rows) {
        const int64_t D = c_.d_model, E = c_.d_inner, H = c_.n_head, n_in = c_.d_in_proj();
        const int64_t conv_dim = c_.conv_dim(), GN = c_.n_group * c_.d_state;
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer u, alloc(B * D, o_.act, -1, 1));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer zxbcdt, alloc(B * n_in, o_.act, -1, 1));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer gated, alloc(B * E, o_.act, -1, 1));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer h, alloc(B * D, o_.act, -1, 1));
        gemms(B, shape, u, zxbcdt, gated, h, rows);

        // The decode kernels read their state before pdl::wait() (early reads, core/cuda/pdl.cuh),
        // so the call in front of one must not write the state it reads: the timed calls take two
        // state buffers in turn (as a model's layers do).
        const Batch batch = make_batch(B, 1, c_.chunk_size);
        const int64_t conv_elems = B * (c_.d_conv - 1) * conv_dim;
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer conv_state0, zeros(conv_elems, DType::kF32));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer conv_state1, zeros(conv_elems, DType::kF32));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer xbc, alloc(B * conv_dim, o_.act, -1, 1));
        const cuda::Conv1dArgs ca[2] = {conv_args(batch, zxbcdt, conv_state0, xbc),
                                        conv_args(batch, zxbcdt, conv_state1, xbc)};
        int turn = 0;
        add(rows, "conv1d", shape, conv_bytes(B, B),
            static_cast<double>(B) * 2.0 * static_cast<double>(c_.d_conv * conv_dim),
            [&] { cuda::conv1d(ca[turn ^= 1], o_.act, s_); });

        const int64_t state_elems = B * H * c_.head_dim * c_.d_state;
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer state0, zeros(state_elems, o_.state_dtype));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer state1, zeros(state_elems, o_.state_dtype));
        DUALITY_ASSIGN_OR_RETURN(DeviceBuffer y, zeros(B * E, o_.act));
        const cuda::SsdArgs sa[2] = {ssd_args(batch, xbc, state0, y),
                                     ssd_args(batch, xbc, state1, y)};
        const cuda::RawDt dd = raw_dt(offset(zxbcdt, 2 * E + 2 * GN, o_.act), n_in);
        const auto Bd = static_cast<double>(B);
        const double bytes =
            state_rw_bytes(B) + Bd *
                                    (2.0 * static_cast<double>(E) + 2.0 * static_cast<double>(GN) +
                                     static_cast<double>(H)) *
                                    a_;
        // Per state element: decay and update (3 FLOPs) and the readout y = S·C (2).
        const double flops = 5.0 * Bd * static_cast<double>(H * c_.head_dim * c_.d_state);
        add(rows, "ssm_decode", shape, bytes, flops,
            [&] { cuda::ssm_decode(sa[turn ^= 1], dd, o_.act, s_); });
        return Status::ok();
    }

    const OpBenchOptions& o_;
    const ModelConfig& c_;
    cudaStream_t s_;
    double a_ = 2;  // bytes per act element
    uint64_t seq_ = 0;
    cuda::Gemm gemm_;
    cuda::Gemm survey_;  // the decode GEMM rows; with --gemm-algos, kMaxAlgos candidates per shape
    std::vector<DeviceBuffer> w_in_, w_out_;  // copies of in_proj's and out_proj's weight
    DeviceBuffer conv_w_, conv_b_, A_, Dp_, dt_bias_;
};

}  // namespace

Result<OpBenchResult> run_op_bench(const OpBenchOptions& options) {
    if (cuda::device_count() == 0) return unsupported("no CUDA device for the op benchmark");
    DUALITY_RETURN_IF_ERROR(cuda::to_status(cudaSetDevice(options.device_index), "cudaSetDevice"));
    cudaDeviceProp prop{};
    DUALITY_CUDA_CHECK(cudaGetDeviceProperties(&prop, options.device_index));
    OpBenchResult result;
    result.device = prop.name;
    cuda::Stream stream;
    Bench bench(options, stream.get());
    DUALITY_RETURN_IF_ERROR(bench.init_gemm());
    DUALITY_RETURN_IF_ERROR(bench.init_weights());
    for (int64_t T : options.token_counts) bench.prefill(T, &result.rows);
    for (int64_t B : options.decode_batches) bench.decode(B, &result.rows);
    stream.sync();
    return result;
}

}  // namespace duality
