// The CUDA backend's ops: each one is the twin of a CPU op in ops/cpu/ops.h and has cases in the
// op-test registry (tests/ops/cuda/) that compare it with that CPU op.
//
// Conventions:
// - `act` is the activation and big-weight dtype: kF32, kF16 or kBF16 (the model's compute
//   dtype). Pointers typed `void*` hold `act` elements. Small per-channel parameters (norm
//   weights, conv weight and bias, dt_bias, A, D) are always f32 on the device, and so are the
//   residual stream, Δ and all reductions and accumulators.
// - `*_stride` counts elements between consecutive rows (tokens).
// - Every op is asynchronous on `stream`; launch errors abort (DUALITY_CUDA_LAUNCH_CHECK).
// - A batch is packed: the tokens of n_seq sequences concatenated with no padding, described by a
//   VarlenBatch. Per-sequence recurrent state lives in a slot pool: the state of sequence s is at
//   `state + slots[s] * slot_stride` (the caller offsets `state` to its layer).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>

#include "duality/types.h"
#include "ops/params.h"

namespace duality::cuda {

// Device arrays describing a packed batch. Decode is the case where every sequence has 1 token.
struct VarlenBatch {
    int64_t n_seq = 0, n_tokens = 0;
    const int32_t* cu_seqlens = nullptr;  // {n_seq + 1}: token offsets, cu_seqlens[0] = 0
    const int32_t* slots = nullptr;       // {n_seq}: state slot of each sequence
    // SSD chunking: chunks never cross sequences and each sequence's first chunk starts at its
    // first token, so chunk c covers tokens [chunk_start[c], chunk_start[c] + chunk_len[c]).
    int64_t n_chunk = 0;
    const int32_t* chunk_start = nullptr;  // {n_chunk}
    const int32_t* chunk_len = nullptr;    // {n_chunk}: 1..chunk_size
    const int32_t* chunk_seq = nullptr;    // {n_chunk}: the sequence a chunk belongs to
    const int32_t* cu_chunks = nullptr;    // {n_seq + 1}: chunk offsets of each sequence
};

// out {rows, dim} (act) = table[ids[r]]; table {vocab, dim} (act). ids on the device.
void embedding(const int32_t* ids, int64_t rows, const void* table, int64_t dim, void* out,
               DType act, cudaStream_t stream);

// h as f32 partial sums (a split-k product, Gemm::run_split_k): h = Σ_{q < n} p[q·stride + ..],
// each part {rows, dim} dense. n in 1..kMaxHParts.
struct HParts {
    const float* p = nullptr;  // {n, rows, dim} f32, parts `stride` elements apart
    int n = 0;
    int64_t stride = 0;
};
constexpr int kMaxHParts = 4;

// Fused residual add + RMSNorm (spec 4): residual += h (residual = h when `first`), then
// out = residual · rsqrt(mean(residual²) + eps) · w. h, out {rows, dim} act (rows h_stride /
// out dense); residual {rows, dim} f32; w {dim} f32. `scale`: h's rows scaled first (not with
// `first`). `parts`: h is their f32 sum instead (h unused; not with `first` or `scale`).
// `ids` (with `first` only, on the device): h is an embedding table {vocab, dim} and row r reads
// its row ids[r] (in [0, vocab), not checked), so the embedding gather needs no launch of its own.
void add_rms_norm(const void* h, float* residual, const float* w, float eps, void* out,
                  int64_t rows, int64_t dim, bool first, DType act, cudaStream_t stream,
                  const RowScale& scale = {}, const HParts& parts = {},
                  const int32_t* ids = nullptr);

// y {rows, n} (act, rows ld apart) += bias {n} (f32).
void add_bias(void* y, int64_t ld, const float* bias, int64_t rows, int64_t n, DType act,
              cudaStream_t stream);

// Gated RMSNorm per group (mamba_ssm semantics): v = y ⊙ silu(z); each contiguous group of
// group_size channels: v · rsqrt(mean(v²) + eps) ⊙ w. y, out {rows, dim} act dense; z rows
// z_stride apart (act); w {dim} f32.
void gated_rms_norm(const void* y, const void* z, int64_t z_stride, const float* w, float eps,
                    void* out, int64_t rows, int64_t dim, int64_t group_size, DType act,
                    cudaStream_t stream);

// Causal depthwise conv1d + SiLU over a packed batch, each sequence continuing from its conv
// state and leaving its last width-1 raw rows there (oldest first). Serves prefill and decode.
struct Conv1dArgs {
    VarlenBatch batch;
    int64_t channels = 0, width = 0;
    const void* x = nullptr;  // {n_tokens, channels} act, rows x_stride apart: raw xBC
    int64_t x_stride = 0;
    const float* weight = nullptr;  // {channels, width}; weight[:, width-1] × newest row
    const float* bias = nullptr;    // {channels} or nullptr
    float* state = nullptr;         // per slot {width-1, channels} f32, slot_stride apart
    int64_t state_slot_stride = 0;
    void* out = nullptr;  // {n_tokens, channels} act, dense
    // Prefill / mixed batches only (more than one token in some sequence): the outputs of
    // channels [out_begin, out_end) only (out_end 0: all; both multiples of 8), and which of the
    // two launches run: `outputs` (reads the old states) and `state_update` (writes the new ones;
    // either alone takes the prefill kernels, whatever the batch's lengths). A
    // caller that reads the old states itself in between (ssd_fused's SsdConv) runs the outputs
    // first and the state update after it.
    int64_t out_begin = 0, out_end = 0;
    bool outputs = true, state_update = true;
};
void conv1d(const Conv1dArgs& a, DType act, cudaStream_t stream);

// Δ {n_tokens, n_head} f32 = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max), softplus with
// the threshold-20 form. dt_raw (act) rows raw_stride apart.
void dt_softplus(const void* dt_raw, int64_t raw_stride, const float* dt_bias, float dt_min,
                 float dt_max, float* dt, int64_t rows, int64_t n_head, DType act,
                 cudaStream_t stream);

// Shapes and pointers shared by the SSD prefill and the decode step.
struct SsdArgs {
    VarlenBatch batch;
    int64_t n_head = 0, head_dim = 0, d_state = 0, n_group = 1, chunk_size = 256;
    const void* x = nullptr;  // {n_tokens, n_head, head_dim} act, rows x_stride apart
    int64_t x_stride = 0;
    const void* B = nullptr;  // {n_tokens, n_group, d_state} act, rows bc_stride apart
    const void* C = nullptr;  // {n_tokens, n_group, d_state} act, rows bc_stride apart
    int64_t bc_stride = 0;
    const float* A = nullptr;  // {n_head}: -exp(A_log)
    const float* D = nullptr;  // {n_head} or nullptr
    void* state = nullptr;     // per slot {n_head, head_dim, d_state} in state_dtype: in and out
    int64_t state_slot_stride = 0;
    DType state_dtype = DType::kF32;
    void* y = nullptr;  // {n_tokens, n_head, head_dim} act, dense
    // ssd_fused only: the states passed between chunks through the workspace in f16 instead of
    // f32 (half the bytes on the chain; docs/numerics.md has the accuracy). The final state is
    // computed in f32 either way.
    bool passed_f16 = false;
};

// Chunked SSD prefill (spec 6.2), the five steps: chunk cumsum, C·Bᵀ, chunk states, state
// passing, chunk scan (+ D·x). `dt` {n_tokens, n_head} f32 is Δ after softplus and clamp.
// Intermediates go to `workspace`, at least ssd_chunked_workspace_bytes() large.
size_t ssd_chunked_workspace_bytes(const SsdArgs& a);
void ssd_chunked(const SsdArgs& a, const float* dt, void* workspace, DType act,
                 cudaStream_t stream);

// The same prefill fused into ONE kernel launch (ssd_fused.cu): cumsum, chunk states, the
// ordered state passing across chunks (device-side flags), C·Bᵀ, intra- and inter-chunk outputs
// and D·x. f16/bf16 only, on the shapes of ssd_fused_supported() (head_dim 32/64/80/128,
// d_state 64/128/256, chunk_size <= 256, aligned x/B/C, enough shared memory: d_state 256 needs
// chunks of at most 128 tokens, 64 with head_dim 128); otherwise use
// ssd_chunked. `workspace`: ssd_fused_workspace_bytes() (the states passed between chunks and
// each chunk's C·Bᵀ tiles; may be shared with other scratch). `sync`: ssd_fused_sync_bytes(),
// zeroed once when allocated and then owned by ssd_fused (counters and flags that every launch
// leaves ready for the next one); calls using one sync buffer must not run concurrently.
bool ssd_fused_supported(const SsdArgs& a, DType act);
// The chunk size ssd_fused runs fastest with for a's shape: a.chunk_size, or 128 where a 256-token
// chunk would keep one block per SM and 128-token ones fit two, or for d_state 256 the largest
// halving of a.chunk_size whose shared memory fits (the same SSD, rounded differently; the caller
// builds its chunk table with it).
int64_t ssd_fused_chunk(const SsdArgs& a, DType act);
size_t ssd_fused_workspace_bytes(const SsdArgs& a);
size_t ssd_fused_sync_bytes(const SsdArgs& a);

// ssd_fused's optional epilogue: the gated RMSNorm of a model whose norm spans all of d_inner
// (n_group 1), with the normalization left to the next add_rms_norm (RowScale). In place of y it
// writes, for token i and channel c = h·head_dim + p, from the f32 SSD output y_f32 (with D·x):
//   v = y_f32[i, c] · silu(z[i, c]);  y[i, c] = v · w[c] (act);  ssq[i, h] = Σ_p v² (f32)
// so that the norm's output is y[i, :] · rsqrt(Σ_h ssq[i, h] / d_inner + eps). It saves the
// separate gated norm's pass over y and z (docs/architecture.md, "Prefill time").
struct SsdGate {
    const void* z = nullptr;  // {n_tokens, n_head · head_dim} act, rows z_stride apart
    int64_t z_stride = 0;
    const float* w = nullptr;  // {n_head · head_dim} f32: the gated norm's weight
    // f32, written: ssd_fused {n_tokens, n_head}; ssm_decode {n_seq, n_head, head_dim / 16}
    float* ssq = nullptr;
};
// Whether ssd_fused takes this gate: head_dim 64 and d_state 128 (the state-spaces shapes; the
// only ones instantiated), z 16-byte aligned with a stride of a multiple of 8, w 8-byte aligned.
bool ssd_gate_supported(const SsdArgs& a, const SsdGate& gate);
// ssd_fused's conv prologue (with a gate only: its instantiation): a.x holds RAW x rows (the
// in_proj output's x columns, before conv1d), and each head block computes its chunk's
// x = silu(conv1d(x_raw)) itself (spec 5.3) while B and C load, so the conv1d launch covers only
// B's and C's channels (Conv1dArgs::out_begin) and x's conv output never goes through memory. Rows
// before a sequence's first token come from its conv state, which the caller updates only after
// the SSD (Conv1dArgs::outputs = false). Width 4 only; x's channels are the first n_head·head_dim
// of the conv's rows.
struct SsdConv {
    const float* weight = nullptr;  // {n_head · head_dim (at least), 4}: taps, oldest first
    const float* bias = nullptr;    // {n_head · head_dim} or null
    const float* state = nullptr;   // per slot {3, state_ld} f32 (x's channels first)
    int64_t state_ld = 0, state_slot_stride = 0;
    int64_t width = 4;
};
// Whether ssd_fused takes this conv with a gate: the gate's shapes, chunk_size at most 128 (the
// raw rows borrow prev's shared memory), width 4, the weight 16-byte aligned, the state's ld and
// slot stride multiples of 4 with the state 16-byte aligned.
bool ssd_conv_supported(const SsdArgs& a, const SsdConv& conv);
// Δ computed where it is read, from in_proj's raw dt columns: clamp(softplus(dt_raw + dt_bias),
// dt_min, dt_max) as dt_softplus (the decode step; ssd_fused with a gate).
struct RawDt {
    const void* dt_raw = nullptr;  // {rows, n_head} act, rows raw_stride apart
    int64_t raw_stride = 0;
    const float* dt_bias = nullptr;  // {n_head}
    float dt_min = 0.0f, dt_max = 0.0f;
};
// With `raw_dt` (a gate required) the head blocks compute Δ from the raw dt columns themselves
// and `dt` may be null: the separate dt_softplus pass is saved.
void ssd_fused(const SsdArgs& a, const float* dt, void* workspace, void* sync, DType act,
               cudaStream_t stream, const SsdGate* gate = nullptr, const SsdConv* conv = nullptr,
               const RawDt* raw_dt = nullptr);

// The same result by a sequential scan over each sequence's tokens (spec 6.1), the state kept
// in registers: the GPU oracle for ssd_chunked and the path for shapes it does not cover.
// d_state ≤ 256, head_dim ≤ 128.
void ssd_scan(const SsdArgs& a, const float* dt, DType act, cudaStream_t stream);

// Row-wise argmax of logits {rows, ld} f32 over ids [0, vocab) (lowest id on ties): greedy
// sampling without the sampling workspace. The ids {rows} go to ids and, where ids_also is not
// null, to ids_also too (device memory, or mapped pinned host memory).
void argmax_rows(const float* logits, int64_t ld, int64_t rows, int64_t vocab, int32_t* ids,
                 cudaStream_t stream, int32_t* ids_also = nullptr);

// The argmax of one row whose product already folded it into `key` (gemv_fused's
// GemvFused::argmax_key: the largest argmax_key_of(value, id) over the row's ids): ids[0] (and
// ids_also[0] where given) = that id, 0 where no value counted (all -inf or NaN, as argmax_rows);
// then *key = 0, ready for the next product. One block of one warp.
void argmax_from_key(unsigned long long* key, int32_t* ids, int32_t* ids_also, cudaStream_t stream);

// Decode step for a batch of single-token sequences (batch.n_tokens == batch.n_seq): Δ from the
// raw dt column (RawDt), S = exp(AΔ)·S + Δ·x ⊗ B, y = S·C + D·x, state in place.
// With a gate, the step's epilogue is the gated norm's first half, as ssd_fused's SsdGate: in
// place of y it writes v·w with v = y_f32 · silu(z) (z row s for sequence s), and per 16
// channels of a head the partial Σ v² into gate->ssq {n_seq, n_head, head_dim / 16} f32 (sums
// in channel order, no atomics): the norm's output is y · rsqrt(Σ ssq[s, :] / d_inner + eps)
// (RowScale with n_part = n_head · ssm_decode_gate_parts(head_dim)).
// bulk_parts: where the bulk kernel runs (Hopper, f32 state, 48+ sequences), the blocks each
// head's rows are split over (1, 2 or 4; tests and measurements); anything else:
// DUALITY_SSM_DECODE_BULK_PARTS, or 4. A split that would leave a block part of a warp's rows (or
// of a 16-row gate sum) is not taken.
void ssm_decode(const SsdArgs& a, const RawDt& dt, DType act, cudaStream_t stream,
                const SsdGate* gate = nullptr, int bulk_parts = 0);
// The blocks per head the bulk kernel runs ssm_decode(a, ..., act, ..., gate, bulk_parts) with, or
// 0 where another kernel runs it (tests).
int ssm_decode_bulk_parts(const SsdArgs& a, DType act, bool gate, int bulk_parts);
// Whether ssm_decode takes this gate: bf16 activations (as for ssd_fused's gate, the
// unnormalized v·w could leave f16's range), head_dim a multiple of 16 (at most 128), d_state 64,
// 128 or 256 with the vector kernels' alignment; any state dtype.
bool ssm_decode_gate_supported(const SsdArgs& a, const SsdGate& gate, DType act);
// Partial sums per head the decode gate writes: head_dim / 16.
int64_t ssm_decode_gate_parts(int64_t head_dim);

// One layer's weights on the device (the model's DeviceWeights::layers; decode_stack's layer
// table).
struct DeviceLayer {
    const float* norm = nullptr;           // {d_model}
    const void* in_proj = nullptr;         // {d_in_proj, d_model} act
    const float* in_proj_bias = nullptr;   // {d_in_proj} or null
    const float* conv_weight = nullptr;    // {conv_dim, d_conv}
    const float* conv_bias = nullptr;      // {conv_dim} or null
    const float* dt_bias = nullptr;        // {n_head}
    const float* A = nullptr;              // {n_head}: -exp(A_log)
    const float* D = nullptr;              // {n_head} or null
    const float* gate_norm = nullptr;      // {d_inner}
    const void* out_proj = nullptr;        // {d_model, d_inner} act
    const float* out_proj_bias = nullptr;  // {d_model} or null
};

// A whole batch-1 decode step in one persistent launch (decode_stack.cu): every layer (norm,
// in_proj, conv1d, the SSM step, gated norm, out_proj, residual) and the final norm + LM head,
// for the one token *token of the sequence in slot *slot (both read on the device, so a captured
// graph serves every step). Conv and SSM states are updated in place; logits {vocab_rows} f32.
struct DecodeStackArgs {
    int64_t n_layer = 0, d_model = 0, d_inner = 0, n_head = 0, head_dim = 0, d_state = 0;
    int64_t n_group = 1, d_conv = 4, vocab_rows = 0;  // vocab_rows: the head's rows (padded)
    float eps = 1e-5f, dt_min = 0.0f, dt_max = 0.0f;
    const DeviceLayer* layers = nullptr;  // {n_layer}, in device memory
    const void* embedding = nullptr;      // {vocab_rows, d_model} act
    const void* head = nullptr;           // {vocab_rows, d_model} act
    const float* norm_f = nullptr;        // {d_model}
    const int32_t* token = nullptr;       // device: the token
    const int32_t* slot = nullptr;        // device: its state slot
    float* conv_state = nullptr;          // per slot {n_layer, d_conv - 1, conv_dim} f32
    int64_t conv_slot_stride = 0;
    float* ssm_state = nullptr;  // per slot {n_layer, n_head, head_dim, d_state} f32
    int64_t ssm_slot_stride = 0;
    // Scratch (device): zxbcdt {d_in_proj} act, residual {d_model} f32, v {d_inner} f32,
    // ssq {n_head · head_dim / 16} f32; sync: decode_stack_sync_bytes(), zeroed once, then owned
    // by decode_stack (launches sharing it must not run concurrently).
    void* zxbcdt = nullptr;
    float* residual = nullptr;
    float* v = nullptr;
    float* ssq = nullptr;
    float* logits = nullptr;  // {vocab_rows} f32, written
    uint32_t* sync = nullptr;
    // Optional (timing): globaltimer stamps {n_layer + 1, 8, grid} u64 of thread 0 of every block
    // at its stage boundaries (decode_stack.cu); grid = decode_stack_grid(blocks).
    uint64_t* profile = nullptr;
    int l2_ahead = -1;  // weight pieces asked of L2 ahead of the ring (-1: the kernel's default)
    // Blocks of the grid: 0 (the default) one per SM; fewer (at most the SM count) share each
    // grid barrier among fewer blocks (tests and the timing test's sweep).
    int blocks = 0;
};
// Whether this device runs decode_stack at all (sm_90 code, a block of its shared memory fits an
// SM).
bool decode_stack_available();
// Whether decode_stack runs this model: available, f16/bf16 activations, f32 state, head_dim a
// multiple of 16, d_state 64/128/256, d_conv 2-4, d_model and d_inner multiples of 8 and at most
// 10240, 2·n_group·d_state <= 5120, n_group <= 64; 16-byte aligned matrices, norm weights,
// residual, v and SSM state, the state's slot stride a multiple of 4 (`layers`: the host copy of
// a.layers, every other pointer as it will be launched).
bool decode_stack_supported(const DecodeStackArgs& a, std::span<const DeviceLayer> layers,
                            DType act, DType state_dtype);
size_t decode_stack_sync_bytes();
// Blocks per launch: the SM count, or `blocks` when that is between 1 and the SM count.
int decode_stack_grid(int blocks = 0);
void decode_stack(const DecodeStackArgs& a, DType act, cudaStream_t stream);

// Per-row sampling parameters on the device (see SamplingParams; penalties stay on the host).
struct DeviceSampling {
    float temperature = 1.0f;  // <= 0: greedy
    int32_t top_k = 0;         // 0: off
    float top_p = 1.0f;        // 1: off
    float min_p = 0.0f;        // 0: off
    uint64_t seed = 0;
    uint64_t step = 0;  // the draw's index within the sequence: same seed+step, same draw
};
// ids[r] = a token drawn from row r of logits {rows, ld} f32, over ids [0, vocab) only.
// workspace: at least sample_workspace_bytes(rows, vocab).
size_t sample_workspace_bytes(int64_t rows, int64_t vocab);
void sample(const float* logits, int64_t ld, int64_t rows, int64_t vocab,
            const DeviceSampling* params, int32_t* ids, void* workspace, cudaStream_t stream);

// Fills n elements of `dst` (dtype dt) with values uniform in [lo, hi) from a counter-based
// hash of (seed, index): random weights for benchmarks, identical on every GPU.
void fill_uniform(void* dst, int64_t n, DType dt, uint64_t seed, float lo, float hi,
                  cudaStream_t stream);

// dst (dt) = src (f32), n elements: weight conversion at load.
void convert_from_f32(const float* src, void* dst, int64_t n, DType dt, cudaStream_t stream);

}  // namespace duality::cuda
