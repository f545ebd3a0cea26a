// The Mamba-2 language model on an NVIDIA GPU (spec sections 4-8, the CPU twin is cpu_model.cpp):
//   h = Emb[tokens]; per layer: u = RMSNorm(residual += h); zxbcdt = u·W_inᵀ (cuBLASLt);
//   xBC = silu(conv1d(xBC_raw)); Δ = clamp(softplus(dt + dt_bias));
//   y = SSD(x, Δ, A, B, C) + D·x (chunked five-step prefill, or the fused decode step);
//   h = GatedRMSNorm(y, z)·W_outᵀ;  logits = RMSNorm(residual + h)·W_headᵀ for the wanted rows.
// A step runs as passes of at most max_tokens packed tokens. Passes in which every sequence has
// one token are decode passes; they are replayed from a CUDA graph captured per batch bucket.
// In mixed passes the one-token sequences come first and their SSD runs as the decode step; only
// the longer ones go through the prefill SSD, so a decode token's SSD is computed the same way
// whether or not a prefill shares its step (its GEMMs still vary with the pass's row count).
// All buffers come from allocations made at load, so no pass allocates device memory.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/cuda/device_buffer.h"
#include "core/cuda/stream.h"
#include "core/env.h"
#include "core/half.h"
#include "model/backends.h"
#include "model/cpu_model.h"
#include "model/cuda/device_weights.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/gemm_small_m.h"
#include "ops/cuda/ops.h"

namespace duality {
namespace {

using cuda::DeviceBuffer;

int64_t next_pow2(int64_t x) {
    int64_t p = 1;
    while (p < x) p *= 2;
    return p;
}

// One sequence's part of a pass.
struct PassSeq {
    int slot;
    std::span<const int32_t> tokens;
    int64_t result_row;  // row of the step's logits it fills, or -1 (no logits wanted)
};

// Fixed-size device scratch, laid out once for max_tokens so pointers never change (the decode
// graphs capture them).
struct Workspace {
    void* h;            // {T, d_model} act: embedding / block output
    float* residual;    // {T, d_model} f32
    void* u;            // {T, d_model} act: normed input
    void* zxbcdt;       // {T, d_in_proj} act: [z | xBC | dt]
    void* xbc;          // {T, conv_dim} act: conv + SiLU output [x | B | C]
    float* dt;          // {T, n_head} f32: Δ (prefill)
    void* y;            // {T, d_inner} act: SSD output
    void* gated;        // {T, d_inner} act: gated-norm output (or SsdGate's y·silu(z)·w)
    float* ssq;         // {T, n_head · scale_parts_} f32: the gate epilogues' sums of squares
    float* ssq_sel;     // {R, n_head} f32: their rows whose logits are wanted
    float* h_parts;     // {out_splits, max_seqs, d_model} f32: split-k out_proj's parts (decode)
    float* gemv_parts;  // {gemv_fused_parts(d_model)} f32: batch-1 residual sums of squares
    void* ssd;          // ssd_chunked workspace
    void* h_sel;        // {R, d_model} act: rows whose logits are wanted
    float* res_sel;     // {R, d_model} f32
    float* logits;      // {R, vocab_padded} f32
    void* sample_ws;    // sampling workspace
    int32_t* ids;       // {R}: sampled tokens
    cuda::DeviceSampling* sampling;  // {R}
    // Batch description: one block laid out as DescLayout says, uploaded by one copy per pass.
    int32_t* tokens;       // {T}
    int32_t* cu_seqlens;   // {S + 1}
    int32_t* slots;        // {S}
    int32_t* chunk_start;  // {n_chunk_max}
    int32_t* chunk_len;
    int32_t* chunk_seq;
    int32_t* cu_chunks;   // {S + 1}
    int32_t* rows;        // {S}: token index of each wanted row
    int32_t* cu_prefill;  // {S + 1}: cu_seqlens of the prefill sequences (after the decode ones)
};

// Offsets (in int32) of the batch description's fields, the same in the pinned staging buffer
// and on the device, so that a pass uploads [0, tokens + T) with one copy. The tokens come last
// because their count T varies from pass to pass (the other fields are short).
struct DescLayout {
    int64_t cu_seqlens = 0, slots = 0, cu_chunks = 0, rows = 0, cu_prefill = 0;
    int64_t chunk_start = 0, chunk_len = 0, chunk_seq = 0, tokens = 0, total = 0;

    DescLayout(int64_t max_seqs, int64_t n_chunk_max, int64_t max_tokens) {
        int64_t at = 0;
        auto field = [&](int64_t n) {
            const int64_t here = at;
            at += n;
            return here;
        };
        cu_seqlens = field(max_seqs + 1);
        slots = field(max_seqs);
        cu_chunks = field(max_seqs + 1);
        rows = field(max_seqs);
        cu_prefill = field(max_seqs + 1);
        chunk_start = field(n_chunk_max);
        chunk_len = field(n_chunk_max);
        chunk_seq = field(n_chunk_max);
        tokens = field(max_tokens);
        total = at;
    }
};

class CudaModel final : public Model {
  public:
    static Result<std::unique_ptr<Model>> create(ModelConfig config, const ModelWeights* weights,
                                                 uint64_t seed, const LoadOptions& o) {
        if (o.device_index < 0 || o.device_index >= cuda::device_count())
            return invalid_argument("no CUDA device " + std::to_string(o.device_index) + " (" +
                                    std::to_string(cuda::device_count()) + " found)");
        DUALITY_RETURN_IF_ERROR(
            cuda::to_status(cudaSetDevice(o.device_index), "cannot use the CUDA device"));
        std::unique_ptr<CudaModel> m(new CudaModel(std::move(config), o));
        DUALITY_RETURN_IF_ERROR(m->init(weights, seed));
        return std::unique_ptr<Model>(std::move(m));
    }

    const ModelConfig& config() const override { return c_; }

    SequenceState new_state() const override {
        SequenceState s;
        s.n_layer = c_.n_layer;
        s.d_conv = c_.d_conv;
        s.conv_dim = c_.conv_dim();
        s.n_head = c_.n_head;
        s.head_dim = c_.head_dim;
        s.d_state = c_.d_state;
        s.conv.assign(static_cast<size_t>(conv_slot_elems_), 0.0f);
        s.ssm.assign(static_cast<size_t>(ssm_slot_elems_), 0.0f);
        return s;
    }

    DeviceInfo device_info() const override { return info_; }
    int n_slots() const override { return opt_.n_slots; }

    Status reset_slot(int slot) override {
        DUALITY_RETURN_IF_ERROR(check_slot(slot));
        clear_slot(slot);
        return Status::ok();
    }

    Status read_slot(int slot, SequenceState& out) const override {
        DUALITY_RETURN_IF_ERROR(check_slot(slot));
        out = new_state();
        download_slot(slot, out);
        return Status::ok();
    }

    Status write_slot(int slot, const SequenceState& s) override {
        DUALITY_RETURN_IF_ERROR(check_slot(slot));
        DUALITY_RETURN_IF_ERROR(check_state(s));
        upload_slot(slot, s);
        return Status::ok();
    }

    Status copy_slot(int from, int to) override {
        DUALITY_RETURN_IF_ERROR(check_slot(from));
        DUALITY_RETURN_IF_ERROR(check_slot(to));
        if (from == to) return Status::ok();
        DUALITY_CUDA_CHECK(cudaMemcpyAsync(conv_ptr(to), conv_ptr(from), conv_slot_bytes(),
                                           cudaMemcpyDeviceToDevice, stream_.get()));
        DUALITY_CUDA_CHECK(cudaMemcpyAsync(ssm_ptr(to), ssm_ptr(from), ssm_slot_bytes(),
                                           cudaMemcpyDeviceToDevice, stream_.get()));
        slot_tokens_[static_cast<size_t>(to)] = slot_tokens_[static_cast<size_t>(from)];
        // No wait: every later pass, copy and memset is ordered behind it on the model's stream,
        // and the host copies (upload_slot, download_slot) wait for the stream first. The engine
        // caches up to 64 states (168 MB each on the 2.7b) when a wave of requests ends: queuing
        // the next step does not wait for them (run_pass waits only for its staging buffer).
        return Status::ok();
    }

    Result<std::vector<float>> forward(std::span<const int32_t> tokens, SequenceState& state,
                                       LogitsMode mode) override {
        DUALITY_RETURN_IF_ERROR(check_state(state));
        DUALITY_RETURN_IF_ERROR(check_tokens(tokens));
        if (tokens.empty()) return std::vector<float>{};
        const int scratch = opt_.n_slots;
        upload_slot(scratch, state);
        std::vector<float> logits;
        const int64_t T = static_cast<int64_t>(tokens.size());
        for (int64_t t0 = 0; t0 < T; t0 += max_tokens_) {
            const int64_t n = std::min(max_tokens_, T - t0);
            const bool last = t0 + n == T;
            std::vector<PassSeq> pass{
                {scratch, tokens.subspan(static_cast<size_t>(t0), static_cast<size_t>(n)),
                 last && mode == LogitsMode::kLast ? 0 : -1}};
            run_pass(pass, mode == LogitsMode::kAll);
            if (mode == LogitsMode::kAll)
                append_all_logits(n, logits);
            else if (mode == LogitsMode::kLast && last)
                append_rows(1, logits);
        }
        download_slot(scratch, state);
        state.n_tokens += T;
        return logits;
    }

    // forward()'s passes on the slot itself: the default would move the state through the host
    // four times (168 MB each on the 2.7b).
    Result<std::vector<float>> step_all_logits(int slot, std::span<const int32_t> tokens) override {
        DUALITY_RETURN_IF_ERROR(check_slot(slot));
        DUALITY_RETURN_IF_ERROR(check_tokens(tokens));
        if (tokens.empty()) return invalid_argument("step_all_logits: no tokens");
        std::vector<float> logits;
        const int64_t T = static_cast<int64_t>(tokens.size());
        for (int64_t t0 = 0; t0 < T; t0 += max_tokens_) {
            const int64_t n = std::min(max_tokens_, T - t0);
            std::vector<PassSeq> pass{
                {slot, tokens.subspan(static_cast<size_t>(t0), static_cast<size_t>(n)), -1}};
            run_pass(pass, true);
            append_all_logits(n, logits);
        }
        slot_tokens_[static_cast<size_t>(slot)] += T;
        return logits;
    }

    Result<std::vector<float>> step(std::span<const SeqInput> batch) override {
        DUALITY_RETURN_IF_ERROR(check_batch(batch, opt_.n_slots));
        for (const SeqInput& in : batch) DUALITY_RETURN_IF_ERROR(check_tokens(in.tokens));
        std::vector<float> logits(batch.size() * static_cast<size_t>(c_.vocab_size));
        run_step(batch, [&](const std::vector<PassSeq>& pass, bool /*last*/) {
            std::vector<float> rows;
            append_rows(count_wanted(pass), rows);
            size_t r = 0;
            for (const PassSeq& p : pass) {
                if (p.result_row < 0) continue;
                std::copy_n(rows.data() + r++ * static_cast<size_t>(c_.vocab_size), c_.vocab_size,
                            logits.data() + p.result_row * c_.vocab_size);
            }
        });
        return logits;
    }

    Result<std::vector<int32_t>> step_sample(std::span<const SeqInput> batch,
                                             std::span<const SamplingParams> params,
                                             std::span<const uint64_t> draws) override {
        DUALITY_RETURN_IF_ERROR(start_step_sample(batch, params, draws));
        return finish_step_sample();
    }

