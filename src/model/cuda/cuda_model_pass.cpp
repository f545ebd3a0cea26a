// CudaModel (cuda_model.h), one pass of a step: the pass order, the batch description's upload
// (run_pass), decode passes replayed from CUDA graphs (run_decode), and the final norm, LM head
// and logits copies.
#include "model/cuda/cuda_model.h"

#include <algorithm>
#include <vector>

#include "core/check.h"

namespace duality::cuda_model_detail {

void CudaModel::order_pass(std::vector<PassSeq>& pass) {
    std::stable_partition(pass.begin(), pass.end(),
                          [](const PassSeq& p) { return p.tokens.size() == 1; });
}

CudaModel::PassShape CudaModel::describe_pass(const std::vector<PassSeq>& pass, bool decode) {
    const int64_t n = static_cast<int64_t>(pass.size());
    PassShape sh;
    sh.S = decode ? decode_rows(n) : n;
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
    for (int64_t i = n; i < sh.S; ++i) tokens[T++] = 0;  // bucket padding
    sh.T = T;
    cu[0] = 0;
    for (int64_t i = 0; i < sh.S; ++i) {
        cu[i + 1] = cu[i] + (i < n ? static_cast<int32_t>(pass[i].tokens.size()) : 1);
        slots[i] = i < n ? pass[i].slot : opt_.n_slots;  // padding computes into scratch
    }
    // Mixed pass: the leading one-token sequences [0, n_dec) take the decode step; the prefill
    // SSD sees only sequences [n_dec, S), rows [n_dec, T), renumbered from 0.
    n_dec_ = 0;
    if (!decode)
        while (n_dec_ < n && pass[static_cast<size_t>(n_dec_)].tokens.size() == 1) ++n_dec_;
    sh.n_pre = sh.S - n_dec_;
    if (!decode)
        for (int64_t i = 0; i <= sh.n_pre; ++i) cu_pre[i] = cu[n_dec_ + i] - cu[n_dec_];
    cu_chunks[0] = 0;
    for (int64_t i = 0; i < sh.n_pre; ++i) {
        if (!decode)
            for (int32_t t = cu_pre[i]; t < cu_pre[i + 1]; t += static_cast<int32_t>(ssd_chunk_)) {
                chunk_start[sh.n_chunk] = t;
                chunk_len[sh.n_chunk] =
                    std::min<int32_t>(static_cast<int32_t>(ssd_chunk_), cu_pre[i + 1] - t);
                chunk_seq[sh.n_chunk] = static_cast<int32_t>(i);
                ++sh.n_chunk;
            }
        cu_chunks[i + 1] = static_cast<int32_t>(sh.n_chunk);
    }
    for (int64_t i = 0; i < n; ++i)
        if (pass[i].result_row >= 0) rows[sh.n_rows++] = cu[i + 1] - 1;
    return sh;
}

void CudaModel::set_batches(const PassShape& sh, bool decode) {
    batch_ = cuda::VarlenBatch{};
    batch_.n_seq = sh.S;
    batch_.n_tokens = sh.T;
    batch_.cu_seqlens = ws_.cu_seqlens;
    batch_.slots = ws_.slots;
    // The prefill rows of a mixed (or pure prefill) pass, with their chunking.
    prefill_batch_ = cuda::VarlenBatch{};  // empty in decode passes
    if (!decode) {
        prefill_batch_.n_seq = sh.n_pre;
        prefill_batch_.n_tokens = sh.T - n_dec_;
        prefill_batch_.cu_seqlens = ws_.cu_prefill;
        prefill_batch_.slots = ws_.slots + n_dec_;
        prefill_batch_.n_chunk = sh.n_chunk;
        prefill_batch_.chunk_start = ws_.chunk_start;
        prefill_batch_.chunk_len = ws_.chunk_len;
        prefill_batch_.chunk_seq = ws_.chunk_seq;
        prefill_batch_.cu_chunks = ws_.cu_chunks;
    }
}

void CudaModel::run_pass(const std::vector<PassSeq>& pass, bool all_rows) {
    const bool decode = !all_rows && std::all_of(pass.begin(), pass.end(), [](const PassSeq& p) {
        return p.tokens.size() == 1;
    });
    // The previous pass's description copy may still be reading the staging buffer; wait for
    // that copy only, not for what follows it on the stream (cache copies, slot resets), so
    // that queuing this pass never waits for the GPU to drain.
    staging_read_.sync();
    pass_scaled_ = false;  // until enqueue_layers decides (graph replays leave it false)
    pass_fused_ = false;
    const PassShape sh = describe_pass(pass, decode);
    const int64_t T = sh.T, n_rows = sh.n_rows;

    // One copy: every field lies below the tokens, which end the description.
    cudaStream_t s = stream_.get();
    DUALITY_CUDA_CHECK(cudaMemcpyAsync(desc_base_, staging_.as<int32_t>(),
                                       static_cast<size_t>(desc_.tokens + T) * 4,
                                       cudaMemcpyHostToDevice, s));
    staging_read_.record(s);

    // The whole pass (embedding, conv1d, norms, GEMMs; the decode step of decode passes).
    set_batches(sh, decode);
    if (decode) {
        run_decode(sh.S);
    } else {
        // Only the wanted rows leave the last layer: its out_proj runs on them alone, into
        // h_sel (trim_last_).
        const bool trim = trim_last_ && !all_rows;
        enqueue_layers(T, false, trim ? n_rows : -1);
        if (all_rows) {
            final_norm_all(T);
        } else if (n_rows > 0) {
            enqueue_wanted_head(n_rows, trim);
        }
    }
    DUALITY_CUDA_LAUNCH_CHECK();
}

void CudaModel::enqueue_wanted_head(int64_t n_rows, bool trimmed) {
    cudaStream_t s = stream_.get();
    // Gather the wanted rows (and their deferred gated-norm scales; h's rows are in h_sel
    // already where the last layer was trimmed), then norm + head on them only.
    if (!trimmed) cuda::embedding(ws_.rows, n_rows, ws_.h, c_.d_model, ws_.h_sel, act_, s);
    cuda::embedding(ws_.rows, n_rows, ws_.residual, c_.d_model, ws_.res_sel, DType::kF32, s);
    if (pass_scaled_)
        cuda::embedding(ws_.rows, n_rows, ws_.ssq, c_.n_head, ws_.ssq_sel, DType::kF32, s);
    cuda::add_rms_norm(ws_.h_sel, ws_.res_sel, weights_.norm_f, static_cast<float>(c_.norm_eps),
                       ws_.u, n_rows, c_.d_model, false, act_, s, h_scale(ws_.ssq_sel));
    gemm_.run(ws_.u, c_.d_model, weights_.head, ws_.logits, c_.vocab_padded, DType::kF32, n_rows,
              c_.vocab_padded, c_.d_model, act_, s);
}

void CudaModel::run_decode(int64_t S) {
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

void CudaModel::enqueue_head(int64_t rows, unsigned long long* argmax_key) {
    cudaStream_t s = stream_.get();
    if (pass_fused_ && rows == 1) {  // the last out_proj left u and its parts
        cuda::GemvFused f = fused_input(true);
        f.y = ws_.logits;
        f.y_f32 = true;
        f.argmax_key = argmax_key;
        f.argmax_vocab = sample_vocab();
        cuda::gemv_fused(ws_.u, weights_.head, c_.vocab_padded, c_.d_model, act_,
                         gemm_.prefetch_bytes(), f, s);
        return;
    }
    cuda::add_rms_norm(ws_.h, ws_.residual, weights_.norm_f, static_cast<float>(c_.norm_eps), ws_.u,
                       rows, c_.d_model, false, act_, s, h_scale(ws_.ssq), out_parts_);
    gemm_.run(ws_.u, c_.d_model, weights_.head, ws_.logits, c_.vocab_padded, DType::kF32, rows,
              c_.vocab_padded, c_.d_model, act_, s);
}

void CudaModel::enqueue_greedy_head(int64_t S, int64_t n, int32_t* ids, int32_t* ids_also) {
    cudaStream_t s = stream_.get();
    // Where device_info() says so, every batch-1 step takes it (no silent fallback: a test that
    // sees argmax_in_head knows the key path ran).
    if (info_.argmax_in_head && S == 1) {
        DUALITY_ASSERT(pass_fused_ && argmax_key_.data());
        enqueue_head(S, argmax_key_.as<unsigned long long>());
        cuda::argmax_from_key(argmax_key_.as<unsigned long long>(), ids, ids_also, s);
        return;
    }
    enqueue_head(S);
    cuda::argmax_rows(ws_.logits, c_.vocab_padded, n, sample_vocab(), ids, s, ids_also);
}

void CudaModel::final_norm_all(int64_t T) {
    cuda::add_rms_norm(ws_.h, ws_.residual, weights_.norm_f, static_cast<float>(c_.norm_eps), ws_.u,
                       T, c_.d_model, false, act_, stream_.get(), h_scale(ws_.ssq));
}

void CudaModel::append_all_logits(int64_t T, std::vector<float>& out) {
    const size_t el = dtype_size(act_);
    for (int64_t r0 = 0; r0 < T; r0 += rows_max_) {
        const int64_t n = std::min(rows_max_, T - r0);
        gemm_.run(static_cast<const char*>(ws_.u) + r0 * c_.d_model * el, c_.d_model, weights_.head,
                  ws_.logits, c_.vocab_padded, DType::kF32, n, c_.vocab_padded, c_.d_model, act_,
                  stream_.get());
        append_rows(n, out);
    }
}

void CudaModel::append_rows(int64_t n, std::vector<float>& out) {
    const size_t old = out.size();
    out.resize(old + static_cast<size_t>(n * c_.vocab_size));
    DUALITY_CUDA_CHECK(cudaMemcpy2DAsync(
        out.data() + old, c_.vocab_size * 4, ws_.logits, c_.vocab_padded * 4, c_.vocab_size * 4,
        static_cast<size_t>(n), cudaMemcpyDeviceToHost, stream_.get()));
    stream_.sync();
}

}  // namespace duality::cuda_model_detail
