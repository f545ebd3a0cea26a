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
//
// This private header holds the helpers of a pass (PassSeq, Workspace, DescLayout) and the
// CudaModel class; its methods are defined in cuda_model.cpp (loading, the Model API),
// cuda_model_pass.cpp (running a pass) and cuda_model_layers.cpp (the layers of a pass).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "core/cuda/device_buffer.h"
#include "core/cuda/stream.h"
#include "duality/model.h"
#include "model/cuda/device_weights.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/gemm_small_m.h"
#include "ops/cuda/ops.h"

namespace duality::cuda_model_detail {

using cuda::DeviceBuffer;

inline int64_t next_pow2(int64_t x) {
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
    // w's description pointers, into a device copy of the layout at `base`.
    void point(Workspace& w, int32_t* base) const {
        w.tokens = base + tokens;
        w.cu_seqlens = base + cu_seqlens;
        w.slots = base + slots;
        w.chunk_start = base + chunk_start;
        w.chunk_len = base + chunk_len;
        w.chunk_seq = base + chunk_seq;
        w.cu_chunks = base + cu_chunks;
        w.rows = base + rows;
        w.cu_prefill = base + cu_prefill;
    }
};

class CudaModel final : public Model {
  public:
    static Result<std::unique_ptr<Model>> create(ModelConfig config, const ModelWeights* weights,
                                                 uint64_t seed, const LoadOptions& o);

    const ModelConfig& config() const override { return c_; }

    DeviceInfo device_info() const override { return info_; }
    int n_slots() const override { return opt_.n_slots; }

    Status reset_slot(int slot) override;

    Status read_slot(int slot, SequenceState& out) const override;

    Status write_slot(int slot, const SequenceState& s) override;

    Status copy_slot(int from, int to) override;

    Result<std::vector<float>> forward(std::span<const int32_t> tokens, SequenceState& state,
                                       LogitsMode mode) override;

    // forward()'s passes on the slot itself: the default would move the state through the host
    // four times (168 MB each on the 2.7b).
    Result<std::vector<float>> step_all_logits(int slot, std::span<const int32_t> tokens) override;

    Result<std::vector<float>> step(std::span<const SeqInput> batch) override;

    Result<std::vector<int32_t>> step_sample(std::span<const SeqInput> batch,
                                             std::span<const SamplingParams> params,
                                             std::span<const uint64_t> draws) override;

    bool overlaps_steps() const override { return true; }

    // Queues the step and the draws of its last pass, whose ids finish_step_sample() reads once
    // the stream is done (earlier passes of a step longer than max_tokens wait for theirs here).
    Status start_step_sample(std::span<const SeqInput> batch,
                             std::span<const SamplingParams> params,
                             std::span<const uint64_t> draws) override;

    // With device_loop_ (the default; DUALITY_DEVICE_LOOP=0 turns it off): step 0 runs as a normal
    // decode pass (run_pass: the batch description uploaded, then run_decode); every later step is
    // run_decode again (the bucket's graph replayed), whose embedding reads the token ids the
    // previous step's argmax wrote into the description (ws_.tokens; padding rows keep their 0),
    // and each argmax also writes its ids into pinned host memory. So the host queues all the steps
    // at once and waits once: no round trip between steps (a batch within n_slots is one pass:
    // max_seqs_ and max_tokens_ exceed n_slots). Else the default's step_sample() per step.
    Result<std::vector<int32_t>> decode_greedy(std::span<const SeqInput> batch,
                                               int n_steps) override;

    Result<std::vector<int32_t>> finish_step_sample() override;

  private:
    // Where the D2H copy of a pass's sampled ids lands: after the DeviceSampling rows.
    int32_t* sampled_ids() {
        return reinterpret_cast<int32_t*>(sample_staging_.as<cuda::DeviceSampling>() + rows_max_);
    }
    // The copied ids of the pass whose result rows are inflight_.rows, into inflight_.ids.
    void read_sampled_ids();

    // The ids step_sample may draw: LoadOptions::sample_vocab, within the vocabulary.
    int64_t sample_vocab() const {
        return opt_.sample_vocab > 0 ? std::min(opt_.sample_vocab, c_.vocab_size) : c_.vocab_size;
    }

    CudaModel(ModelConfig c, const LoadOptions& o);

    Status init(const ModelWeights* weights, uint64_t seed);

