// Roofline figures of a Mamba-2 model (spec section 10): the bytes one decode step must move, the
// FLOPs a prefill token costs, and the peak bandwidth and FLOP/s of known GPUs. What `duality
// bench` divides its measurements by.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "duality/config.h"
#include "duality/types.h"

namespace duality::roofline {

// Every parameter of the model: in_proj, conv weight (+ bias), dt_bias, A_log, D, gated-norm and
// block-norm weights, out_proj (+ biases), the embedding, an untied LM head, the final norm
// (spec section 1: 2,702,599,680 for mamba2-2.7b).
int64_t param_count(const ModelConfig& c);

// Bytes of HBM traffic per decode step (spec 10.3).
struct DecodeBytes {
    double weights = 0;     // every weight read once (the LM head reads V·D; the embedding
                            // gather of an untied model is negligible and left out)
    double ssm_state = 0;   // per sequence: SSM state read + written
    double conv_state = 0;  // per sequence: conv state ((d_conv-1)·conv_dim values) read + written
    double state() const { return ssm_state + conv_state; }
    double step(int64_t batch) const { return weights + static_cast<double>(batch) * state(); }
};
// All weights at weight_dtype's size, the SSM state at state_dtype's, the conv state at
// conv_state_bytes per value (4: our engine keeps it in f32). The spec's 10.3 table counts
// (d_conv-1)·conv_dim·4 bytes of conv state per layer in all, i.e. conv_state_bytes = 2.
// Bytes one sequence's state takes in a slot: the SSM state at state_dtype's size and the conv
// state in f32 (as both backends keep it; read_slot returns both in f32).
int64_t state_slot_bytes(const ModelConfig& c, DType state_dtype);

DecodeBytes decode_bytes(const ModelConfig& c, DType weight_dtype, DType state_dtype,
                         double conv_state_bytes = 4);

// The bandwidth bound of batched decode: batch / (bytes per step / bandwidth), tokens/s.
double decode_bound_tokens_per_s(const DecodeBytes& b, int64_t batch, double bytes_per_s);

// Useful FLOPs per prefill token per layer (spec 10.1), for sequences of seq_len tokens (chunks
// of min(chunk_size, seq_len) tokens). The O(10·E) elementwise work (gate, norms, D skip) is left
// out, as in the spec's totals.
struct PrefillFlops {
    double in_proj = 0, conv = 0, ssd = 0, out_proj = 0;
    double layer() const { return in_proj + conv + ssd + out_proj; }
};
PrefillFlops prefill_flops_per_token(const ModelConfig& c, int64_t seq_len);
// One row of logits (the LM head for a sequence's last token): 2·D·V.
double logits_row_flops(const ModelConfig& c);
// A prefill of `batch` sequences of `seq_len` tokens with one logit row each.
double prefill_flops(const ModelConfig& c, int64_t batch, int64_t seq_len);

// Peak HBM bandwidth and dense bf16 tensor FLOP/s of a GPU.
struct DevicePeak {
    std::string name;
    double bytes_per_s = 0;
    double flops_per_s = 0;
};
// The table, keyed by the CUDA device name: H100 SXM / PCIe / NVL, H200 (and NVL), A100 40/80 GB,
// L40S. nullopt for anything else (GH200 included: its memory varies by model).
std::optional<DevicePeak> known_gpu_peak(std::string_view device_name);

}  // namespace duality::roofline