    bool overlaps_steps() const override { return true; }

    // Queues the step and the draws of its last pass, whose ids finish_step_sample() reads once
    // the stream is done (earlier passes of a step longer than max_tokens wait for theirs here).
    Status start_step_sample(std::span<const SeqInput> batch,
                             std::span<const SamplingParams> params,
                             std::span<const uint64_t> draws) override {
        if (inflight_.active)
            return invalid_argument("start_step_sample: a step is already started");
        if (params.size() != batch.size() || draws.size() != batch.size())
            return invalid_argument("step_sample: one SamplingParams and draw number per sequence");
        DUALITY_RETURN_IF_ERROR(check_batch(batch, opt_.n_slots));
        for (const SeqInput& in : batch) DUALITY_RETURN_IF_ERROR(check_tokens(in.tokens));
        for (const SamplingParams& p : params) DUALITY_RETURN_IF_ERROR(p.validate());
        inflight_.ids.assign(batch.size(), 0);
        run_step(batch, [&](const std::vector<PassSeq>& pass, bool last) {
            const int64_t n = count_wanted(pass);
            auto* sp = sample_staging_.as<cuda::DeviceSampling>();
            int64_t r = 0;
            for (const PassSeq& p : pass) {
                if (p.result_row < 0) continue;
                const SamplingParams& q = params[static_cast<size_t>(p.result_row)];
                cuda::DeviceSampling& d = sp[r++];
                d = cuda::DeviceSampling{};
                d.temperature = q.is_greedy() ? 0.0f : q.temperature;
                d.top_k = q.top_k;
                d.top_p = q.top_p;
                d.min_p = q.min_p;
                d.seed = q.seed;
                d.step = draws[static_cast<size_t>(p.result_row)];
            }
            cudaStream_t s = stream_.get();
            const bool all_greedy = std::all_of(
                sp, sp + n, [](const cuda::DeviceSampling& d) { return d.temperature <= 0.0f; });
            if (all_greedy) {  // (argmax reads no parameters: nothing to copy)
                cuda::argmax_rows(ws_.logits, c_.vocab_padded, n, sample_vocab(), ws_.ids, s);
            } else {
                DUALITY_CUDA_CHECK(cudaMemcpyAsync(
                    ws_.sampling, sp, n * sizeof(cuda::DeviceSampling), cudaMemcpyHostToDevice, s));
                cuda::sample(ws_.logits, c_.vocab_padded, n, sample_vocab(), ws_.sampling, ws_.ids,
                             ws_.sample_ws, s);
            }
            DUALITY_CUDA_CHECK(cudaMemcpyAsync(sampled_ids(), ws_.ids, n * sizeof(int32_t),
                                               cudaMemcpyDeviceToHost, s));
            inflight_.rows.clear();
            for (const PassSeq& p : pass)
                if (p.result_row >= 0) inflight_.rows.push_back(p.result_row);
            if (!last) {  // the next pass reuses the staging buffers: read these ids now
                stream_.sync();
                read_sampled_ids();
            }  // the last pass's: finish_step_sample()
        });
        inflight_.active = true;
        return Status::ok();
    }

    // With device_loop_ (the default; DUALITY_DEVICE_LOOP=0 turns it off): step 0 runs as a normal
    // decode pass (run_pass: the batch description uploaded, then run_decode); every later step is
    // run_decode again (the bucket's graph replayed), whose embedding reads the token ids the
    // previous step's argmax wrote into the description (ws_.tokens; padding rows keep their 0),
    // and each argmax also writes its ids into pinned host memory. So the host queues all the steps
    // at once and waits once: no round trip between steps (a batch within n_slots is one pass:
    // max_seqs_ and max_tokens_ exceed n_slots). Else the default's step_sample() per step.
    Result<std::vector<int32_t>> decode_greedy(std::span<const SeqInput> batch,
                                               int n_steps) override {
        if (!device_loop_) return Model::decode_greedy(batch, n_steps);
        const int64_t n = static_cast<int64_t>(batch.size());
        if (inflight_.active) return invalid_argument("decode_greedy: a step is already started");
        DUALITY_RETURN_IF_ERROR(check_greedy_steps(batch, n_steps));
        DUALITY_RETURN_IF_ERROR(check_batch(batch, opt_.n_slots));
        for (const SeqInput& in : batch) DUALITY_RETURN_IF_ERROR(check_tokens(in.tokens));
        if (n == 0 || n_steps == 0) return std::vector<int32_t>{};
        const size_t want = static_cast<size_t>(n_steps) * static_cast<size_t>(n) * 4;
        if (loop_ids_.bytes() < want) loop_ids_ = cuda::PinnedBuffer(want);
        std::vector<PassSeq> pass;
        for (int64_t i = 0; i < n; ++i) {
            const SeqInput& in = batch[static_cast<size_t>(i)];
            pass.push_back({in.slot, in.tokens, i});
        }
        const int64_t S = decode_rows(n);  // the rows run_pass's decode passes take
        cudaStream_t s = stream_.get();
        int32_t* out = loop_ids_.as<int32_t>();
        for (int k = 0; k < n_steps; ++k) {
            if (k == 0) {
                run_pass(pass, false);
            } else {
                run_decode(S);
            }
            cuda::argmax_rows(ws_.logits, c_.vocab_padded, n, sample_vocab(), ws_.tokens, s,
                              out + static_cast<int64_t>(k) * n);
        }
        for (const SeqInput& in : batch) slot_tokens_[static_cast<size_t>(in.slot)] += n_steps;
        stream_.sync();
        return std::vector<int32_t>(out, out + static_cast<int64_t>(n_steps) * n);
    }

    Result<std::vector<int32_t>> finish_step_sample() override {
        if (!inflight_.active) return invalid_argument("finish_step_sample: no step was started");
        inflight_.active = false;
        stream_.sync();
        read_sampled_ids();
        return std::move(inflight_.ids);
    }

  private:
    // Where the D2H copy of a pass's sampled ids lands: after the DeviceSampling rows.
    int32_t* sampled_ids() {
        return reinterpret_cast<int32_t*>(sample_staging_.as<cuda::DeviceSampling>() + rows_max_);
    }
    // The copied ids of the pass whose result rows are inflight_.rows, into inflight_.ids.
    void read_sampled_ids() {
        const int32_t* out = sampled_ids();
        for (size_t i = 0; i < inflight_.rows.size(); ++i)
            inflight_.ids[static_cast<size_t>(inflight_.rows[i])] = out[i];
    }

    // The ids step_sample may draw: LoadOptions::sample_vocab, within the vocabulary.
    int64_t sample_vocab() const {
        return opt_.sample_vocab > 0 ? std::min(opt_.sample_vocab, c_.vocab_size) : c_.vocab_size;
    }

    CudaModel(ModelConfig c, const LoadOptions& o) : c_(std::move(c)), opt_(o), act_(o.dtype) {
        conv_slot_elems_ = c_.n_layer * (c_.d_conv - 1) * c_.conv_dim();
        ssm_slot_elems_ = c_.n_layer * c_.n_head * c_.head_dim * c_.d_state;
        max_seqs_ = next_pow2(opt_.n_slots + 1);
        max_tokens_ = std::max<int64_t>(opt_.max_tokens, max_seqs_);
        rows_max_ = std::max<int64_t>(max_seqs_, 256);
        split_in_proj_ = !env_is("DUALITY_SPLIT_IN_PROJ", "0");
        device_loop_ = !env_is("DUALITY_DEVICE_LOOP", "0");
        if (const char* env = std::getenv("DUALITY_Z_FORK")) {
            const std::string_view v(env);
            if (v == "early" || v == "late" || v == "auto")
                z_fork_ = v == "early" ? ZFork::kEarly : v == "late" ? ZFork::kLate : ZFork::kAuto;
            else
                std::fprintf(stderr,
                             "duality: DUALITY_Z_FORK=\"%s\" is not early, late or auto; using "
                             "auto\n",
                             env);
        }
        z_fork_min_elems_ = env_int("DUALITY_Z_FORK_MIN_ELEMS", kZForkEarlyElems);
        // auto: two parts for models whose out_proj has kOutProjSplitElems weights or more (where
        // Gemm::split_k_supported refuses the slices, splits_out_proj keeps the whole product).
        out_splits_ = c_.d_inner * c_.d_model >= kOutProjSplitElems ? 2 : 1;
        if (const char* env = std::getenv("DUALITY_OUT_PROJ_SPLIT")) {
            const std::string_view v(env);
            if (v.size() == 1 && v[0] >= '1' && v[0] <= '0' + cuda::kMaxHParts) {
                out_splits_ = v[0] - '0';
                out_splits_forced_ = true;  // (init says so if no batch can take it)
            } else if (v != "auto") {
                std::fprintf(stderr,
                             "duality: DUALITY_OUT_PROJ_SPLIT=\"%s\" is not 1 to %d or auto; "
                             "using %d\n",
                             env, cuda::kMaxHParts, out_splits_);
            }
        }
        slot_tokens_.assign(static_cast<size_t>(opt_.n_slots + 1), 0);
    }

    Status init(const ModelWeights* weights, uint64_t seed) {
        DUALITY_ASSIGN_OR_RETURN(gemm_, cuda::Gemm::create());
        if (weights) {
            DUALITY_ASSIGN_OR_RETURN(weights_,
                                     cuda::upload_weights(c_, *weights, act_, stream_.get()));
        } else {
            DUALITY_ASSIGN_OR_RETURN(weights_,
                                     cuda::random_device_weights(c_, seed, act_, stream_.get()));
        }
        const int64_t n_alloc_slots = opt_.n_slots + 1;  // + the scratch slot
        DUALITY_ASSIGN_OR_RETURN(
            conv_state_,
            DeviceBuffer::allocate(n_alloc_slots * conv_slot_bytes(), "the conv states"));
        DUALITY_ASSIGN_OR_RETURN(
            ssm_state_, DeviceBuffer::allocate(n_alloc_slots * ssm_slot_bytes(), "the SSM states"));
        DUALITY_CUDA_CHECK(cudaMemset(conv_state_.data(), 0, conv_state_.bytes()));
        DUALITY_CUDA_CHECK(cudaMemset(ssm_state_.data(), 0, ssm_state_.bytes()));
        DUALITY_RETURN_IF_ERROR(layout_workspace());  // (decides use_stack_, which z_early reads)
        if (split_in_proj_ && z_early(2)) {
            DUALITY_ASSIGN_OR_RETURN(gemm_side_, cuda::Gemm::create());
        } else if (split_in_proj_ && z_early(1)) {  // the m = 1 kernel only: a 1 MiB workspace
            DUALITY_ASSIGN_OR_RETURN(gemm_side_, cuda::Gemm::create(size_t{1} << 20));
        }
        staging_ = cuda::PinnedBuffer(static_cast<size_t>(desc_.total) * 4);
        sample_staging_ =
            cuda::PinnedBuffer(static_cast<size_t>(rows_max_) * (sizeof(cuda::DeviceSampling) + 4));

        cudaDeviceProp prop{};
        DUALITY_CUDA_CHECK(cudaGetDeviceProperties(&prop, opt_.device_index));
        info_.name = prop.name;
        info_.memory_total = static_cast<int64_t>(prop.totalGlobalMem);
        info_.weight_bytes = static_cast<int64_t>(weights_.block.bytes());
        info_.state_bytes = static_cast<int64_t>(conv_state_.bytes() + ssm_state_.bytes());
        info_.workspace_bytes = static_cast<int64_t>(pool_.capacity());
        info_.compute_capability = prop.major * 10 + prop.minor;
        info_.decode_stack = use_stack_;
        info_.device_loop = device_loop_;
        info_.gemv_epilogues = gemv_epilogues_at(1);
        info_.decode_gate = decode_gate_;
        info_.batch1_whole = whole_at(1);
        info_.gemv_bulk = gemv_bulk_;
        info_.ssd_conv = conv_in_ssd_;
        info_.ssd_dt = gate_epilogue_ && dt_in_ssd_;
        info_.trim_last = trim_last_;
        info_.ssd_prefill = use_scan_ ? "scan"
                            : use_fused_ && cuda::ssd_fused_supported(ssd_args(0), act_)
                                ? "fused"
                                : "five-step";
        info_.ssd_chunk = ssd_chunk_;
        info_.ssd_passed_f16 = passed_f16_ && info_.ssd_prefill == "fused";
        info_.z_fork = !split_in_proj_ ? "none"
                       : z_early(2)    ? "early"
                       : z_early(1)    ? "early at batch 1"
                       : whole_at(1)   ? "late, none at batch 1"
                                       : "late";
        tune_gemms();
        // The first batch that splits (without graphs a pass runs m rows, not m's bucket).
        for (int64_t m = 2; m <= max_seqs_; ++m)
            if (splits_out_proj(m)) {
                info_.out_proj_split = out_splits_;
                info_.out_proj_split_rows = m;
                break;
            }
        if (out_splits_forced_ && out_splits_ > 1 && info_.out_proj_split == 1)
            std::fprintf(stderr,
                         "duality: DUALITY_OUT_PROJ_SPLIT=%d: no decode batch of this model can "
                         "split out_proj (see splits_out_proj: slices, bias, decode gate, batch "
                         "sizes); it runs whole\n",
                         out_splits_);
        return Status::ok();
    }