    // Times cuBLASLt's candidates for the GEMMs of decode steps (in_proj, out_proj and the LM
    // head at every batch bucket up to max_seqs_) on the model's own weights, layer after layer
    // as in a step, so that steps run the fastest (Gemm::tune, which takes f16/bf16 buckets of at
    // most 256 rows; cuBLASLt's first guess was 7-9% slower at batch 64 on an H200). Decode
    // passes run in_proj as its z and [xBC | dt] parts (enqueue_layers), tuned here too; the
    // whole in_proj's choice, like out_proj's, also serves prefill and mixed passes of as many
    // rows. DUALITY_GEMM_TUNE=0 keeps cuBLASLt's first guess everywhere.
    void tune_gemms();

    // Sizes and carves the workspace for max_tokens_ tokens and max_seqs_ sequences.
    Status layout_workspace();

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
    bool gemv_epilogues_fit() const;

    // Batch-1 decode passes run as one persistent kernel (cuda::decode_stack), opt-in with
    // DUALITY_DECODE_STACK=1, where it supports the model (Hopper, f16/bf16, f32 state): its layer
    // table and scratch, the rest of its arguments from the workspace. Off by default: on an H200
    // it is still slower than the kernel chain (130m 0.44 against 0.35 ms per step, 2.7b 2.95
    // against 2.16 ms; docs/architecture.md, "Batch-1 decode in one launch").
    Status layout_decode_stack();

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
    void clear_slot(int slot);
    void upload_slot(int slot, const SequenceState& s);
    void download_slot(int slot, SequenceState& s) const;

    // ---- validation ----
    Status check_slot(int slot) const;
    Status check_state(const SequenceState& s) const;
    Status check_tokens(std::span<const int32_t> tokens) const;

    // ---- steps and passes ----
    static int64_t count_wanted(const std::vector<PassSeq>& pass) {
        return std::count_if(pass.begin(), pass.end(),
                             [](const PassSeq& p) { return p.result_row >= 0; });
    }

    // Cuts the batch into passes of at most max_tokens_ tokens; `consume` reads each pass's
    // results. A sequence split across passes continues from its state; only its last piece
    // asks for logits.
    template <typename F>
    void run_step(std::span<const SeqInput> batch, F&& consume);

    // One-token sequences first (see run_pass); consumers find results by result_row.
    static void order_pass(std::vector<PassSeq>& pass);

    // `a` restricted to the packed rows [r0, r0 + b.n_tokens) described by `b`.
    cuda::SsdArgs ssd_rows(cuda::SsdArgs a, int64_t r0, const cuda::VarlenBatch& b) const;

    cuda::SsdArgs ssd_args(int64_t layer) const;

    // Uploads the pass's description, runs it, and leaves logits of the wanted rows (or of all
    // rows when `all_rows`: then the caller reads them block by block) in ws_.logits.
    void run_pass(const std::vector<PassSeq>& pass, bool all_rows);

    // What describe_pass wrote: the pass's rows T, sequences S (with bucket padding), prefill
    // sequences, SSD chunks and wanted rows.
    struct PassShape {
        int64_t T = 0, S = 0, n_pre = 0, n_chunk = 0, n_rows = 0;
    };
    // The batch description of `pass` (tokens, cu_seqlens, slots, the prefill rows' chunk table,
    // the wanted rows) into the pinned staging_ at desc_'s offsets; sets n_dec_.
    PassShape describe_pass(const std::vector<PassSeq>& pass, bool decode);
    // batch_ and prefill_batch_ for a pass of that shape, over ws_'s description.
    void set_batches(const PassShape& sh, bool decode);
    // The final norm and LM head of the n_rows wanted rows of a prefill or mixed pass (ws_.rows),
    // their h rows in h_sel already where the last layer was trimmed.
    void enqueue_wanted_head(int64_t n_rows, bool trimmed);

    // The rows a decode pass of n sequences runs: with CUDA graphs its bucket (the next power of
    // two, each bucket one graph), else n.
    int64_t decode_rows(int64_t n) const { return opt_.cuda_graphs ? next_pow2(n) : n; }

    // A decode pass of S rows (the bucket; S tokens) over the description and batch_ that
    // run_pass set up, logits of every row to ws_.logits: replayed (or captured) from the bucket's
    // graph, or enqueued without graphs.
    void run_decode(int64_t S);

