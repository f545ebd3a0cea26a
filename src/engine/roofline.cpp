#include "engine/roofline.h"

#include <algorithm>

namespace duality::roofline {

int64_t param_count(const ModelConfig& c) {
    const int64_t D = c.d_model, E = c.d_inner, H = c.n_head, n_in = c.d_in_proj();
    const int64_t conv_dim = c.conv_dim(), V = c.vocab_padded;
    int64_t layer = D * n_in + conv_dim * c.d_conv + 3 * H + E + E * D + D;
    if (c.conv_bias) layer += conv_dim;
    if (c.proj_bias) layer += n_in + D;
    const int64_t embedding = V * D;
    return c.n_layer * layer + embedding + (c.tie_embeddings ? 0 : embedding) + D;
}

DecodeBytes decode_bytes(const ModelConfig& c, DType weight_dtype, DType state_dtype,
                         double conv_state_bytes) {
    DecodeBytes b;
    int64_t read = param_count(c);
    if (!c.tie_embeddings) read -= c.vocab_padded * c.d_model;  // the gather, not the table
    b.weights = static_cast<double>(read) * static_cast<double>(dtype_size(weight_dtype));
    const double layers = static_cast<double>(c.n_layer);
    b.ssm_state = 2.0 * layers * static_cast<double>(c.n_head * c.head_dim * c.d_state) *
                  static_cast<double>(dtype_size(state_dtype));
    b.conv_state =
        2.0 * layers * static_cast<double>((c.d_conv - 1) * c.conv_dim()) * conv_state_bytes;
    return b;
}

int64_t state_slot_bytes(const ModelConfig& c, DType state_dtype) {
    return c.n_layer *
           ((c.d_conv - 1) * c.conv_dim() * 4 +
            c.n_head * c.head_dim * c.d_state * static_cast<int64_t>(dtype_size(state_dtype)));
}

double decode_bound_tokens_per_s(const DecodeBytes& b, int64_t batch, double bytes_per_s) {
    return static_cast<double>(batch) * bytes_per_s / b.step(batch);
}

PrefillFlops prefill_flops_per_token(const ModelConfig& c, int64_t seq_len) {
    const double D = static_cast<double>(c.d_model), E = static_cast<double>(c.d_inner);
    const double G = static_cast<double>(c.n_group), N = static_cast<double>(c.d_state);
    const double Q = static_cast<double>(std::max<int64_t>(1, std::min(c.chunk_size, seq_len)));
    PrefillFlops f;
    f.in_proj = 2.0 * D * static_cast<double>(c.d_in_proj());
    f.conv = 2.0 * static_cast<double>(c.d_conv) * static_cast<double>(c.conv_dim());
    // C·Bᵀ (the full Q×Q square), chunk states, inter-chunk C·prev, causal intra-chunk, passing.
    f.ssd = 2.0 * G * Q * N + 4.0 * E * N + Q * E + 2.0 * E * N / Q;
    f.out_proj = 2.0 * E * D;
    return f;
}

double logits_row_flops(const ModelConfig& c) {
    return 2.0 * static_cast<double>(c.d_model) * static_cast<double>(c.vocab_padded);
}

double prefill_flops(const ModelConfig& c, int64_t batch, int64_t seq_len) {
    const double b = static_cast<double>(batch);
    return b * static_cast<double>(seq_len) * static_cast<double>(c.n_layer) *
               prefill_flops_per_token(c, seq_len).layer() +
           b * logits_row_flops(c);
}

std::optional<DevicePeak> known_gpu_peak(std::string_view name) {
    auto has = [&](std::string_view s) { return name.find(s) != std::string_view::npos; };
    auto peak = [&](double bytes_per_s, double flops_per_s) {
        return DevicePeak{std::string(name), bytes_per_s, flops_per_s};
    };
    if (has("GH200")) return std::nullopt;
    if (has("H200")) return has("NVL") ? peak(4.8e12, 835e12) : peak(4.8e12, 989e12);
    if (has("H100")) {
        if (has("PCIe")) return peak(2.0e12, 756e12);
        if (has("NVL")) return peak(3.9e12, 835e12);
        return peak(3.35e12, 989e12);  // SXM ("NVIDIA H100 80GB HBM3")
    }
    if (has("A100")) {
        if (has("80GB")) return has("PCIe") ? peak(1.935e12, 312e12) : peak(2.039e12, 312e12);
        return peak(1.555e12, 312e12);
    }
    if (has("L40S")) return peak(0.864e12, 362e12);
    return std::nullopt;
}

}  // namespace duality::roofline
