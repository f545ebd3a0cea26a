// CudaModel (cuda_model.h): loading (create, the constructor, init), the choices made at load
// (GEMM tuning, the workspace and decode-stack layouts), the Model API (slots, forward, step,
// sampling, the device-fed greedy loop) and the factory functions of model/backends.h.
#include "model/cuda/cuda_model.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "core/env.h"
#include "core/half.h"
#include "model/backends.h"
#include "model/cpu_model.h"

namespace duality::cuda_model_detail {

Result<std::unique_ptr<Model>> CudaModel::create(ModelConfig config, const ModelWeights* weights,
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

Status CudaModel::reset_slot(int slot) {
    DUALITY_RETURN_IF_ERROR(check_slot(slot));
    clear_slot(slot);
    return Status::ok();
}

Status CudaModel::read_slot(int slot, SequenceState& out) const {
    DUALITY_RETURN_IF_ERROR(check_slot(slot));
    out = new_state();
    download_slot(slot, out);
    return Status::ok();
}

Status CudaModel::write_slot(int slot, const SequenceState& s) {
    DUALITY_RETURN_IF_ERROR(check_slot(slot));
    DUALITY_RETURN_IF_ERROR(check_state(s));
    upload_slot(slot, s);
    return Status::ok();
}

Status CudaModel::copy_slot(int from, int to) {
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

Result<std::vector<float>> CudaModel::forward(std::span<const int32_t> tokens, SequenceState& state,
                                              LogitsMode mode) {
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
        std::vector<PassSeq> pass{{scratch,
                                   tokens.subspan(static_cast<size_t>(t0), static_cast<size_t>(n)),
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

Result<std::vector<float>> CudaModel::step_all_logits(int slot, std::span<const int32_t> tokens) {
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

template <typename F>
void CudaModel::run_step(std::span<const SeqInput> batch, F&& consume) {
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

Result<std::vector<float>> CudaModel::step(std::span<const SeqInput> batch) {
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

Result<std::vector<int32_t>> CudaModel::step_sample(std::span<const SeqInput> batch,
                                                    std::span<const SamplingParams> params,
                                                    std::span<const uint64_t> draws) {
    DUALITY_RETURN_IF_ERROR(start_step_sample(batch, params, draws));
    return finish_step_sample();
}

Status CudaModel::start_step_sample(std::span<const SeqInput> batch,
                                    std::span<const SamplingParams> params,
                                    std::span<const uint64_t> draws) {
    if (inflight_.active) return invalid_argument("start_step_sample: a step is already started");
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
            DUALITY_CUDA_CHECK(cudaMemcpyAsync(ws_.sampling, sp, n * sizeof(cuda::DeviceSampling),
                                               cudaMemcpyHostToDevice, s));
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

Result<std::vector<int32_t>> CudaModel::decode_greedy(std::span<const SeqInput> batch,
                                                      int n_steps) {
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
    const bool loop_graphs = loop_steps_ > 1 && opt_.cuda_graphs && !(S == 1 && use_stack_);
    if (loop_graphs && !loop_dev_ids_.data()) {  // once, for any batch: graphs keep its address
        const size_t bytes = sizeof(int32_t) * static_cast<size_t>(loop_steps_ * max_seqs_);
        DUALITY_ASSIGN_OR_RETURN(loop_dev_ids_,
                                 DeviceBuffer::allocate(bytes, "the device loop's ids"));
    }
    if (loop_graphs && info_.argmax_in_head && !argmax_key_.data()) {  // 0 between steps
        DUALITY_ASSIGN_OR_RETURN(argmax_key_, DeviceBuffer::allocate(8, "the argmax key"));
        DUALITY_CUDA_CHECK(cudaMemsetAsync(argmax_key_.data(), 0, 8, s));
    }
    for (int k = 0; k < n_steps;) {
        // The steps after the first in graphs of K steps, K the largest power of two within
        // both what is left and loop_steps_ (so a call of 16 steps runs 1 + 8 + 4 + 2 + 1).
        const int K = loop_graphs && k > 0 ? static_cast<int>(std::bit_floor(static_cast<unsigned>(
                                                 std::min(n_steps - k, loop_steps_))))
                                           : 1;
        if (K > 1) {  // K whole steps in one graph
            cuda::Graph& g = loop_graphs_[{n, K}];
            if (!g)
                g = cuda::Graph::capture(s, [&] {
                    for (int j = 0; j < K; ++j) {
                        enqueue_layers(S, true);
                        enqueue_greedy_head(S, n, ws_.tokens, loop_dev_ids_.as<int32_t>() + j * n);
                    }
                });
            g.launch(s);
            DUALITY_CUDA_CHECK(cudaMemcpyAsync(out + static_cast<int64_t>(k) * n,
                                               loop_dev_ids_.data(), sizeof(int32_t) * K * n,
                                               cudaMemcpyDeviceToHost, s));
            k += K;
            continue;
        }
        if (k == 0) {
            run_pass(pass, false);
        } else {
            run_decode(S);
        }
        cuda::argmax_rows(ws_.logits, c_.vocab_padded, n, sample_vocab(), ws_.tokens, s,
                          out + static_cast<int64_t>(k) * n);
        ++k;
    }
    for (const SeqInput& in : batch) slot_tokens_[static_cast<size_t>(in.slot)] += n_steps;
    stream_.sync();
    return std::vector<int32_t>(out, out + static_cast<int64_t>(n_steps) * n);
}

Result<std::vector<int32_t>> CudaModel::finish_step_sample() {
    if (!inflight_.active) return invalid_argument("finish_step_sample: no step was started");
    inflight_.active = false;
    stream_.sync();
    read_sampled_ids();
    return std::move(inflight_.ids);
}

void CudaModel::read_sampled_ids() {
    const int32_t* out = sampled_ids();
    for (size_t i = 0; i < inflight_.rows.size(); ++i)
        inflight_.ids[static_cast<size_t>(inflight_.rows[i])] = out[i];
}

CudaModel::CudaModel(ModelConfig c, const LoadOptions& o)
    : c_(std::move(c)), opt_(o), act_(o.dtype) {
    conv_slot_elems_ = c_.n_layer * (c_.d_conv - 1) * c_.conv_dim();
    ssm_slot_elems_ = c_.n_layer * c_.n_head * c_.head_dim * c_.d_state;
    max_seqs_ = next_pow2(opt_.n_slots + 1);
    max_tokens_ = std::max<int64_t>(opt_.max_tokens, max_seqs_);
    rows_max_ = std::max<int64_t>(max_seqs_, 256);
    split_in_proj_ = !env_is("DUALITY_SPLIT_IN_PROJ", "0");
    device_loop_ = !env_is("DUALITY_DEVICE_LOOP", "0");
    embed_in_norm_ = !env_is("DUALITY_EMBED_IN_NORM", "0");
    loop_steps_ = static_cast<int>(std::clamp<long long>(
        env_int("DUALITY_LOOP_GRAPH_STEPS", kLoopGraphSteps), 1, kMaxLoopGraphSteps));
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

Status CudaModel::init(const ModelWeights* weights, uint64_t seed) {
    DUALITY_ASSIGN_OR_RETURN(gemm_, cuda::Gemm::create());
    if (weights) {
        DUALITY_ASSIGN_OR_RETURN(weights_, cuda::upload_weights(c_, *weights, act_, stream_.get()));
    } else {
        DUALITY_ASSIGN_OR_RETURN(weights_,
                                 cuda::random_device_weights(c_, seed, act_, stream_.get()));
    }
    const int64_t n_alloc_slots = opt_.n_slots + 1;  // + the scratch slot
    DUALITY_ASSIGN_OR_RETURN(
        conv_state_, DeviceBuffer::allocate(n_alloc_slots * conv_slot_bytes(), "the conv states"));
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
    if (split_in_proj_ && z_early(1)) {
        const int64_t budget = cuda::prefetch_budget_from_env(kEarlyForkPrefetchBytes);
        gemm_.set_prefetch_bytes(budget);
        gemm_side_.set_prefetch_bytes(budget);
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
    // (What argmax_key_ says: decode_greedy's graphs of several steps, batch 1 with the fused
    // products.)
    info_.argmax_in_head = !env_is("DUALITY_ARGMAX_IN_HEAD", "0") && device_loop_ &&
                           loop_steps_ > 1 && opt_.cuda_graphs && gemv_epilogues_at(1);
    info_.gemv_bulk = gemv_bulk_;
    info_.gemv_prefetch_bytes = gemv_bulk_ ? 0 : gemm_.prefetch_bytes();
    info_.ssd_conv = conv_in_ssd_;
    info_.ssd_dt = gate_epilogue_ && dt_in_ssd_;
    info_.prefill_z_side = gate_epilogue_ && !conv_in_ssd_ && prefill_z_side_;
    info_.trim_last = trim_last_;
    info_.ssd_prefill = use_scan_                                                    ? "scan"
                        : use_fused_ && cuda::ssd_fused_supported(ssd_args(0), act_) ? "fused"
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

void CudaModel::tune_gemms() {
    if (env_is("DUALITY_GEMM_TUNE", "0")) return;
    if (weights_.layers.empty() || !weights_.head) return;
    cudaStream_t s = stream_.get();
    const int64_t D = c_.d_model, E = c_.d_inner, n_in = c_.d_in_proj();
    const size_t el = dtype_size(act_);
    DUALITY_CUDA_CHECK(cudaMemsetAsync(ws_.u, 0, static_cast<size_t>(max_seqs_ * D) * el, s));
    DUALITY_CUDA_CHECK(cudaMemsetAsync(ws_.gated, 0, static_cast<size_t>(max_seqs_ * E) * el, s));
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
            gemm_.tune_split_k(ws_.gated, E, out_proj, ws_.h_parts, m, D, E, out_splits_, act_, s);
        gemm_.tune(ws_.u, D, head, ws_.logits, c_.vocab_padded, DType::kF32, m, c_.vocab_padded, D,
                   act_, s);
    }
}

Status CudaModel::layout_workspace() {
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
    gate_epilogue_ =
        use_fused_ && !use_scan_ && gate_fits && !(gate_env && std::string_view(gate_env) == "0");
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
    // Pure prefill passes with the gate and a separate conv1d over all of xBC (the 2.7b, where
    // the conv prologue is off): in_proj's z columns on the side stream, beside conv1d
    // (begin_layers). DUALITY_PREFILL_Z_SIDE=0 keeps one product (A/B).
    prefill_z_side_ = !env_is("DUALITY_PREFILL_Z_SIDE", "0");
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
    const size_t ssd_bytes =
        std::max(cuda::ssd_chunked_workspace_bytes(probe), cuda::ssd_fused_workspace_bytes(probe));
    DUALITY_ASSIGN_OR_RETURN(ssd_sync_, DeviceBuffer::allocate(cuda::ssd_fused_sync_bytes(probe),
                                                               "the SSD sync buffer"));
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
    desc_.point(ws_, desc_base_);
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

bool CudaModel::gemv_epilogues_fit() const {
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

Status CudaModel::layout_decode_stack() {
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

void CudaModel::clear_slot(int slot) {
    DUALITY_CUDA_CHECK(cudaMemsetAsync(conv_ptr(slot), 0, conv_slot_bytes(), stream_.get()));
    DUALITY_CUDA_CHECK(cudaMemsetAsync(ssm_ptr(slot), 0, ssm_slot_bytes(), stream_.get()));
    slot_tokens_[static_cast<size_t>(slot)] = 0;  // ordered on the stream, like copy_slot
}

void CudaModel::upload_slot(int slot, const SequenceState& s) {
    // cuda::upload copies on the legacy default stream, which does not wait for the model's
    // (non-blocking) stream: finish what is queued there (a copy out of this slot, say) first.
    stream_.sync();
    cuda::upload(conv_ptr(slot), s.conv.data(), conv_slot_bytes());
    if (opt_.state_dtype == DType::kF32) {
        cuda::upload(ssm_ptr(slot), s.ssm.data(), ssm_slot_bytes());
    } else {
        std::vector<uint16_t> h(s.ssm.size());
        for (size_t i = 0; i < h.size(); ++i)
            h[i] = opt_.state_dtype == DType::kBF16 ? f32_to_bf16(s.ssm[i]) : f32_to_f16(s.ssm[i]);
        cuda::upload(ssm_ptr(slot), h.data(), ssm_slot_bytes());
    }
    slot_tokens_[static_cast<size_t>(slot)] = s.n_tokens;
}

void CudaModel::download_slot(int slot, SequenceState& s) const {
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

Status CudaModel::check_slot(int slot) const {
    if (slot < 0 || slot >= opt_.n_slots)
        return invalid_argument("state slot " + std::to_string(slot) + " is outside [0, " +
                                std::to_string(opt_.n_slots) + ")");
    return Status::ok();
}

Status CudaModel::check_state(const SequenceState& s) const {
    if (s.n_layer != c_.n_layer || s.d_conv != c_.d_conv || s.conv_dim != c_.conv_dim() ||
        s.n_head != c_.n_head || s.head_dim != c_.head_dim || s.d_state != c_.d_state ||
        s.conv.size() != static_cast<size_t>(conv_slot_elems_) ||
        s.ssm.size() != static_cast<size_t>(ssm_slot_elems_))
        return invalid_argument("sequence state does not belong to this model");
    return Status::ok();
}

Status CudaModel::check_tokens(std::span<const int32_t> tokens) const {
    for (size_t i = 0; i < tokens.size(); ++i)
        if (tokens[i] < 0 || tokens[i] >= c_.vocab_size)
            return invalid_argument("token id " + std::to_string(tokens[i]) + " at position " +
                                    std::to_string(i) + " is outside the vocabulary [0, " +
                                    std::to_string(c_.vocab_size) + ")");
    return Status::ok();
}

}  // namespace duality::cuda_model_detail

namespace duality {

Result<std::unique_ptr<Model>> make_cuda_model(ModelConfig config, const ModelWeights* weights,
                                               uint64_t seed, const LoadOptions& options) {
    return cuda_model_detail::CudaModel::create(std::move(config), weights, seed, options);
}

int cuda_devices() {
    return cuda::device_count();
}

}  // namespace duality
