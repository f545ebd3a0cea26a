// A loaded Mamba-2 language model and the per-sequence recurrent state it advances.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "duality/config.h"
#include "duality/sampling.h"
#include "duality/status.h"
#include "duality/types.h"

namespace duality {

// The recurrent state of one sequence: everything the model needs to continue it.
struct SequenceState {
    int64_t n_layer = 0, d_conv = 0, conv_dim = 0, n_head = 0, head_dim = 0, d_state = 0;
    // {n_layer, d_conv - 1, conv_dim}: the last pre-conv xBC rows, oldest first
    std::vector<float> conv;
    std::vector<float> ssm;  // {n_layer, n_head, head_dim, d_state}
    int64_t n_tokens = 0;    // tokens consumed so far

    float* conv_layer(int64_t layer) { return conv.data() + layer * (d_conv - 1) * conv_dim; }
    float* ssm_layer(int64_t layer) { return ssm.data() + layer * n_head * head_dim * d_state; }
    const float* conv_layer(int64_t layer) const {
        return conv.data() + layer * (d_conv - 1) * conv_dim;
    }
    const float* ssm_layer(int64_t layer) const {
        return ssm.data() + layer * n_head * head_dim * d_state;
    }
};

// Which rows of logits a forward call returns.
enum class LogitsMode { kNone, kLast, kAll };

struct LoadOptions {
    int n_threads = 0;  // CPU threads; 0: all hardware threads
    Device device = Device::kCpu;
    int device_index = 0;             // which GPU
    DType dtype = DType::kBF16;       // CUDA weights and activations: kF32, kF16 or kBF16
                                      // (the CPU backend is always f32)
    DType state_dtype = DType::kF32;  // CUDA SSM-state storage: kF32, kF16 or kBF16
    int n_slots = 8;                  // sequences whose state lives in the model (see step())
    int64_t max_tokens = 8192;        // tokens per device forward pass; longer steps run in
                                      // pieces (CUDA workspace is sized by this)
    bool cuda_graphs = true;          // capture decode steps in CUDA graphs per batch bucket
    int64_t sample_vocab = 0;         // step_sample draws only ids below this (the ids the
                                      // tokenizer knows); 0: the whole vocabulary
};

// One sequence's part of a batched step: `tokens` continue the sequence in state slot `slot`.
struct SeqInput {
    int slot = 0;
    std::span<const int32_t> tokens;
};

// Where the model runs and what it holds there.
struct DeviceInfo {
    std::string name;             // "CPU", "NVIDIA H100 80GB HBM3", ...
    int64_t memory_total = 0;     // bytes on the device (0 for the CPU)
    int64_t weight_bytes = 0;     // bytes of weights as stored for compute
    int64_t state_bytes = 0;      // bytes of all state slots
    int64_t workspace_bytes = 0;  // bytes of scratch sized by max_tokens
    int compute_capability = 0;   // CUDA: major · 10 + minor (90 for Hopper); 0 on the CPU
    bool decode_stack = false;    // batch-1 decode steps run as one persistent kernel (CUDA)
    // Where decode passes fork in_proj's z product (CUDA, DUALITY_Z_FORK): "early" (beside the
    // [xBC | dt] product, on a GEMM of its own), "early at batch 1", "late" (after it) or "none"
    // (one product); empty on the CPU.
    std::string z_fork;
    // Batch-1 decode passes fold the add + RMSNorm and conv1d into the products' epilogues (CUDA,
    // DUALITY_GEMV_EPILOGUES).
    bool gemv_epilogues = false;
    // Decode steps store the gated norm's v·w and leave its scale to the next op (CUDA, bf16,
    // DUALITY_DECODE_GATE=1).
    bool decode_gate = false;
    // Batch-1 decode passes run a layer as three kernels: in_proj whole with conv1d in its
    // epilogue, the step with the gate, out_proj with the residual and the next norm (CUDA,
    // DUALITY_GEMV_EPILOGUES=auto, models whose z product forks late).
    bool batch1_whole = false;
    // decode_greedy's batch-1 steps in its graphs of several steps fold the argmax into the LM
    // head's product instead of scanning the logits after it (CUDA, bf16, the GEMV epilogues;
    // by default, DUALITY_ARGMAX_IN_HEAD=0 for the scan).
    bool argmax_in_head = false;
    // In that form, the products fetch their rows of w into shared memory by bulk copies (CUDA,
    // Hopper, small models; DUALITY_GEMV_BULK).
    bool gemv_bulk = false;
    // Of each batch-1 product's weights, the bytes its blocks ask L2 for before the kernel in
    // front has finished (CUDA, PDL; -1: all; DUALITY_GEMM_PREFETCH_MB); 0 on the CPU.
    int64_t gemv_prefetch_bytes = 0;
    // Decode passes of out_proj_split_rows sequences or more run out_proj as split-k in
    // out_proj_split f32 parts, summed by the next norm (CUDA, DUALITY_OUT_PROJ_SPLIT; 1: never).
    int out_proj_split = 1;
    int64_t out_proj_split_rows = 0;
    // Pure prefill passes compute x's conv1d inside the fused SSD (CUDA, bf16, one norm group,
    // d_inner <= 4096 unless DUALITY_SSD_CONV=1; DUALITY_SSD_CONV=0 never).
    bool ssd_conv = false;
    // ... and Δ from in_proj's raw dt columns (the same passes, unless DUALITY_SSD_DT=0).
    bool ssd_dt = false;
    // Pure prefill passes with the fused SSD's gate but conv1d separate compute in_proj's z
    // columns on a side stream, beside conv1d (CUDA, unless DUALITY_PREFILL_Z_SIDE=0).
    bool prefill_z_side = false;
    // Prefill passes run the last layer's out_proj on the rows whose logits are wanted only
    // (CUDA; DUALITY_TRIM_LAST=0: on every row).
    bool trim_last = false;
    // The prefill SSD (CUDA): "fused" (one launch), "five-step" or "scan"; empty on the CPU. And
    // the chunk size of its chunk table, which the fused SSD may take smaller than the config's.
    std::string ssd_prefill;
    int64_t ssd_chunk = 0;
    bool ssd_passed_f16 = false;  // the fused SSD passes f16 states between chunks
    // decode_greedy() feeds each step's argmax to the next step on the device, without a host
    // round trip between steps (CUDA by default; DUALITY_DEVICE_LOOP=0, and the CPU: one
    // step_sample() per step).
    bool device_loop = false;
};

// The number of CUDA devices this build and machine can use (0 without CUDA or a GPU).
int cuda_device_count();

class Model {
  public:
    virtual ~Model() = default;