    // Times cuBLASLt's candidates for the GEMMs of decode steps (in_proj, out_proj and the LM
    // head at every batch bucket up to max_seqs_) on the model's own weights, layer after layer
    // as in a step, so that steps run the fastest (Gemm::tune, which takes f16/bf16 buckets of at
    // most 256 rows; cuBLASLt's first guess was 7-9% slower at batch 64 on an H200). Decode
    // passes run in_proj as its z and [xBC | dt] parts (enqueue_layers), tuned here too; the
    // whole in_proj's choice, like out_proj's, also serves prefill and mixed passes of as many
    // rows. DUALITY_GEMM_TUNE=0 keeps cuBLASLt's first guess everywhere.
    void tune_gemms() {
        if (env_is("DUALITY_GEMM_TUNE", "0")) return;
        if (weights_.layers.empty() || !weights_.head) return;
        cudaStream_t s = stream_.get();
        const int64_t D = c_.d_model, E = c_.d_inner, n_in = c_.d_in_proj();
        const size_t el = dtype_size(act_);
        DUALITY_CUDA_CHECK(cudaMemsetAsync(ws_.u, 0, static_cast<size_t>(max_seqs_ * D) * el, s));
        DUALITY_CUDA_CHECK(
            cudaMemsetAsync(ws_.gated, 0, static_cast<size_t>(max_seqs_ * E) * el, s));
        std::vector<const void*> in_proj, out_proj;
        for (const cuda::DeviceLayer& w : weights_.layers) {
            in_proj.push_back(w.in_proj);
            out_proj.push_back(w.out_proj);
        }
        const std::vector<const void*> head(2, weights_.head);
        std::vector<const void*> in_proj_xbcdt;  // rows [d_inner, d_in_proj) of each W_in
        for (const void* w : in_proj)
            in_proj_xbcdt.push_back(static_cast<const char*>(w) + static_cast<size_t>(E * D) * el);
        char* y_xbcdt = static_cast<char*>(ws_.zxbcdt) + static_cast<size_t>(E) * el;
        for (int64_t m = 2; m <= max_seqs_; m *= 2) {
            if (split_in_proj_) {  // decode steps run the two parts (prefill: the whole)
                cuda::Gemm& z_gemm = z_early(m) ? gemm_side_ : gemm_;
                z_gemm.tune(ws_.u, D, in_proj, ws_.zxbcdt, n_in, act_, m, E, D, act_, s);
                gemm_.tune(ws_.u, D, in_proj_xbcdt, y_xbcdt, n_in, act_, m, n_in - E, D, act_, s);
            }
            gemm_.tune(ws_.u, D, in_proj, ws_.zxbcdt, n_in, act_, m, n_in, D, act_, s);
            gemm_.tune(ws_.gated, E, out_proj, ws_.h, D, act_, m, D, E, act_, s);
            if (splits_out_proj(m))
                gemm_.tune_split_k(ws_.gated, E, out_proj, ws_.h_parts, m, D, E, out_splits_, act_,
                                   s);
            gemm_.tune(ws_.u, D, head, ws_.logits, c_.vocab_padded, DType::kF32, m, c_.vocab_padded,
                       D, act_, s);
        }
    }

    // Sizes and carves the workspace for max_tokens_ tokens and max_seqs_ sequences.
    Status layout_workspace() {
        passed_f16_ = env_is("DUALITY_SSD_PASSED_F16", "1");
        // DUALITY_SSD_PATH: fused (the default, where supported), five-step or scan (the
        // sequential oracle, for debugging).
        if (const char* path = std::getenv("DUALITY_SSD_PATH")) {
            const std::string_view v(path);
            if (v == "fused" || v == "five-step" || v == "scan") {
                use_fused_ = v == "fused";
                use_scan_ = v == "scan";
            } else {
                std::fprintf(stderr,
                             "duality: DUALITY_SSD_PATH=\"%s\" is not fused, five-step or scan; "
                             "using fused\n",
                             path);
            }
        }
        // The prefill chunk table's chunk size: the config's, or the one the fused SSD runs
        // fastest with (ssd_fused_chunk; the same SSD, rounded differently).
        ssd_chunk_ = c_.chunk_size;
        if (use_fused_ && !use_scan_) ssd_chunk_ = cuda::ssd_fused_chunk(ssd_args(0), act_);
        // The fused SSD's gate epilogue in place of the gated norm (prefill passes, see
        // enqueue_layers): only where the norm spans all of d_inner (one group), so that its
        // per-row scale can wait until after out_proj, and out_proj adds no bias it would scale;
        // bf16 only: the unnormalized v·w and out_proj output it stores could leave f16's range
        // (docs/numerics.md).
        const bool gate_fits =
            c_.n_group == 1 && act_ == DType::kBF16 && !weights_.layers.empty() &&
            std::none_of(weights_.layers.begin(), weights_.layers.end(),
                         [](const cuda::DeviceLayer& w) { return w.out_proj_bias != nullptr; });
        const char* gate_env = std::getenv("DUALITY_SSD_GATE");
        gate_epilogue_ = use_fused_ && !use_scan_ && gate_fits &&
                         !(gate_env && std::string_view(gate_env) == "0");
        // The same for decode passes, in the decode step's epilogue (ssm_decode's gate; the
        // SSD path does not matter there): opt-in, DUALITY_DECODE_GATE=1. Its z must be in
        // before the step, so the z product no longer overlaps the conv and the step: on an
        // H200 that cost more than the gated norm it saves at 2.7b batch 1 (2.18 → 2.30 ms) and
        // 64 (8.24 → 8.41 ms) and at 130m batch 64 (1.214 → 1.260 ms); only the 130m at batch 1
        // gained (0.368 → 0.356 ms). docs/architecture.md, "Decode step overlap".
        // Whether every layer's step takes it is settled once the workspace (z, ssq) is laid out.
        // Passes that take the gate also take the fused SSD's conv prologue (SsdConv: x's conv
        // computed by the SSD's head blocks; conv1d covers B and C only) where its shapes allow
        // and d_inner is at most 4096. On an H200 (b1 prefill, A/B, docs/architecture.md) it made
        // the 130m and 370m 5-6% faster at 8k tokens and the 1.3b 0.5-1.5%, but the 2.7b 0.3-0.6%
        // slower at 8k: at 80 heads the prologue costs the SSD about as much (349 -> 408-414 us
        // a layer) as the x part of conv1d it saves (58 us). DUALITY_SSD_CONV=0 turns it off,
        // 1 forces it.
        const char* conv_env = std::getenv("DUALITY_SSD_CONV");
        const std::string_view conv_set = conv_env ? conv_env : "";
        conv_in_ssd_ = gate_epilogue_ && c_.d_conv == 4 && conv_set != "0" &&
                       (conv_set == "1" || c_.d_inner <= 4096);
        // Those passes also compute Δ inside the fused SSD from the raw dt columns (RawDt; the
        // same function as dt_softplus, so the same bits): one kernel a layer fewer.
        // DUALITY_SSD_DT=0 keeps the separate dt_softplus (A/B).
        const char* dt_env = std::getenv("DUALITY_SSD_DT");
        dt_in_ssd_ = !(dt_env && std::string_view(dt_env) == "0");
        // Prefill passes run the last layer's out_proj on the rows whose logits are wanted
        // (enqueue_layers); DUALITY_TRIM_LAST=0 runs it on every row (A/B).
        const char* trim_env = std::getenv("DUALITY_TRIM_LAST");
        trim_last_ = !(trim_env && std::string_view(trim_env) == "0");
        const char* decode_gate_env = std::getenv("DUALITY_DECODE_GATE");
        decode_gate_ = gate_fits && decode_gate_env && std::string_view(decode_gate_env) == "1";
        n_chunk_max_ = (max_tokens_ + ssd_chunk_ - 1) / ssd_chunk_ + max_seqs_;
        auto z = [](int64_t v) { return static_cast<size_t>(v); };
        const size_t T = z(max_tokens_), R = z(rows_max_);
        const size_t D = z(c_.d_model), E = z(c_.d_inner), H = z(c_.n_head);
        const size_t n_in = z(c_.d_in_proj()), conv_dim = z(c_.conv_dim()), V = z(c_.vocab_padded);
        const size_t a = dtype_size(act_);
        cuda::SsdArgs probe = ssd_args(0);
        probe.batch.n_seq = max_seqs_;
        probe.batch.n_tokens = max_tokens_;
        probe.batch.n_chunk = n_chunk_max_;
        // The SSD scratch serves both prefill paths (five-step and fused); the fused kernel's
        // sync buffer is its own, zeroed once here.
        const size_t ssd_bytes = std::max(cuda::ssd_chunked_workspace_bytes(probe),
                                          cuda::ssd_fused_workspace_bytes(probe));
        DUALITY_ASSIGN_OR_RETURN(
            ssd_sync_,
            DeviceBuffer::allocate(cuda::ssd_fused_sync_bytes(probe), "the SSD sync buffer"));
        DUALITY_CUDA_CHECK(cudaMemsetAsync(ssd_sync_.data(), 0, ssd_sync_.bytes(), stream_.get()));
        const size_t sample_bytes = cuda::sample_workspace_bytes(R, c_.vocab_size);
        // Prefill gate: one sum per (token, head); decode gate: head_dim / 16 per (sequence, head).
        // (Batch-1 passes may take the decode gate where it fits: batch1_whole_.)
        const size_t ssq_elems =
            std::max(T * H, (decode_gate_ ? z(max_seqs_) : static_cast<size_t>(gate_fits)) * H *
                                z(cuda::ssm_decode_gate_parts(c_.head_dim)));
        desc_ = DescLayout(max_seqs_, n_chunk_max_, max_tokens_);
        const std::vector<size_t> sizes = {T * D * a,
                                           T * D * 4,
                                           T * D * a,
                                           T * n_in * a,
                                           T * conv_dim * a,
                                           T * H * 4,
                                           T * E * a,
                                           T * E * a,
                                           ssq_elems * 4,
                                           R * H * 4,
                                           out_splits_ > 1 ? z(out_splits_ * max_seqs_) * D * 4 : 0,
                                           z(cuda::gemv_fused_parts(c_.d_model)) * 4,
                                           ssd_bytes,
                                           R * D * a,
                                           R * D * 4,
                                           R * V * 4,
                                           sample_bytes,
                                           R * 4,
                                           R * sizeof(cuda::DeviceSampling),
                                           z(desc_.total) * 4};
        size_t total = 0;
        for (size_t s : sizes) total += cuda::DevicePool::round_up(s);
        DUALITY_ASSIGN_OR_RETURN(pool_, cuda::DevicePool::allocate(total, "the workspace"));
        size_t i = 0;
        auto take = [&] { return pool_.take(sizes[i++]); };
        ws_.h = take();
        ws_.residual = static_cast<float*>(take());
        ws_.u = take();
        ws_.zxbcdt = take();
        ws_.xbc = take();
        ws_.dt = static_cast<float*>(take());
        ws_.y = take();
        ws_.gated = take();
        ws_.ssq = static_cast<float*>(take());
        ws_.ssq_sel = static_cast<float*>(take());
        ws_.h_parts = static_cast<float*>(take());
        ws_.gemv_parts = static_cast<float*>(take());
        ws_.ssd = take();
        ws_.h_sel = take();
        ws_.res_sel = static_cast<float*>(take());
        ws_.logits = static_cast<float*>(take());
        ws_.sample_ws = take();
        ws_.ids = static_cast<int32_t*>(take());
        ws_.sampling = static_cast<cuda::DeviceSampling*>(take());
        desc_base_ = static_cast<int32_t*>(take());
        ws_.tokens = desc_base_ + desc_.tokens;
        ws_.cu_seqlens = desc_base_ + desc_.cu_seqlens;
        ws_.slots = desc_base_ + desc_.slots;
        ws_.chunk_start = desc_base_ + desc_.chunk_start;
        ws_.chunk_len = desc_base_ + desc_.chunk_len;
        ws_.chunk_seq = desc_base_ + desc_.chunk_seq;
        ws_.cu_chunks = desc_base_ + desc_.cu_chunks;
        ws_.rows = desc_base_ + desc_.rows;
        ws_.cu_prefill = desc_base_ + desc_.cu_prefill;
        DUALITY_RETURN_IF_ERROR(layout_decode_stack());
        bool step_gate = gate_fits;  // every layer's decode step can take the gate
        for (int64_t layer = 0; step_gate && layer < c_.n_layer; ++layer)
            step_gate = cuda::ssm_decode_gate_supported(
                ssd_args(layer), ssd_gate(weights_.layers[static_cast<size_t>(layer)]), act_);
        decode_gate_ = decode_gate_ && step_gate;
        gemv_epilogues_ = !gemv_epilogues_fit()                   ? GemvEpilogues::kOff
                          : env_is("DUALITY_GEMV_EPILOGUES", "1") ? GemvEpilogues::kOn
                                                                  : GemvEpilogues::kAuto;
        batch1_whole_ = gemv_epilogues_ == GemvEpilogues::kAuto && step_gate && !use_stack_ &&
                        !z_early(1) && c_.d_in_proj() <= cuda::gemv_fused_wave_columns(act_);
        gemv_bulk_ = batch1_whole_ && !env_is("DUALITY_GEMV_BULK", "0") &&
                     cuda::gemv_fused_bulk_supported(c_.d_inner, act_) &&
                     (env_is("DUALITY_GEMV_BULK", "1") ||
                      c_.d_inner * static_cast<int64_t>(dtype_size(act_)) <= kGemvBulkRowBytes);
        return Status::ok();
    }

