// CudaModel (cuda_model.h), the layers of a pass: enqueue_layers and the arguments it builds
// (SSD, conv1d, batch-1 fused products, the gate, raw dt, split-k out_proj), in_proj's column
// products and the prefill SSD's choice of kernel.
#include "model/cuda/cuda_model.h"

#include <algorithm>

namespace duality::cuda_model_detail {

cuda::SsdArgs CudaModel::ssd_rows(cuda::SsdArgs a, int64_t r0, const cuda::VarlenBatch& b) const {
    const size_t el = dtype_size(act_);
    a.batch = b;
    a.x = static_cast<const char*>(a.x) + r0 * a.x_stride * el;
    a.B = static_cast<const char*>(a.B) + r0 * a.bc_stride * el;
    a.C = static_cast<const char*>(a.C) + r0 * a.bc_stride * el;
    a.y = static_cast<char*>(a.y) + r0 * c_.d_inner * el;
    return a;
}

cuda::SsdArgs CudaModel::ssd_args(int64_t layer) const {
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
                  ? ssm_ptr(0) + static_cast<size_t>(layer) * c_.n_head * c_.head_dim * c_.d_state *
                                     dtype_size(opt_.state_dtype)
                  : nullptr;
    a.state_slot_stride = ssm_slot_elems_;
    a.state_dtype = opt_.state_dtype;
    a.y = ws_.y;
    a.passed_f16 = passed_f16_;
    return a;
}

void CudaModel::enqueue_layers(int64_t T, bool decode, int64_t wanted) {
    const LayerPass lp = begin_layers(T, decode);
    for (int64_t layer = 0; layer < c_.n_layer; ++layer) enqueue_layer(lp, layer, wanted);
}

CudaModel::LayerPass CudaModel::begin_layers(int64_t T, bool decode) {
    const int64_t D = c_.d_model, E = c_.d_inner;
    cudaStream_t s = stream_.get();
    // The first layer's add_rms_norm gathers the embedding rows itself (embed_in_norm_).
    if (!embed_in_norm_ || weights_.layers.empty())
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
    const bool split =
        decode && split_in_proj_ && !whole_at(T) && !weights_.layers.empty() &&
        !gemm_.uses_decode_kernel(ws_.u, D, weights_.layers.front().in_proj, act_, T, E, D, act_);
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
    // Pure prefill passes with the gate but not the conv prologue (prefill_z_side_): z is read
    // by nothing before the SSD's epilogue, so its product forks onto the side stream after the
    // [xBC | dt] product and runs beside conv1d, joining before the SSD. Like the late decode
    // fork it shares gemm_: no GEMM is enqueued between the fork and the join. H100, 2.7b
    // b1 x 8k, three runs each: 90.25-90.85 ms against 90.69-91.68 ms in one product.
    const bool z_beside_conv =
        !decode && prefill_z_side_ && pass_scaled_ && !pass_conv_ && !weights_.layers.empty();
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
    return LayerPass{T, decode, split, z_first, z_beside_conv};
}

void CudaModel::enqueue_layer(const LayerPass& lp, int64_t layer, int64_t wanted) {
    const int64_t T = lp.T;
    const bool decode = lp.decode, split = lp.split, z_first = lp.z_first;
    const bool z_beside_conv = lp.z_beside_conv;
    cudaStream_t s = stream_.get();
    const int64_t D = c_.d_model, E = c_.d_inner, n_in = c_.d_in_proj();
    const size_t el = dtype_size(act_);
    cuda::VarlenBatch decode_rows = batch_;  // a mixed pass's leading one-token sequences
    decode_rows.n_seq = decode_rows.n_tokens = n_dec_;
    const cuda::DeviceLayer& w = weights_.layers[static_cast<size_t>(layer)];
    const bool fused_in = pass_fused_ && layer > 0;  // u and its parts from out_proj
    if (!fused_in) {
        const bool gather = layer == 0 && embed_in_norm_;  // h is the embedding table
        cuda::add_rms_norm(gather ? weights_.embedding : ws_.h, ws_.residual, w.norm,
                           static_cast<float>(c_.norm_eps), ws_.u, T, D, layer == 0, act_, s,
                           h_scale(ws_.ssq), layer == 0 ? cuda::HParts{} : out_parts_,
                           gather ? ws_.tokens : nullptr);
    }
    const auto z_rows = [&](cudaStream_t stream, cuda::Gemm& z_gemm) {
        if (!fused_in) return in_proj_rows(w, 0, E, T, stream, z_gemm);
        cuda::GemvFused f = fused_input(true);
        f.y = ws_.zxbcdt;
        cuda::gemv_fused(ws_.u, w.in_proj, E, D, act_, z_gemm.prefetch_bytes(), f, stream);
    };
    if (z_first) {
        fork_.order(s, side_stream_.get());
        z_rows(side_stream_.get(), gemm_side_);
    } else if (!split && pass_fused_) {  // the whole product, z's columns included
        in_proj_conv(w, layer, fused_in, 0, s);
    } else if (!split && !z_beside_conv) {
        in_proj_rows(w, 0, n_in, T, s);
    }
    if (pass_fused_ && split) {
        in_proj_conv(w, layer, fused_in, E, s);
    } else if (split || z_beside_conv) {
        in_proj_rows(w, E, n_in, T, s);
    }
    if ((split && !z_first) || z_beside_conv) {
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
            if (z_beside_conv) join_.order(side_stream_.get(), s);  // the gate reads z
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
        cuda::gated_rms_norm(ws_.y, ws_.zxbcdt, n_in, w.gate_norm, static_cast<float>(c_.norm_eps),
                             ws_.gated, T, E, E / c_.n_group, act_, s);
    if (wanted >= 0 && layer + 1 == c_.n_layer) {
        // (y is free here: the gated norm has read it, or the gate epilogue never wrote
        // it.)
        if (wanted > 0) {
            cuda::embedding(ws_.rows, wanted, ws_.gated, E, ws_.y, act_, s);
            gemm_.run(ws_.y, E, w.out_proj, ws_.h_sel, D, act_, wanted, D, E, act_, s);
            if (w.out_proj_bias) cuda::add_bias(ws_.h_sel, D, w.out_proj_bias, wanted, D, act_, s);
        }
    } else if (pass_fused_) {
        cuda::GemvFused f;
        f.epilogue = cuda::GemvFused::kResidual;
        f.residual = ws_.residual;
        f.w_next = layer + 1 < c_.n_layer ? weights_.layers[static_cast<size_t>(layer + 1)].norm
                                          : weights_.norm_f;
        f.u = ws_.u;
        f.out_parts = ws_.gemv_parts;
        f.in_scale = h_scale(ws_.ssq);  // with the decode gate: its sums of v²
        f.bulk = gemv_bulk_;
        cuda::gemv_fused(ws_.gated, w.out_proj, D, E, act_, gemm_.prefetch_bytes(), f, s);
    } else if (out_parts_.p) {
        gemm_.run_split_k(ws_.gated, E, w.out_proj, ws_.h_parts, T, D, E, out_splits_, act_, s);
    } else {
        gemm_.run(ws_.gated, E, w.out_proj, ws_.h, D, act_, T, D, E, act_, s);
        if (w.out_proj_bias) cuda::add_bias(ws_.h, D, w.out_proj_bias, T, D, act_, s);
    }
}

cuda::Conv1dArgs CudaModel::conv_args(const cuda::DeviceLayer& w, int64_t layer) const {
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

cuda::GemvFused CudaModel::fused_input(bool scaled) const {
    cuda::GemvFused f;
    f.bulk = gemv_bulk_;
    if (scaled)
        f.in_scale = RowScale{ws_.gemv_parts, cuda::gemv_fused_parts(c_.d_model),
                              static_cast<float>(c_.d_model), static_cast<float>(c_.norm_eps)};
    return f;
}

void CudaModel::in_proj_conv(const cuda::DeviceLayer& w, int64_t layer, bool scaled, int64_t first,
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

bool CudaModel::splits_out_proj(int64_t m) const {
    if (out_splits_ < 2 || decode_gate_ || m < 2 || m > max_seqs_) return false;
    const int64_t D = c_.d_model, E = c_.d_inner;
    return !weights_.layers.empty() &&
           std::all_of(weights_.layers.begin(), weights_.layers.end(),
                       [&](const cuda::DeviceLayer& w) {
                           return !w.out_proj_bias &&
                                  !gemm_.uses_decode_kernel(ws_.gated, E, w.out_proj, act_, m, D, E,
                                                            act_) &&
                                  cuda::Gemm::split_k_supported(ws_.gated, E, w.out_proj, E,
                                                                out_splits_, act_);
                       });
}

cuda::SsdGate CudaModel::ssd_gate(const cuda::DeviceLayer& w) const {
    return cuda::SsdGate{ws_.zxbcdt, c_.d_in_proj(), w.gate_norm, ws_.ssq};
}

cuda::SsdConv CudaModel::ssd_conv(const cuda::DeviceLayer& w, int64_t layer) const {
    cuda::SsdConv conv;
    conv.weight = w.conv_weight;
    conv.bias = w.conv_bias;
    conv.state = conv_state_.data() ? conv_state_of(layer) : nullptr;
    conv.state_ld = c_.conv_dim();
    conv.state_slot_stride = conv_slot_elems_;
    conv.width = c_.d_conv;
    return conv;
}

RowScale CudaModel::h_scale(const float* ssq) const {
    if (!pass_scaled_) return RowScale{};
    return RowScale{ssq, c_.n_head * scale_parts_, static_cast<float>(c_.d_inner),
                    static_cast<float>(c_.norm_eps)};
}

void CudaModel::in_proj_rows(const cuda::DeviceLayer& w, int64_t begin, int64_t end, int64_t T,
                             cudaStream_t stream) {
    in_proj_rows(w, begin, end, T, stream, gemm_);
}

void CudaModel::in_proj_rows(const cuda::DeviceLayer& w, int64_t begin, int64_t end, int64_t T,
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

cuda::RawDt CudaModel::raw_dt(const cuda::DeviceLayer& w) const {
    cuda::RawDt dt;
    dt.dt_raw =
        static_cast<const char*>(ws_.zxbcdt) + (c_.d_inner + c_.conv_dim()) * dtype_size(act_);
    dt.raw_stride = c_.d_in_proj();
    dt.dt_bias = w.dt_bias;
    dt.dt_min = c_.dt_min;
    dt.dt_max = c_.dt_max;
    return dt;
}

void CudaModel::prefill_ssd(const cuda::SsdArgs& ssd, const cuda::DeviceLayer& w, int64_t layer,
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

}  // namespace duality::cuda_model_detail