    // Loads a Hugging Face or state-spaces checkpoint folder. Every malformed or inconsistent
    // input gives a Status naming the file and the field.
    static Result<std::unique_ptr<Model>> load(const std::filesystem::path& dir,
                                               const LoadOptions& options = {});

    // A model of `config`'s shape with seeded random weights (benchmarks): weights uniform in
    // ranges that keep activations finite; A in -[1, 16], Δ about 1e-3..1e-1.
    static Result<std::unique_ptr<Model>> random(const ModelConfig& config,
                                                 const LoadOptions& options, uint64_t seed);

    virtual const ModelConfig& config() const = 0;

    // A zero state: the start of a new sequence (by default of config()'s shape).
    virtual SequenceState new_state() const;

    // Runs `tokens` through the model from `state`, which it advances. Multi-token calls use the
    // chunked SSD; single-token calls use the recurrent decode step. The returned logits are
    // row-major {rows, vocab_size} with rows = 0, 1 or tokens.size() (see LogitsMode); padded
    // vocabulary rows are never returned.
    virtual Result<std::vector<float>> forward(std::span<const int32_t> tokens,
                                               SequenceState& state, LogitsMode mode) = 0;

    // ---- Batched interface: states live in the model (on its device) in n_slots() slots. ----
    virtual DeviceInfo device_info() const = 0;
    virtual int n_slots() const = 0;
    // Zeroes a slot: the start of a new sequence.
    virtual Status reset_slot(int slot) = 0;
    virtual Status read_slot(int slot, SequenceState& out) const = 0;
    virtual Status write_slot(int slot, const SequenceState& state) = 0;
    virtual Status copy_slot(int from, int to) = 0;

    // Advances every sequence of `batch` (distinct slots, any mix of lengths >= 1; prefill runs
    // packed without padding, single tokens as a batched decode step) and returns the logits of
    // each sequence's last token, {batch.size(), vocab_size}.
    virtual Result<std::vector<float>> step(std::span<const SeqInput> batch) = 0;

    // Runs `tokens` (at least one) through the sequence in `slot` and returns the logits of every
    // one of them, {tokens.size(), vocab_size} (prompt log-probabilities). The default reads the
    // slot's state, runs forward() with LogitsMode::kAll and writes the state back.
    virtual Result<std::vector<float>> step_all_logits(int slot, std::span<const int32_t> tokens);

    // Like step(), but draws each sequence's next token on the device with params[i] (the
    // penalties and logit biases are not applied here): draw number draws[i] of the stream of
    // params[i].seed, so the same seed, draw number and logits give the same token.
    virtual Result<std::vector<int32_t>> step_sample(std::span<const SeqInput> batch,
                                                     std::span<const SamplingParams> params,
                                                     std::span<const uint64_t> draws) = 0;

    // Greedy decoding of the one-token sequences of `batch` for n_steps steps, each step's input
    // the previous step's argmax (the first step's: batch's tokens). Returns the ids {n_steps,
    // batch.size()} row-major; every slot advances n_steps tokens (the last ids are not fed).
    // The same ids as n_steps greedy step_sample() calls, which the default makes; the CUDA
    // model can instead replay its decode graph back to back, with the argmax written straight
    // into the next step's input (DeviceInfo::device_loop).
    virtual Result<std::vector<int32_t>> decode_greedy(std::span<const SeqInput> batch,
                                                       int n_steps);

    // step_sample() in two halves, so that the caller can work while the device computes (the
    // engine tells clients of the previous step's tokens meanwhile): start_step_sample() queues
    // the step (a step longer than the model's max_tokens runs its earlier passes to the end
    // first), finish_step_sample() waits for it and returns its ids. In between, the caller may
    // use the slot operations (they run after the step) but start no other step. The defaults
    // compute the whole step in start_step_sample() (overlaps_steps() false); the CUDA model
    // overrides them.
    virtual bool overlaps_steps() const { return false; }
    virtual Status start_step_sample(std::span<const SeqInput> batch,
                                     std::span<const SamplingParams> params,
                                     std::span<const uint64_t> draws);
    virtual Result<std::vector<int32_t>> finish_step_sample();

  protected:
    // decode_greedy's own arguments: n_steps >= 0 and one token per sequence (the slots and ids
    // are the step's to check).
    static Status check_greedy_steps(std::span<const SeqInput> batch, int n_steps);

  private:
    std::optional<Result<std::vector<int32_t>>> started_;  // the defaults' result, in between
};

}  // namespace duality