    // Whether batch-1 decode passes can fold the add + RMSNorm and conv1d into the products'
    // epilogues (cuda::gemv_fused; enqueue_layers): bf16 (out_proj stores u = act(r · w_norm)
    // before the normalization, whose range r's could leave in f16, as for the gates), width-4
    // conv, no projection biases (they would go between a product and its epilogue), every
    // product aligned for the m = 1 kernel. With the decode gate, out_proj takes the gate's
    // deferred scale as its input scale. Where they fit, DUALITY_GEMV_EPILOGUES=1 takes them in
    // every batch-1 pass (in_proj split or whole and the gate as DUALITY_SPLIT_IN_PROJ and
    // DUALITY_DECODE_GATE say), 0 in none, and by default (auto) where z's product forks early
    // (z_early: the 1.3b and larger) and in the three-kernel form where it forks late
    // (batch1_whole_). H200, batch-1 ms per step, two runs each, off -> on: 2.7b 2.001-2.014 ->
    // 1.912-1.914, 1.3b 1.135-1.148 -> 1.060-1.065 (early fork); split with the late fork, 130m
    // 0.301 -> 0.306-0.309, 370m 0.615-0.622 -> 0.636-0.638, 780m 0.868-0.870 -> 0.951-0.953.
    // docs/architecture.md, "Batch-1 GEMV epilogues".
    bool gemv_epilogues_fit() const {
        if (env_is("DUALITY_GEMV_EPILOGUES", "0") || act_ != DType::kBF16 || c_.d_conv != 4 ||
            weights_.layers.empty())
            return false;
        const int64_t D = c_.d_model, E = c_.d_inner;
        const size_t el = dtype_size(act_);
        return cuda::gemv_fused_supports(ws_.u, weights_.head, D, act_) &&
               std::all_of(weights_.layers.begin(), weights_.layers.end(),
                           [&](const cuda::DeviceLayer& w) {
                               const char* xbc = static_cast<const char*>(w.in_proj) + E * D * el;
                               return !w.in_proj_bias && !w.out_proj_bias &&
                                      cuda::gemv_fused_supports(ws_.u, w.in_proj, D, act_) &&
                                      cuda::gemv_fused_supports(ws_.u, xbc, D, act_) &&
                                      cuda::gemv_fused_supports(ws_.gated, w.out_proj, E, act_);
                           });
    }

    // Batch-1 decode passes run as one persistent kernel (cuda::decode_stack), opt-in with
    // DUALITY_DECODE_STACK=1, where it supports the model (Hopper, f16/bf16, f32 state): its layer
    // table and scratch, the rest of its arguments from the workspace. Off by default: on an H200
    // it is still slower than the kernel chain (130m 0.44 against 0.35 ms per step, 2.7b 2.95
    // against 2.16 ms; docs/architecture.md, "Batch-1 decode in one launch").
    Status layout_decode_stack() {
        if (!env_is("DUALITY_DECODE_STACK", "1")) return Status::ok();
        const std::vector<cuda::DeviceLayer>& layers = weights_.layers;
        cuda::DecodeStackArgs& a = stack_;
        a.n_layer = c_.n_layer;
        a.d_model = c_.d_model;
        a.d_inner = c_.d_inner;
        a.n_head = c_.n_head;
        a.head_dim = c_.head_dim;
        a.d_state = c_.d_state;
        a.n_group = c_.n_group;
        a.d_conv = c_.d_conv;
        a.vocab_rows = c_.vocab_padded;
        a.eps = static_cast<float>(c_.norm_eps);
        a.dt_min = c_.dt_min;
        a.dt_max = c_.dt_max;
        a.embedding = weights_.embedding;
        a.head = weights_.head;
        a.norm_f = weights_.norm_f;
        a.token = ws_.tokens;
        a.slot = ws_.slots;
        a.conv_state = conv_ptr(0);
        a.conv_slot_stride = conv_slot_elems_;
        a.ssm_state = reinterpret_cast<float*>(ssm_ptr(0));
        a.ssm_slot_stride = ssm_slot_elems_;
        a.zxbcdt = ws_.zxbcdt;
        a.residual = ws_.residual;
        a.logits = ws_.logits;
        if (layers.empty() || !a.head) return Status::ok();
        // The layer table, rounded up so that v and ssq after it are 256-byte aligned (v is read
        // as float4; 88-byte entries would leave it 8 bytes off for an odd layer count).
        const size_t table_bytes = layers.size() * sizeof(cuda::DeviceLayer);
        const size_t table = (table_bytes + 255) / 256 * 256;
        const size_t v_bytes = (static_cast<size_t>(c_.d_inner) * 4 + 255) / 256 * 256;
        const size_t ssq_bytes = static_cast<size_t>(c_.n_head * c_.head_dim / 16) * 4;
        DUALITY_ASSIGN_OR_RETURN(
            stack_block_,
            DeviceBuffer::allocate(table + v_bytes + ssq_bytes + cuda::decode_stack_sync_bytes(),
                                   "the decode stack's buffers"));
        char* base = stack_block_.as<char>();
        DUALITY_CUDA_CHECK(cudaMemset(base, 0, stack_block_.bytes()));
        cuda::upload(base, layers.data(), table_bytes);
        a.layers = reinterpret_cast<const cuda::DeviceLayer*>(base);
        a.v = reinterpret_cast<float*>(base + table);
        a.ssq = reinterpret_cast<float*>(base + table + v_bytes);
        a.sync = reinterpret_cast<uint32_t*>(base + table + v_bytes + ssq_bytes);
        use_stack_ = cuda::decode_stack_supported(a, layers, act_, opt_.state_dtype);
        if (!use_stack_) stack_block_ = DeviceBuffer{};  // not used: give it back
        return Status::ok();
    }

    // ---- state slots ----
    size_t conv_slot_bytes() const { return static_cast<size_t>(conv_slot_elems_) * 4; }
    size_t ssm_slot_bytes() const {
        return static_cast<size_t>(ssm_slot_elems_) * dtype_size(opt_.state_dtype);
    }
    float* conv_ptr(int slot) const {
        return conv_state_.as<float>() + static_cast<int64_t>(slot) * conv_slot_elems_;
    }
    // Slot 0's conv state of `layer` ({d_conv - 1, conv_dim} f32; other slots conv_slot_elems_
    // apart).
    float* conv_state_of(int64_t layer) const {
        return conv_ptr(0) + layer * (c_.d_conv - 1) * c_.conv_dim();
    }
    char* ssm_ptr(int slot) const {
        return ssm_state_.as<char>() + static_cast<size_t>(slot) * ssm_slot_bytes();
    }
    void clear_slot(int slot) {
        DUALITY_CUDA_CHECK(cudaMemsetAsync(conv_ptr(slot), 0, conv_slot_bytes(), stream_.get()));
        DUALITY_CUDA_CHECK(cudaMemsetAsync(ssm_ptr(slot), 0, ssm_slot_bytes(), stream_.get()));
        slot_tokens_[static_cast<size_t>(slot)] = 0;  // ordered on the stream, like copy_slot
    }
    void upload_slot(int slot, const SequenceState& s) {
        // cuda::upload copies on the legacy default stream, which does not wait for the model's
        // (non-blocking) stream: finish what is queued there (a copy out of this slot, say) first.
        stream_.sync();
        cuda::upload(conv_ptr(slot), s.conv.data(), conv_slot_bytes());
        if (opt_.state_dtype == DType::kF32) {
            cuda::upload(ssm_ptr(slot), s.ssm.data(), ssm_slot_bytes());
        } else {
            std::vector<uint16_t> h(s.ssm.size());
            for (size_t i = 0; i < h.size(); ++i)
                h[i] =
                    opt_.state_dtype == DType::kBF16 ? f32_to_bf16(s.ssm[i]) : f32_to_f16(s.ssm[i]);
            cuda::upload(ssm_ptr(slot), h.data(), ssm_slot_bytes());
        }
        slot_tokens_[static_cast<size_t>(slot)] = s.n_tokens;
    }
    void download_slot(int slot, SequenceState& s) const {
        stream_.sync();
        cuda::download(s.conv.data(), conv_ptr(slot), conv_slot_bytes());
        if (opt_.state_dtype == DType::kF32) {
            cuda::download(s.ssm.data(), ssm_ptr(slot), ssm_slot_bytes());
        } else {
            std::vector<uint16_t> h(s.ssm.size());
            cuda::download(h.data(), ssm_ptr(slot), ssm_slot_bytes());
            convert_to_f32(opt_.state_dtype, h.data(), s.ssm.data(), h.size());
        }
        s.n_tokens = slot_tokens_[static_cast<size_t>(slot)];
    }