    // The layers over the T packed tokens of batch_. With wanted >= 0 (prefill and mixed passes
    // whose logits are wanted only for the `wanted` rows of ws_.rows), the last layer's out_proj
    // runs on those rows alone and leaves them in ws_.h_sel: nothing reads the other rows' output
    // of the last layer (the SSD and conv states, which later passes read, are complete before
    // out_proj); with wanted == 0 it does not run at all. 2.7b, 8k tokens: a 274 µs product becomes
    // a one-row one (the final norm already ran on the wanted rows alone).
    void enqueue_layers(int64_t T, bool decode, int64_t wanted = -1);

    // enqueue_layers in two steps: begin_layers runs the embedding and decides the pass's forms,
    // enqueue_layer enqueues one layer in them.
    struct LayerPass {
        int64_t T = 0;
        bool decode = false;
        bool split = false, z_first = false, z_beside_conv = false;
    };
    LayerPass begin_layers(int64_t T, bool decode);
    void enqueue_layer(const LayerPass& lp, int64_t layer, int64_t wanted);

    // The pass's conv1d of `layer` over the xBC columns of zxbcdt into ws_.xbc (conv1d, or the
    // conv in a batch-1 in_proj product's epilogue).
    cuda::Conv1dArgs conv_args(const cuda::DeviceLayer& w, int64_t layer) const;

    // A batch-1 fused product's input: u with out_proj's parts as its scale (`scaled`), or u
    // already normalized by add_rms_norm (the first layer).
    cuda::GemvFused fused_input(bool scaled) const;

    // The columns [first, d_in_proj) of a batch-1 pass's in_proj (first: 0, or d_inner where z's
    // product runs apart) with conv1d in the product's epilogue: xBC's channels go through the
    // layer's conv into ws_.xbc (and its conv state), z's and dt's raw values to zxbcdt as
    // in_proj_rows would leave them.
    void in_proj_conv(const cuda::DeviceLayer& w, int64_t layer, bool scaled, int64_t first,
                      cudaStream_t s);

    // Whether decode passes of m rows run out_proj as split-k (Gemm::run_split_k into out_splits_
    // f32 parts, summed by the add + RMSNorm that follows: one strided-batched call with
    // out_splits_ times the CTAs and no reduction kernel): out_splits_ >= 2, and every
    // layer's product goes to cuBLASLt (not our decode GEMM, which takes 2-16 rows by default)
    // and is supported, without a bias (added to h) or the decode gate (its RowScale and the
    // parts cannot share one add_rms_norm).
    bool splits_out_proj(int64_t m) const;

    // The fused SSD's gate epilogue for layer w (z from zxbcdt, sums of squares into ws_.ssq).
    cuda::SsdGate ssd_gate(const cuda::DeviceLayer& w) const;

    // The fused SSD's conv prologue for layer w (x's rows of conv1d; the old conv states).
    cuda::SsdConv ssd_conv(const cuda::DeviceLayer& w, int64_t layer) const;

    // The deferred gated-norm scale of h's rows (partial sums in ssq) in passes that use the
    // gate epilogue; none otherwise.
    RowScale h_scale(const float* ssq) const;

    // Columns [begin, end) of the in_proj product zxbcdt {T, d_in_proj} (rows begin..end of
    // W_in {d_in_proj, d_model}), plus the bias where the layer has one, on `stream`.
    void in_proj_rows(const cuda::DeviceLayer& w, int64_t begin, int64_t end, int64_t T,
                      cudaStream_t stream);
    void in_proj_rows(const cuda::DeviceLayer& w, int64_t begin, int64_t end, int64_t T,
                      cudaStream_t stream, cuda::Gemm& gemm);

    // zxbcdt's raw dt columns of layer w, row 0 first: the decode step's and the fused SSD's Δ.
    cuda::RawDt raw_dt(const cuda::DeviceLayer& w) const;

    // The SSD of a prefill pass: the fused single launch where it applies (f16/bf16, the shapes of
    // ssd_fused_supported), else the chunked five-step kernels (DUALITY_SSD_PATH=five-step forces
    // them), or the sequential scan. In passes that take the gate (pass_scaled_, always fused),
    // the fused SSD's gate epilogue for layer w writes ws_.gated and ws_.ssq instead of y.
    // With pass_conv_ it reads x's raw rows from zxbcdt and computes their conv itself.
    void prefill_ssd(const cuda::SsdArgs& ssd, const cuda::DeviceLayer& w, int64_t layer,
                     cudaStream_t s);

