// CudaModel (cuda_model.h), a long single-sequence prefill as two pieces in flight
// (DUALITY_PREFILL_PIPELINE=1): run_pipelined_prefill and the second piece's view of the
// workspace. The pieces are the two passes that a prefill split at a chunk boundary would be,
// enqueued layer by layer on two streams instead of one after the other, so that the first
// piece's layer l + 1 runs beside the second piece's layer l (docs/architecture.md, "Side-stream
// overlaps in prefill").
#include <utility>

#include "model/cuda/cuda_model.h"

namespace duality::cuda_model_detail {

// Swaps a Piece into the model's pass members for its lifetime (and back out: the piece then
// holds what it was given, batches set while it was in included).
class CudaModel::PieceSwap {
  public:
    PieceSwap(CudaModel& m, Piece& p) : m_(m), p_(p) { swap(); }
    ~PieceSwap() { swap(); }
    PieceSwap(const PieceSwap&) = delete;
    PieceSwap& operator=(const PieceSwap&) = delete;

  private:
    void swap() {
        std::swap(m_.ws_, p_.ws);
        std::swap(m_.batch_, p_.batch);
        std::swap(m_.prefill_batch_, p_.prefill_batch);
        std::swap(m_.ssd_sync_now_, p_.ssd_sync);
    }
    CudaModel& m_;
    Piece& p_;
};

bool CudaModel::pipelines(const std::vector<PassSeq>& pass, bool all_rows) const {
    const auto T = static_cast<int64_t>(pass.empty() ? 0 : pass.front().tokens.size());
    return pipe_.on && !all_rows && pass.size() == 1 && T >= kPipelineMinTokens &&
           T / 2 >= ssd_chunk_;
}

CudaModel::Piece CudaModel::second_piece(int64_t r0) const {
    Piece p;
    Workspace& w = p.ws;
    w = ws_;
    const size_t a = dtype_size(act_);
    // Row r0 of a {T, width} buffer of el-byte elements.
    const auto at = [r0](void* base, int64_t width, size_t el) -> void* {
        return static_cast<char*>(base) + static_cast<size_t>(r0 * width) * el;
    };
    w.h = at(ws_.h, c_.d_model, a);
    w.residual = static_cast<float*>(at(ws_.residual, c_.d_model, 4));
    w.u = at(ws_.u, c_.d_model, a);
    w.zxbcdt = at(ws_.zxbcdt, c_.d_in_proj(), a);
    w.xbc = at(ws_.xbc, c_.conv_dim(), a);
    w.dt = static_cast<float*>(at(ws_.dt, c_.n_head, 4));
    w.y = at(ws_.y, c_.d_inner, a);
    w.gated = at(ws_.gated, c_.d_inner, a);
    w.ssq = static_cast<float*>(at(ws_.ssq, c_.n_head, 4));  // (prefill: one part per head)
    w.ssd = pipe_.ssd.data();
    desc_.point(w, static_cast<int32_t*>(pipe_.desc.data()));
    p.ssd_sync = pipe_.sync.data();
    return p;
}

void CudaModel::run_pipelined_prefill(const PassSeq& seq) {
    const int64_t T = static_cast<int64_t>(seq.tokens.size());
    const int64_t T0 = T / 2 / ssd_chunk_ * ssd_chunk_;  // piece 0: whole SSD chunks
    const std::vector<PassSeq> first{{seq.slot, seq.tokens.first(static_cast<size_t>(T0)), -1}};
    const std::vector<PassSeq> second{
        {seq.slot, seq.tokens.subspan(static_cast<size_t>(T0)), seq.result_row}};
    cudaStream_t s0 = stream_.get(), s1 = side_stream_.get();
    const PassShape sh0 = describe_pass(first, false, staging_.as<int32_t>());
    const PassShape sh1 = describe_pass(second, false, pipe_.staging.as<int32_t>());
    DUALITY_CUDA_CHECK(cudaMemcpyAsync(desc_base_, staging_.as<int32_t>(),
                                       static_cast<size_t>(desc_.tokens + sh0.T) * 4,
                                       cudaMemcpyHostToDevice, s0));
    DUALITY_CUDA_CHECK(cudaMemcpyAsync(pipe_.desc.data(), pipe_.staging.as<int32_t>(),
                                       static_cast<size_t>(desc_.tokens + sh1.T) * 4,
                                       cudaMemcpyHostToDevice, s0));
    staging_read_.record(s0);  // (run_pass waits for both copies before the next pass)
    // Piece 1 starts after everything queued before it on the model's stream (earlier passes,
    // slot resets, the two descriptions).
    fork_.order(s0, s1);

    set_batches(sh0, false);
    LayerPass lp0 = begin_layers(sh0.T, false, s0, gemm_, false);
    Piece p1 = second_piece(T0);
    LayerPass lp1;
    {
        PieceSwap in(*this, p1);
        set_batches(sh1, false);
        lp1 = begin_layers(sh1.T, false, s1, gemm_side_, false);
    }
    // Piece 0 wants no logits: with trim_last_ its last out_proj does not run.
    const int64_t wanted0 = trim_last_ ? 0 : -1, wanted1 = trim_last_ ? sh1.n_rows : -1;
    for (int64_t layer = 0; layer < c_.n_layer; ++layer) {
        enqueue_layer(lp0, layer, wanted0);
        // Piece 1's layer reads the SSM and conv states that piece 0's layer leaves in the slot:
        // its conv1d and SSD wait for them (its norm and in_proj need not).
        pipe_.layer_done[static_cast<size_t>(layer)].record(s0);
        lp1.state_ready = &pipe_.layer_done[static_cast<size_t>(layer)];
        PieceSwap in(*this, p1);
        enqueue_layer(lp1, layer, wanted1);
    }
    join_.order(s1, s0);
    if (sh1.n_rows > 0) {
        PieceSwap in(*this, p1);
        enqueue_wanted_head(sh1.n_rows, trim_last_, s0);
    }
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace duality::cuda_model_detail