    // ---- validation ----
    Status check_slot(int slot) const {
        if (slot < 0 || slot >= opt_.n_slots)
            return invalid_argument("state slot " + std::to_string(slot) + " is outside [0, " +
                                    std::to_string(opt_.n_slots) + ")");
        return Status::ok();
    }
    Status check_state(const SequenceState& s) const {
        if (s.n_layer != c_.n_layer || s.d_conv != c_.d_conv || s.conv_dim != c_.conv_dim() ||
            s.n_head != c_.n_head || s.head_dim != c_.head_dim || s.d_state != c_.d_state ||
            s.conv.size() != static_cast<size_t>(conv_slot_elems_) ||
            s.ssm.size() != static_cast<size_t>(ssm_slot_elems_))
            return invalid_argument("sequence state does not belong to this model");
        return Status::ok();
    }
    Status check_tokens(std::span<const int32_t> tokens) const {
        for (size_t i = 0; i < tokens.size(); ++i)
            if (tokens[i] < 0 || tokens[i] >= c_.vocab_size)
                return invalid_argument("token id " + std::to_string(tokens[i]) + " at position " +
                                        std::to_string(i) + " is outside the vocabulary [0, " +
                                        std::to_string(c_.vocab_size) + ")");
        return Status::ok();
    }

    // ---- steps and passes ----
    static int64_t count_wanted(const std::vector<PassSeq>& pass) {
        return std::count_if(pass.begin(), pass.end(),
                             [](const PassSeq& p) { return p.result_row >= 0; });
    }

    // Cuts the batch into passes of at most max_tokens_ tokens; `consume` reads each pass's
    // results. A sequence split across passes continues from its state; only its last piece
    // asks for logits.
    template <typename F>
    void run_step(std::span<const SeqInput> batch, F&& consume) {
        std::vector<PassSeq> pass;
        int64_t budget = max_tokens_;
        for (size_t i = 0; i < batch.size(); ++i) {
            const SeqInput& in = batch[i];
            size_t off = 0;
            while (off < in.tokens.size()) {
                const size_t take = std::min(in.tokens.size() - off, static_cast<size_t>(budget));
                const bool last = off + take == in.tokens.size();
                pass.push_back(
                    {in.slot, in.tokens.subspan(off, take), last ? static_cast<int64_t>(i) : -1});
                off += take;
                budget -= static_cast<int64_t>(take);
                if (budget == 0 || static_cast<int64_t>(pass.size()) == max_seqs_ - 1) {
                    order_pass(pass);
                    run_pass(pass, false);
                    consume(pass, i + 1 == batch.size() && off == in.tokens.size());
                    pass.clear();
                    budget = max_tokens_;
                }
            }
            slot_tokens_[static_cast<size_t>(in.slot)] += static_cast<int64_t>(in.tokens.size());
        }
        if (!pass.empty()) {
            order_pass(pass);
            run_pass(pass, false);
            consume(pass, true);
        }
    }

    // One-token sequences first (see run_pass); consumers find results by result_row.
    static void order_pass(std::vector<PassSeq>& pass) {
        std::stable_partition(pass.begin(), pass.end(),
                              [](const PassSeq& p) { return p.tokens.size() == 1; });
    }

    // `a` restricted to the packed rows [r0, r0 + b.n_tokens) described by `b`.
    cuda::SsdArgs ssd_rows(cuda::SsdArgs a, int64_t r0, const cuda::VarlenBatch& b) const {
        const size_t el = dtype_size(act_);
        a.batch = b;
        a.x = static_cast<const char*>(a.x) + r0 * a.x_stride * el;
        a.B = static_cast<const char*>(a.B) + r0 * a.bc_stride * el;
        a.C = static_cast<const char*>(a.C) + r0 * a.bc_stride * el;
        a.y = static_cast<char*>(a.y) + r0 * c_.d_inner * el;
        return a;
    }

    cuda::SsdArgs ssd_args(int64_t layer) const {
        cuda::SsdArgs a;
        a.batch = batch_;
        a.n_head = c_.n_head;
        a.head_dim = c_.head_dim;
        a.d_state = c_.d_state;
        a.n_group = c_.n_group;
        a.chunk_size = ssd_chunk_;
        const size_t el = dtype_size(act_);
        const int64_t GN = c_.n_group * c_.d_state;
        a.x = ws_.xbc;
        a.x_stride = c_.conv_dim();
        a.B = static_cast<const char*>(ws_.xbc) + c_.d_inner * el;
        a.C = static_cast<const char*>(ws_.xbc) + (c_.d_inner + GN) * el;
        a.bc_stride = c_.conv_dim();
        if (!weights_.layers.empty()) {
            a.A = weights_.layers[static_cast<size_t>(layer)].A;
            a.D = weights_.layers[static_cast<size_t>(layer)].D;
        }
        a.state = ssm_state_.data()
                      ? ssm_ptr(0) + static_cast<size_t>(layer) * c_.n_head * c_.head_dim *
                                         c_.d_state * dtype_size(opt_.state_dtype)
                      : nullptr;
        a.state_slot_stride = ssm_slot_elems_;
        a.state_dtype = opt_.state_dtype;
        a.y = ws_.y;
        a.passed_f16 = passed_f16_;
        return a;
    }

    // Uploads the pass's description, runs it, and leaves logits of the wanted rows (or of all
    // rows when `all_rows`: then the caller reads them block by block) in ws_.logits.
    void run_pass(const std::vector<PassSeq>& pass, bool all_rows) {
        const bool decode =
            !all_rows && std::all_of(pass.begin(), pass.end(),
                                     [](const PassSeq& p) { return p.tokens.size() == 1; });
        // The previous pass's description copy may still be reading the staging buffer; wait for
        // that copy only, not for what follows it on the stream (cache copies, slot resets), so
        // that queuing this pass never waits for the GPU to drain.
        staging_read_.sync();
        pass_scaled_ = false;  // until enqueue_layers decides (graph replays leave it false)
        pass_fused_ = false;
        const int64_t n = static_cast<int64_t>(pass.size());
        const int64_t S = decode ? decode_rows(n) : n;
        // Host side of the batch description, in the pinned staging buffer at desc_'s offsets.
        int32_t* st = staging_.as<int32_t>();
        int32_t* tokens = st + desc_.tokens;
        int32_t* cu = st + desc_.cu_seqlens;
        int32_t* slots = st + desc_.slots;
        int32_t* cu_pre = st + desc_.cu_prefill;  // {n_pre + 1}
        int32_t* chunk_start = st + desc_.chunk_start;
        int32_t* chunk_len = st + desc_.chunk_len;
        int32_t* chunk_seq = st + desc_.chunk_seq;
        int32_t* cu_chunks = st + desc_.cu_chunks;
        int32_t* rows = st + desc_.rows;
        int64_t T = 0;
        for (const PassSeq& p : pass)
            for (int32_t t : p.tokens) tokens[T++] = t;
        for (int64_t i = n; i < S; ++i) tokens[T++] = 0;  // bucket padding
        cu[0] = 0;
        for (int64_t i = 0; i < S; ++i) {
            cu[i + 1] = cu[i] + (i < n ? static_cast<int32_t>(pass[i].tokens.size()) : 1);
            slots[i] = i < n ? pass[i].slot : opt_.n_slots;  // padding computes into scratch
        }
        // Mixed pass: the leading one-token sequences [0, n_dec) take the decode step; the prefill
        // SSD sees only sequences [n_dec, S), rows [n_dec, T), renumbered from 0.
        n_dec_ = 0;
        if (!decode)
            while (n_dec_ < n && pass[static_cast<size_t>(n_dec_)].tokens.size() == 1) ++n_dec_;
        const int64_t n_pre = S - n_dec_;
        if (!decode)
            for (int64_t i = 0; i <= n_pre; ++i) cu_pre[i] = cu[n_dec_ + i] - cu[n_dec_];
        int64_t n_chunk = 0;
        cu_chunks[0] = 0;
        for (int64_t i = 0; i < n_pre; ++i) {
            if (!decode)
                for (int32_t t = cu_pre[i]; t < cu_pre[i + 1];
                     t += static_cast<int32_t>(ssd_chunk_)) {
                    chunk_start[n_chunk] = t;
                    chunk_len[n_chunk] =
                        std::min<int32_t>(static_cast<int32_t>(ssd_chunk_), cu_pre[i + 1] - t);
                    chunk_seq[n_chunk] = static_cast<int32_t>(i);
                    ++n_chunk;
                }
            cu_chunks[i + 1] = static_cast<int32_t>(n_chunk);
        }
        int64_t n_rows = 0;
        for (int64_t i = 0; i < n; ++i)
            if (pass[i].result_row >= 0) rows[n_rows++] = cu[i + 1] - 1;

        // One copy: every field lies below the tokens, which end the description.
        cudaStream_t s = stream_.get();
        DUALITY_CUDA_CHECK(cudaMemcpyAsync(
            desc_base_, st, static_cast<size_t>(desc_.tokens + T) * 4, cudaMemcpyHostToDevice, s));
        staging_read_.record(s);

        // The whole pass (embedding, conv1d, norms, GEMMs; the decode step of decode passes).
        batch_ = cuda::VarlenBatch{};
        batch_.n_seq = S;
        batch_.n_tokens = T;
        batch_.cu_seqlens = ws_.cu_seqlens;
        batch_.slots = ws_.slots;
        // The prefill rows of a mixed (or pure prefill) pass, with their chunking.
        prefill_batch_ = cuda::VarlenBatch{};  // empty in decode passes
        if (!decode) {
            prefill_batch_.n_seq = n_pre;
            prefill_batch_.n_tokens = T - n_dec_;
            prefill_batch_.cu_seqlens = ws_.cu_prefill;
            prefill_batch_.slots = ws_.slots + n_dec_;
            prefill_batch_.n_chunk = n_chunk;
            prefill_batch_.chunk_start = ws_.chunk_start;
            prefill_batch_.chunk_len = ws_.chunk_len;
            prefill_batch_.chunk_seq = ws_.chunk_seq;
            prefill_batch_.cu_chunks = ws_.cu_chunks;
        }

        if (decode) {
            run_decode(S);
        } else {
            // Only the wanted rows leave the last layer: its out_proj runs on them alone, into
            // h_sel (trim_last_).
            const bool trim = trim_last_ && !all_rows;
            enqueue_layers(T, false, trim ? n_rows : -1);
            if (all_rows) {
                final_norm_all(T);
            } else if (n_rows > 0) {
                // Gather the wanted rows (and their deferred gated-norm scales; h's rows are in
                // h_sel already where the last layer was trimmed), then norm + head on them only.
                if (!trim) cuda::embedding(ws_.rows, n_rows, ws_.h, c_.d_model, ws_.h_sel, act_, s);
                cuda::embedding(ws_.rows, n_rows, ws_.residual, c_.d_model, ws_.res_sel,
                                DType::kF32, s);
                if (pass_scaled_)
                    cuda::embedding(ws_.rows, n_rows, ws_.ssq, c_.n_head, ws_.ssq_sel, DType::kF32,
                                    s);
                cuda::add_rms_norm(ws_.h_sel, ws_.res_sel, weights_.norm_f,
                                   static_cast<float>(c_.norm_eps), ws_.u, n_rows, c_.d_model,
                                   false, act_, s, h_scale(ws_.ssq_sel));
                gemm_.run(ws_.u, c_.d_model, weights_.head, ws_.logits, c_.vocab_padded,
                          DType::kF32, n_rows, c_.vocab_padded, c_.d_model, act_, s);
            }
        }
        DUALITY_CUDA_LAUNCH_CHECK();
    }