    // Final norm + LM head over the first `rows` tokens (decode: every row is a sequence). With
    // argmax_key (a batch-1 pass with the fused products only), the head also folds the logits'
    // argmax into it (GemvFused::argmax_key).
    void enqueue_head(int64_t rows, unsigned long long* argmax_key = nullptr);
    // The head of a decode pass of S rows and the greedy ids of its first n into ids (and
    // ids_also): argmax_rows over the logits, or where info_.argmax_in_head at batch 1 the head's
    // own argmax read by argmax_from_key.
    void enqueue_greedy_head(int64_t S, int64_t n, int32_t* ids, int32_t* ids_also);

    // kAll: final norm over every row into ws_.u; append_all_logits runs the head per block.
    void final_norm_all(int64_t T);

    void append_all_logits(int64_t T, std::vector<float>& out);

    // Copies the first n rows of ws_.logits to the host, padding columns dropped.
    void append_rows(int64_t n, std::vector<float>& out);

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
    // The batch-1 products' L2 prefetch budget (Gemm::set_prefetch_bytes) where z forks early at
    // batch 1: [xBC | dt]'s and z's products stream together and keep HBM busy, so a product's
    // prefetch mostly competes with the one in front. H200, ms per batch-1 step, two runs each
    // (docs/architecture.md, "A decode step on a timeline"): the 2.7b 1.895-1.902 with
    // kSmallMPrefetchBytes (8 MiB), 1.843-1.845 with 2 MiB, 1.852-1.854 with none; the 1.3b
    // 1.056-1.057, 1.005, 1.002-1.004. Where z forks late (the 370m: 0.565-0.566 with 4 or 8 MiB,
    // 0.577-0.579 with 2) the default stays. DUALITY_GEMM_PREFETCH_MB overrides both.
    static constexpr int64_t kEarlyForkPrefetchBytes = int64_t{2} << 20;
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
    // Pure prefill passes with the gate but conv1d apart run z's product beside conv1d
    // (DUALITY_PREFILL_Z_SIDE=0 turns it off; begin_layers).
    bool prefill_z_side_ = true;
    bool pass_conv_ = false;    // this pass's SSD computes x's conv (enqueue_layers)
    bool decode_gate_ = false;  // decode passes use ssm_decode's gate (layout_workspace)
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
    // The first layer's add_rms_norm reads the embedding rows of the pass's tokens itself: no
    // embedding launch (DUALITY_EMBED_IN_NORM=0 keeps the separate gather).
    bool embed_in_norm_ = true;
    bool device_loop_ = true;      // decode_greedy replays the decode graph back to back
    cuda::PinnedBuffer loop_ids_;  // decode_greedy's ids {n_steps, n}, written by the argmax
    // decode_greedy's steps after the first run in graphs of up to loop_steps_ whole steps
    // (layers, head and argmax, so that each argmax and the next step's embedding follow the
    // kernels in front through programmatic edges, not a launch after a graph), one graph per
    // (batch size, steps) (loop_graphs_), their ids {steps, n} in loop_dev_ids_ copied out after
    // each graph. DUALITY_LOOP_GRAPH_STEPS=K caps the steps (1: the bucket's decode graph and an
    // argmax launch a step). H100, batch-1 ms per step, two runs: 130m 0.258-0.260 at 1, 0.255
    // at 8, 16 and 32; 2.7b 2.292-2.300 at any. docs/architecture.md, "Greedy steps fed on the
    // device".
    static constexpr int kLoopGraphSteps = 16, kMaxLoopGraphSteps = 64;
    int loop_steps_ = kLoopGraphSteps;
    std::map<std::pair<int64_t, int>, cuda::Graph> loop_graphs_;
    DeviceBuffer loop_dev_ids_;
    // In those graphs a batch-1 step with the fused products may fold its argmax into the LM
    // head (GemvFused::argmax_key, one atomicMax a block into argmax_key_) and read it with
    // argmax_from_key, in place of argmax_rows's one-block scan of the logits after the head
    // (5.4 µs of a 2.7b step on an H100, its trace: docs/architecture.md, "A decode step on a
    // timeline"). On by default (info_.argmax_in_head; H100, batch-1 ms a step, two runs each,
    // scan -> key: 130m 0.254 -> 0.251, 2.7b 2.262 -> 2.259-2.260); DUALITY_ARGMAX_IN_HEAD=0: the
    // scan.
    DeviceBuffer argmax_key_;  // one u64, 0 between steps (argmax_from_key resets it)
};

}  // namespace duality::cuda_model_detail