    // The rows a decode pass of n sequences runs: with CUDA graphs its bucket (the next power of
    // two, each bucket one graph), else n.
    int64_t decode_rows(int64_t n) const { return opt_.cuda_graphs ? next_pow2(n) : n; }

    // A decode pass of S rows (the bucket; S tokens) over the description and batch_ that
    // run_pass set up, logits of every row to ws_.logits: replayed (or captured) from the bucket's
    // graph, or enqueued without graphs.
    void run_decode(int64_t S) {
        cudaStream_t s = stream_.get();
        if (S == 1 && use_stack_) {
            // Batch 1: the whole step in one persistent launch (cuda::decode_stack), captured once.
            if (!opt_.cuda_graphs) {
                cuda::decode_stack(stack_, act_, s);
            } else {
                if (!stack_graph_)
                    stack_graph_ =
                        cuda::Graph::capture(s, [&] { cuda::decode_stack(stack_, act_, s); });
                stack_graph_.launch(s);
            }
            return;
        }
        // Every row is wanted and rows are in order: the head reads the last residual directly.
        if (!opt_.cuda_graphs) {
            enqueue_layers(S, /*decode=*/true);
            enqueue_head(S);
            return;
        }
        cuda::Graph& g = graphs_[S];
        if (!g)
            g = cuda::Graph::capture(s, [&] {
                enqueue_layers(S, true);
                enqueue_head(S);
            });
        g.launch(s);
    }

    // The layers over the T packed tokens of batch_. With wanted >= 0 (prefill and mixed passes
    // whose logits are wanted only for the `wanted` rows of ws_.rows), the last layer's out_proj
    // runs on those rows alone and leaves them in ws_.h_sel: nothing reads the other rows' output
    // of the last layer (the SSD and conv states, which later passes read, are complete before
    // out_proj); with wanted == 0 it does not run at all. 2.7b, 8k tokens: a 274 µs product becomes
    // a one-row one (the final norm already ran on the wanted rows alone).
    void enqueue_layers(int64_t T, bool decode, int64_t wanted = -1) {
        cudaStream_t s = stream_.get();
        const int64_t D = c_.d_model, E = c_.d_inner, n_in = c_.d_in_proj();
        const size_t el = dtype_size(act_);
        cuda::VarlenBatch decode_rows = batch_;  // a mixed pass's leading one-token sequences
        decode_rows.n_seq = decode_rows.n_tokens = n_dec_;
        cuda::embedding(ws_.tokens, T, weights_.embedding, D, ws_.h, act_, s);
        // Decode passes: in_proj as two products, [xBC | dt] first, then z (needed only by the
        // gated norm, or by the step when it takes the gate) on the side stream, where it overlaps
        // the conv and the SSM step (the conv only, with the gate) instead of preceding them
        // (docs/architecture.md, "Decode step overlap"). Not where z would take our decode GEMM
        // (small d_inner at 2-16 rows: the 130m's batch-8 step was 6% slower split, the extra
        // launch costing more than the overlap gains). The two streams share gemm_'s workspace and
        // counters: safe only because no other GEMM is enqueued between the fork (after the [xBC |
        // dt] product) and the join (before the gated norm and out_proj, or before the step with
        // the gate). Where z_early(T), the fork comes before the [xBC | dt] product and z runs on
        // gemm_side_.
        const bool split = decode && split_in_proj_ && !whole_at(T) && !weights_.layers.empty() &&
                           !gemm_.uses_decode_kernel(ws_.u, D, weights_.layers.front().in_proj,
                                                     act_, T, E, D, act_);
        const bool z_first = split && z_early(T);  // z's product beside [xBC | dt]
        // Pure prefill passes on the fused SSD (where gate_epilogue_ allows): its gate epilogue
        // writes y·silu(z)·w and per-head sums of squares in place of the gated norm, and each
        // layer's rsqrt(mean(v²) + eps) is applied to out_proj's output rows by the add_rms_norm
        // that follows (cuda::SsdGate, RowScale): the gated norm's pass over y and z is saved.
        // Pure prefill passes only: their prefill rows are the pass's rows, which the gate's z
        // and ssq pointers assume.
        // Decode passes likewise take the decode step's gate epilogue where decode_gate_ allows
        // (head_dim / 16 partial sums per head).
        pass_scaled_ = false;
        pass_conv_ = false;
        scale_parts_ = 1;
        if (!decode && gate_epilogue_ && n_dec_ == 0 && prefill_batch_.n_seq > 0) {
            const cuda::SsdArgs a = ssd_rows(ssd_args(0), 0, prefill_batch_);
            pass_scaled_ = cuda::ssd_fused_supported(a, act_) &&
                           std::all_of(weights_.layers.begin(), weights_.layers.end(),
                                       [&](const cuda::DeviceLayer& w) {
                                           return cuda::ssd_gate_supported(a, ssd_gate(w));
                                       });
            pass_conv_ = pass_scaled_ && conv_in_ssd_ &&
                         std::all_of(weights_.layers.begin(), weights_.layers.end(),
                                     [&](const cuda::DeviceLayer& w) {
                                         return cuda::ssd_conv_supported(a, ssd_conv(w, 0));
                                     });
        } else if (decode && (decode_gate_ || whole_at(T))) {
            pass_scaled_ = true;
            scale_parts_ = cuda::ssm_decode_gate_parts(c_.head_dim);
        }
        // Where out_splits_ > 1 (by default the 780m and larger; DUALITY_OUT_PROJ_SPLIT), decode
        // passes run out_proj as split-k where splits_out_proj allows: f32 parts that the next add
        // + RMSNorm (or the final norm) sums.
        out_parts_ = decode && splits_out_proj(T) ? cuda::HParts{ws_.h_parts, out_splits_, T * D}
                                                  : cuda::HParts{};
        // Batch-1 decode passes fold the add + RMSNorm and conv1d into the products (gemv_fused):
        // out_proj's epilogue adds to the residual and leaves act(r ⊙ w_norm) and Σ r² parts, the
        // next products scale by rsqrt(mean(r²) + eps) (so layers after the first and the head
        // skip add_rms_norm), and the [xBC | dt] product runs the conv on its xBC columns (no
        // conv1d). docs/architecture.md, "Batch-1 GEMV epilogues".
        pass_fused_ = decode && gemv_epilogues_at(T) && !out_parts_.p;
        for (int64_t layer = 0; layer < c_.n_layer; ++layer) {
            const cuda::DeviceLayer& w = weights_.layers[static_cast<size_t>(layer)];
            const bool fused_in = pass_fused_ && layer > 0;  // u and its parts from out_proj
            if (!fused_in)
                cuda::add_rms_norm(ws_.h, ws_.residual, w.norm, static_cast<float>(c_.norm_eps),
                                   ws_.u, T, D, layer == 0, act_, s, h_scale(ws_.ssq),
                                   layer == 0 ? cuda::HParts{} : out_parts_);
            const auto z_rows = [&](cudaStream_t stream, cuda::Gemm& gemm) {
                if (!fused_in) return in_proj_rows(w, 0, E, T, stream, gemm);
                cuda::GemvFused f = fused_input(true);
                f.y = ws_.zxbcdt;
                cuda::gemv_fused(ws_.u, w.in_proj, E, D, act_, gemm.prefetch_bytes(), f, stream);
            };
            if (z_first) {
                fork_.order(s, side_stream_.get());
                z_rows(side_stream_.get(), gemm_side_);
            } else if (!split && pass_fused_) {  // the whole product, z's columns included
                in_proj_conv(w, layer, fused_in, 0, s);
            } else if (!split) {
                in_proj_rows(w, 0, n_in, T, s);
            }
            if (pass_fused_ && split) {
                in_proj_conv(w, layer, fused_in, E, s);
            } else if (split) {
                in_proj_rows(w, E, n_in, T, s);
            }
            if (split && !z_first) {
                fork_.order(s, side_stream_.get());
                z_rows(side_stream_.get(), gemm_);
            }

            // Fused passes ran the conv in the in_proj product; with pass_conv_ the SSD computes
            // x's part, so conv1d covers B's and C's channels, and the conv state is updated only
            // after the SSD has read the old one.
            cuda::Conv1dArgs conv = conv_args(w, layer);
            if (pass_conv_) {
                conv.out_begin = E;
                conv.state_update = false;
            }
            if (!pass_fused_) cuda::conv1d(conv, act_, s);

            const cuda::SsdArgs ssd = ssd_args(layer);
            const cuda::RawDt dt = raw_dt(w);  // the decode step's Δ input: raw dt of row s
            bool z_joined = false;
            if (decode && pass_scaled_) {
                // The step's gate epilogue reads z: the side stream's z product joins first.
                if (split) join_.order(side_stream_.get(), s);
                z_joined = true;
                cuda::SsdArgs a = ssd;
                a.y = ws_.gated;
                const cuda::SsdGate gate = ssd_gate(w);
                cuda::ssm_decode(a, dt, act_, s, &gate);
            } else if (decode) {
                cuda::ssm_decode(ssd, dt, act_, s);
            } else {
                if (n_dec_ > 0) cuda::ssm_decode(ssd_rows(ssd, 0, decode_rows), dt, act_, s);
                if (prefill_batch_.n_seq > 0) {
                    // (Passes with the gate compute Δ in the fused SSD: prefill_ssd.)
                    if (!(pass_scaled_ && dt_in_ssd_))  // (the prefill rows follow the decode rows)
                        cuda::dt_softplus(static_cast<const char*>(dt.dt_raw) + n_dec_ * n_in * el,
                                          dt.raw_stride, dt.dt_bias, dt.dt_min, dt.dt_max, ws_.dt,
                                          T - n_dec_, c_.n_head, act_, s);
                    prefill_ssd(ssd_rows(ssd, n_dec_, prefill_batch_), w, layer, s);
                    if (pass_conv_) {
                        conv.outputs = false;
                        conv.state_update = true;
                        cuda::conv1d(conv, act_, s);
                    }
                }
            }
            if (split && !z_joined) join_.order(side_stream_.get(), s);  // z is in
            if (!pass_scaled_)
                cuda::gated_rms_norm(ws_.y, ws_.zxbcdt, n_in, w.gate_norm,
                                     static_cast<float>(c_.norm_eps), ws_.gated, T, E,
                                     E / c_.n_group, act_, s);
            if (wanted >= 0 && layer + 1 == c_.n_layer) {
                // (y is free here: the gated norm has read it, or the gate epilogue never wrote
                // it.)
                if (wanted > 0) {
                    cuda::embedding(ws_.rows, wanted, ws_.gated, E, ws_.y, act_, s);
                    gemm_.run(ws_.y, E, w.out_proj, ws_.h_sel, D, act_, wanted, D, E, act_, s);
                    if (w.out_proj_bias)
                        cuda::add_bias(ws_.h_sel, D, w.out_proj_bias, wanted, D, act_, s);
                }
            } else if (pass_fused_) {
                cuda::GemvFused f;
                f.epilogue = cuda::GemvFused::kResidual;
                f.residual = ws_.residual;
                f.w_next = layer + 1 < c_.n_layer
                               ? weights_.layers[static_cast<size_t>(layer + 1)].norm
                               : weights_.norm_f;
                f.u = ws_.u;
                f.out_parts = ws_.gemv_parts;
                f.in_scale = h_scale(ws_.ssq);  // with the decode gate: its sums of v²
                f.bulk = gemv_bulk_;
                cuda::gemv_fused(ws_.gated, w.out_proj, D, E, act_, gemm_.prefetch_bytes(), f, s);
            } else if (out_parts_.p) {
                gemm_.run_split_k(ws_.gated, E, w.out_proj, ws_.h_parts, T, D, E, out_splits_, act_,
                                  s);
            } else {
                gemm_.run(ws_.gated, E, w.out_proj, ws_.h, D, act_, T, D, E, act_, s);
                if (w.out_proj_bias) cuda::add_bias(ws_.h, D, w.out_proj_bias, T, D, act_, s);
            }
        }
    }

    // The pass's conv1d of `layer` over the xBC columns of zxbcdt into ws_.xbc (conv1d, or the
    // conv in a batch-1 in_proj product's epilogue).
    cuda::Conv1dArgs conv_args(const cuda::DeviceLayer& w, int64_t layer) const {
        cuda::Conv1dArgs conv;
        conv.batch = batch_;
        conv.channels = c_.conv_dim();
        conv.width = c_.d_conv;
        conv.x = static_cast<const char*>(ws_.zxbcdt) + c_.d_inner * dtype_size(act_);
        conv.x_stride = c_.d_in_proj();
        conv.weight = w.conv_weight;
        conv.bias = w.conv_bias;
        conv.state = conv_state_of(layer);
        conv.state_slot_stride = conv_slot_elems_;
        conv.out = ws_.xbc;
        return conv;
    }

    // A batch-1 fused product's input: u with out_proj's parts as its scale (`scaled`), or u
    // already normalized by add_rms_norm (the first layer).
    cuda::GemvFused fused_input(bool scaled) const {
        cuda::GemvFused f;
        f.bulk = gemv_bulk_;
        if (scaled)
            f.in_scale = RowScale{ws_.gemv_parts, cuda::gemv_fused_parts(c_.d_model),
                                  static_cast<float>(c_.d_model), static_cast<float>(c_.norm_eps)};
        return f;
    }

    // The columns [first, d_in_proj) of a batch-1 pass's in_proj (first: 0, or d_inner where z's
    // product runs apart) with conv1d in the product's epilogue: xBC's channels go through the
    // layer's conv into ws_.xbc (and its conv state), z's and dt's raw values to zxbcdt as
    // in_proj_rows would leave them.
    void in_proj_conv(const cuda::DeviceLayer& w, int64_t layer, bool scaled, int64_t first,
                      cudaStream_t s) {
        const int64_t D = c_.d_model, E = c_.d_inner;
        const size_t el = dtype_size(act_);
        cuda::GemvFused f = fused_input(scaled);
        f.epilogue = cuda::GemvFused::kConv;
        f.y = static_cast<char*>(ws_.zxbcdt) + first * el;
        f.conv_begin = E - first;
        f.conv = conv_args(w, layer);
        cuda::gemv_fused(ws_.u, static_cast<const char*>(w.in_proj) + first * D * el,
                         c_.d_in_proj() - first, D, act_, gemm_.prefetch_bytes(), f, s);
    }

    // Whether decode passes of m rows run out_proj as split-k (Gemm::run_split_k into out_splits_
    // f32 parts, summed by the add + RMSNorm that follows: one strided-batched call with
    // out_splits_ times the CTAs and no reduction kernel): out_splits_ >= 2, and every
    // layer's product goes to cuBLASLt (not our decode GEMM, which takes 2-16 rows by default)
    // and is supported, without a bias (added to h) or the decode gate (its RowScale and the
    // parts cannot share one add_rms_norm).
    bool splits_out_proj(int64_t m) const {
        if (out_splits_ < 2 || decode_gate_ || m < 2 || m > max_seqs_) return false;
        const int64_t D = c_.d_model, E = c_.d_inner;
        return !weights_.layers.empty() &&
               std::all_of(weights_.layers.begin(), weights_.layers.end(),
                           [&](const cuda::DeviceLayer& w) {
                               return !w.out_proj_bias &&
                                      !gemm_.uses_decode_kernel(ws_.gated, E, w.out_proj, act_, m,
                                                                D, E, act_) &&
                                      cuda::Gemm::split_k_supported(ws_.gated, E, w.out_proj, E,
                                                                    out_splits_, act_);
                           });
    }

    // The fused SSD's gate epilogue for layer w (z from zxbcdt, sums of squares into ws_.ssq).
    cuda::SsdGate ssd_gate(const cuda::DeviceLayer& w) const {
        return cuda::SsdGate{ws_.zxbcdt, c_.d_in_proj(), w.gate_norm, ws_.ssq};
    }

    // The fused SSD's conv prologue for layer w (x's rows of conv1d; the old conv states).
    cuda::SsdConv ssd_conv(const cuda::DeviceLayer& w, int64_t layer) const {
        cuda::SsdConv conv;
        conv.weight = w.conv_weight;
        conv.bias = w.conv_bias;
        conv.state = conv_state_.data() ? conv_state_of(layer) : nullptr;
        conv.state_ld = c_.conv_dim();
        conv.state_slot_stride = conv_slot_elems_;
        conv.width = c_.d_conv;
        return conv;
    }

    // The deferred gated-norm scale of h's rows (partial sums in ssq) in passes that use the
    // gate epilogue; none otherwise.
    RowScale h_scale(const float* ssq) const {
        if (!pass_scaled_) return RowScale{};
        return RowScale{ssq, c_.n_head * scale_parts_, static_cast<float>(c_.d_inner),
                        static_cast<float>(c_.norm_eps)};
    }

    // Columns [begin, end) of the in_proj product zxbcdt {T, d_in_proj} (rows begin..end of
    // W_in {d_in_proj, d_model}), plus the bias where the layer has one, on `stream`.
    void in_proj_rows(const cuda::DeviceLayer& w, int64_t begin, int64_t end, int64_t T,
                      cudaStream_t stream) {
        in_proj_rows(w, begin, end, T, stream, gemm_);
    }
    void in_proj_rows(const cuda::DeviceLayer& w, int64_t begin, int64_t end, int64_t T,
                      cudaStream_t stream, cuda::Gemm& gemm) {
        const int64_t D = c_.d_model, n_in = c_.d_in_proj();
        const size_t el = dtype_size(act_);
        const auto b = static_cast<size_t>(begin);
        char* y = static_cast<char*>(ws_.zxbcdt) + b * el;
        gemm.run(ws_.u, D, static_cast<const char*>(w.in_proj) + b * static_cast<size_t>(D) * el, y,
                 n_in, act_, T, end - begin, D, act_, stream);
        if (w.in_proj_bias)
            cuda::add_bias(y, n_in, w.in_proj_bias + begin, T, end - begin, act_, stream);
    }

    // zxbcdt's raw dt columns of layer w, row 0 first: the decode step's and the fused SSD's Δ.
    cuda::RawDt raw_dt(const cuda::DeviceLayer& w) const {
        cuda::RawDt dt;
        dt.dt_raw =
            static_cast<const char*>(ws_.zxbcdt) + (c_.d_inner + c_.conv_dim()) * dtype_size(act_);
        dt.raw_stride = c_.d_in_proj();
        dt.dt_bias = w.dt_bias;
        dt.dt_min = c_.dt_min;
        dt.dt_max = c_.dt_max;
        return dt;
    }

    // The SSD of a prefill pass: the fused single launch where it applies (f16/bf16, the shapes of
    // ssd_fused_supported), else the chunked five-step kernels (DUALITY_SSD_PATH=five-step forces
    // them), or the sequential scan. In passes that take the gate (pass_scaled_, always fused),
    // the fused SSD's gate epilogue for layer w writes ws_.gated and ws_.ssq instead of y.
    // With pass_conv_ it reads x's raw rows from zxbcdt and computes their conv itself.
    void prefill_ssd(const cuda::SsdArgs& ssd, const cuda::DeviceLayer& w, int64_t layer,
                     cudaStream_t s) {
        if (pass_scaled_) {
            cuda::SsdArgs a = ssd;
            a.y = ws_.gated;  // the pass's rows are all prefill rows: no offset
            const cuda::SsdGate gate = ssd_gate(w);
            const cuda::RawDt dt = raw_dt(w);  // Δ from zxbcdt's dt columns (no offset either)
            const cuda::RawDt* rd = dt_in_ssd_ ? &dt : nullptr;
            if (pass_conv_) {
                a.x = static_cast<const char*>(ws_.zxbcdt) + c_.d_inner * dtype_size(act_);
                a.x_stride = c_.d_in_proj();
                const cuda::SsdConv conv = ssd_conv(w, layer);
                cuda::ssd_fused(a, ws_.dt, ws_.ssd, ssd_sync_.data(), act_, s, &gate, &conv, rd);
                return;
            }
            cuda::ssd_fused(a, ws_.dt, ws_.ssd, ssd_sync_.data(), act_, s, &gate, nullptr, rd);
        } else if (use_scan_) {
            cuda::ssd_scan(ssd, ws_.dt, act_, s);
        } else if (use_fused_ && cuda::ssd_fused_supported(ssd, act_)) {
            cuda::ssd_fused(ssd, ws_.dt, ws_.ssd, ssd_sync_.data(), act_, s);
        } else {
            cuda::ssd_chunked(ssd, ws_.dt, ws_.ssd, act_, s);
        }
    }

    // Final norm + LM head over the first `rows` tokens (decode: every row is a sequence).
    void enqueue_head(int64_t rows) {
        cudaStream_t s = stream_.get();
        if (pass_fused_ && rows == 1) {  // the last out_proj left u and its parts
            cuda::GemvFused f = fused_input(true);
            f.y = ws_.logits;
            f.y_f32 = true;
            cuda::gemv_fused(ws_.u, weights_.head, c_.vocab_padded, c_.d_model, act_,
                             gemm_.prefetch_bytes(), f, s);
            return;
        }
        cuda::add_rms_norm(ws_.h, ws_.residual, weights_.norm_f, static_cast<float>(c_.norm_eps),
                           ws_.u, rows, c_.d_model, false, act_, s, h_scale(ws_.ssq), out_parts_);
        gemm_.run(ws_.u, c_.d_model, weights_.head, ws_.logits, c_.vocab_padded, DType::kF32, rows,
                  c_.vocab_padded, c_.d_model, act_, s);
    }

    // kAll: final norm over every row into ws_.u; append_all_logits runs the head per block.
    void final_norm_all(int64_t T) {
        cuda::add_rms_norm(ws_.h, ws_.residual, weights_.norm_f, static_cast<float>(c_.norm_eps),
                           ws_.u, T, c_.d_model, false, act_, stream_.get(), h_scale(ws_.ssq));
    }

    void append_all_logits(int64_t T, std::vector<float>& out) {
        const size_t el = dtype_size(act_);
        for (int64_t r0 = 0; r0 < T; r0 += rows_max_) {
            const int64_t n = std::min(rows_max_, T - r0);
            gemm_.run(static_cast<const char*>(ws_.u) + r0 * c_.d_model * el, c_.d_model,
                      weights_.head, ws_.logits, c_.vocab_padded, DType::kF32, n, c_.vocab_padded,
                      c_.d_model, act_, stream_.get());
            append_rows(n, out);
        }
    }

    // Copies the first n rows of ws_.logits to the host, padding columns dropped.
    void append_rows(int64_t n, std::vector<float>& out) {
        const size_t old = out.size();
        out.resize(old + static_cast<size_t>(n * c_.vocab_size));
        DUALITY_CUDA_CHECK(cudaMemcpy2DAsync(
            out.data() + old, c_.vocab_size * 4, ws_.logits, c_.vocab_padded * 4, c_.vocab_size * 4,
            static_cast<size_t>(n), cudaMemcpyDeviceToHost, stream_.get()));
        stream_.sync();
    }

    ModelConfig c_;
    LoadOptions opt_;
    DType act_;
    int64_t conv_slot_elems_ = 0, ssm_slot_elems_ = 0;
    int64_t max_seqs_ = 0, max_tokens_ = 0, rows_max_ = 0, n_chunk_max_ = 0;
    cuda::Stream stream_;
    // Decode passes compute in_proj's z columns on a side stream, forked after the [xBC | dt]
    // columns and joined before the gated norm, or before the decode step when it takes the gate
    // (DUALITY_SPLIT_IN_PROJ=0: one product instead).
    cuda::Stream side_stream_;
    cuda::Event fork_, join_;
    cuda::Event staging_read_;  // after the last pass's description copy (run_pass)
    bool split_in_proj_ = true;
    // Where decode passes fork the side stream (DUALITY_Z_FORK=early|late|auto). Early: right
    // after the norm, so that z's product runs beside the [xBC | dt] one instead of after it, on
    // its own Gemm (gemm_side_: the two products then run at once and cannot share a workspace).
    // Late: after the [xBC | dt] product. Auto (the default): early for batch-1 passes (not taken
    // by the decode stack) of models whose z weights have kZForkEarlyElems or more elements (the
    // 1.3b and larger; DUALITY_Z_FORK_MIN_ELEMS overrides it, for tests), late otherwise. H200,
    // decode ms per step (docs/architecture.md, "Decode step overlap"): early took the 2.7b at
    // batch 1 from 2.130 to 1.989 ms and the 1.3b from 1.182 to 1.128, but the 370m from 0.620 to
    // 0.634 (the 130m 0.299 against 0.300), and every batch of 8 or 64 was slower (2.7b batch
    // 8 3.07 -> 3.33 ms, batch 64 8.22 -> 8.42 ms: there the two cuBLASLt products contend for the
    // SMs).
    enum class ZFork { kLate, kEarly, kAuto };
    static constexpr int64_t kZForkEarlyElems = int64_t{8} << 20;
    ZFork z_fork_ = ZFork::kAuto;
    int64_t z_fork_min_elems_ = kZForkEarlyElems;
    bool z_early(int64_t rows) const {
        return z_fork_ == ZFork::kEarly || (z_fork_ == ZFork::kAuto && rows == 1 && !use_stack_ &&
                                            c_.d_inner * c_.d_model >= z_fork_min_elems_);
    }
    // Decode passes whose out_proj goes to cuBLASLt run it as split-k into out_splits_ f32 parts
    // (Gemm::run_split_k), summed by the add + RMSNorm that follows; 1 keeps the whole product.
    // DUALITY_OUT_PROJ_SPLIT=1..4 sets it; auto (the default) takes 2 for models whose out_proj
    // has kOutProjSplitElems weights or more (the 780m and larger), 1 below. On an H200 two parts
    // made 2.7b steps faster (batch 32 5.46-5.51 → 5.39-5.40 ms, batch 64 8.236-8.245 →
    // 8.203-8.205 ms) but the 130m's slower (batch 64 1.197 → 1.261 ms); docs/architecture.md,
    // "Decode GEMM". out_parts_: this pass's parts, or none (enqueue_layers).
    static constexpr int64_t kOutProjSplitElems = int64_t{4} << 20;
    int out_splits_ = 1;
    bool out_splits_forced_ = false;  // DUALITY_OUT_PROJ_SPLIT gave a number
    cuda::HParts out_parts_{};
    cuda::Gemm gemm_;
    cuda::Gemm gemm_side_;  // z's product where z_early() (empty where it never is)
    cuda::DeviceWeights weights_;
    DeviceBuffer conv_state_;  // {n_slots + 1, n_layer, d_conv - 1, conv_dim} f32
    DeviceBuffer ssm_state_;   // {n_slots + 1, n_layer, n_head, head_dim, d_state} state_dtype
    cuda::DevicePool pool_;
    Workspace ws_{};
    cuda::PinnedBuffer staging_;  // the pass description, host side (desc_'s layout)
    DescLayout desc_{0, 0, 0};
    int32_t* desc_base_ = nullptr;       // the description on the device (in pool_)
    cuda::PinnedBuffer sample_staging_;  // {R} DeviceSampling, then {R} sampled ids
    struct StartedStep {
        bool active = false;
        std::vector<int32_t> ids;   // {batch}: filled by earlier passes, then the last one's
        std::vector<int64_t> rows;  // the latest pass's result rows, in its sampled order
    } inflight_;
    cuda::VarlenBatch batch_{};              // the pass
    cuda::VarlenBatch prefill_batch_{};      // after the n_dec_ one-token rows, renumbered, chunked
    int64_t n_dec_ = 0;                      // decode sequences (= rows) leading a mixed pass
    std::map<int64_t, cuda::Graph> graphs_;  // decode graph per batch bucket
    std::vector<int64_t> slot_tokens_;
    DeviceInfo info_;
    bool use_scan_ = false;       // prefill SSD by the sequential scan instead of ssd_chunked
    bool use_fused_ = true;       // prefill SSD by ssd_fused where supported
    bool passed_f16_ = false;     // ... passing f16 states between chunks (DUALITY_SSD_PASSED_F16)
    bool gate_epilogue_ = false;  // prefill passes may use ssd_fused's gate (layout_workspace)
    bool dt_in_ssd_ = true;       // ... and Δ from the raw dt columns (RawDt)
    bool trim_last_ = true;       // prefill: the last out_proj on the wanted rows only
    bool conv_in_ssd_ = false;    // ... and its conv prologue (layout_workspace)
    bool pass_conv_ = false;      // this pass's SSD computes x's conv (enqueue_layers)
    bool decode_gate_ = false;    // decode passes use ssm_decode's gate (layout_workspace)
    bool pass_scaled_ = false;  // this pass's h rows await their gated-norm scale (enqueue_layers)
    // Batch-1 decode passes may fold the norms and the conv into the products (gemv_fused):
    // gemv_epilogues_ (layout_workspace) says where, pass_fused_ whether this pass does
    // (enqueue_layers).
    enum class GemvEpilogues { kOff, kOn, kAuto };
    GemvEpilogues gemv_epilogues_ = GemvEpilogues::kOff;
    bool pass_fused_ = false;
    bool gemv_epilogues_at(int64_t rows) const {
        return rows == 1 && !use_stack_ &&
               (gemv_epilogues_ == GemvEpilogues::kOn ||
                (gemv_epilogues_ == GemvEpilogues::kAuto && (z_early(1) || batch1_whole_)));
    }
    // Where z's product would fork late, batch-1 passes (DUALITY_GEMV_EPILOGUES=auto) run the
    // layer as three kernels: in_proj whole with the conv in its epilogue (no side stream), the
    // decode step with the gate, out_proj with the residual and the next norm. Only where the
    // whole product's columns fit one wave of the fused kernel (gemv_fused_wave_columns) and every
    // step takes the gate (bf16, one norm group). H200, batch-1 ms per step, two runs: 130m
    // 0.297 -> 0.271-0.273, 370m 0.619-0.624 -> 0.566-0.569; the 780m (whole product 6448
    // columns, a wave 5280) 0.866-0.876 -> 0.891-0.895, so not there. docs/architecture.md,
    // "Batch-1 GEMV epilogues".
    bool batch1_whole_ = false;
    bool whole_at(int64_t rows) const { return rows == 1 && batch1_whole_; }
    // In the three-kernel form, every product (in_proj, out_proj, the LM head) fetches each warp's
    // row of w into shared memory by one bulk copy (GemvFused::bulk), where the longest row,
    // out_proj's d_inner, has at most kGemvBulkRowBytes; DUALITY_GEMV_BULK=1 wherever the form
    // runs (and the rows fit), 0 nowhere. All or none: H200, batch-1 ms per step, two runs each,
    // off -> on: 130m (rows of 1.5 and 3 KB) 0.269-0.274 -> 0.258-0.260; 370m (2 and 4 KB)
    // 0.557-0.558 -> 0.565-0.569; mixed (some products bulk, the others not) was slower than
    // either: 130m 0.281 with in_proj bulk only, 370m 0.583-0.601 likewise and 0.567-0.577 with
    // out_proj bulk only. docs/architecture.md, "Batch-1 GEMV epilogues".
    static constexpr int64_t kGemvBulkRowBytes = 3072;
    bool gemv_bulk_ = false;
    int64_t scale_parts_ = 1;  // this pass's partial sums per head (1, or head_dim / 16 in decode)
    int64_t ssd_chunk_ = 0;    // the prefill chunk table's chunk size (layout_workspace)
    DeviceBuffer ssd_sync_;    // ssd_fused's counters and flags (zeroed once)
    bool use_stack_ = false;   // batch-1 decode passes by cuda::decode_stack
    cuda::DecodeStackArgs stack_;  // its arguments (layout_decode_stack)
    DeviceBuffer stack_block_;     // its layer table, v, ssq and sync words
    cuda::Graph stack_graph_;      // its launch, captured
    bool device_loop_ = true;      // decode_greedy replays the decode graph back to back
    cuda::PinnedBuffer loop_ids_;  // decode_greedy's ids {n_steps, n}, written by the argmax
};

}  // namespace

Result<std::unique_ptr<Model>> make_cuda_model(ModelConfig config, const ModelWeights* weights,
                                               uint64_t seed, const LoadOptions& options) {
    return CudaModel::create(std::move(config), weights, seed, options);
}

int cuda_devices() {
    return cuda::device_count();
}

}  // namespace duality
