#include "model/cuda/device_weights.h"

#include <cmath>
#include <functional>

#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace {

// One tensor of the model in the order random_weights() draws them (tensor i uses seed + i).
struct TensorSpec {
    int64_t numel;
    bool big;           // stored in act; otherwise f32
    RandomRange range;  // for random weights
    const float* host;  // for uploads (f32), or null
    const void** dst_act = nullptr;
    const float** dst_f32 = nullptr;
    bool negate_exp = false;  // A = -exp(A_log) (random weights only: hosts hold A already)
};

std::vector<TensorSpec> tensor_list(const ModelConfig& c, const ModelWeights* w, DeviceWeights& d) {
    const RandomInit init = RandomInit::for_config(c);
    const int64_t D = c.d_model, E = c.d_inner, H = c.n_head, V = c.vocab_padded;
    auto host = [&](const HostBuffer& b) { return w ? b.data() : nullptr; };
    std::vector<TensorSpec> t;
    d.layers.resize(static_cast<size_t>(c.n_layer));
    t.push_back({V * D, true, init.embedding, w ? w->embedding.data() : nullptr, &d.embedding});
    t.push_back({D, false, init.norm, w ? w->norm_f.data() : nullptr, nullptr, &d.norm_f});
    if (!c.tie_embeddings)
        t.push_back({V * D, true, init.lm_head, w ? w->lm_head.data() : nullptr, &d.head});
    for (int64_t i = 0; i < c.n_layer; ++i) {
        DeviceLayer& L = d.layers[static_cast<size_t>(i)];
        const LayerWeights* hw = w ? &w->layers[static_cast<size_t>(i)] : nullptr;
        auto h = [&](const HostBuffer LayerWeights::*m) { return hw ? host(hw->*m) : nullptr; };
        t.push_back({D, false, init.norm, h(&LayerWeights::norm), nullptr, &L.norm});
        t.push_back({c.d_in_proj() * D, true, init.in_proj, h(&LayerWeights::in_proj), &L.in_proj});
        t.push_back({c.conv_dim() * c.d_conv, false, init.conv_weight,
                     h(&LayerWeights::conv_weight), nullptr, &L.conv_weight});
        if (c.conv_bias)
            t.push_back({c.conv_dim(), false, init.conv_bias, h(&LayerWeights::conv_bias), nullptr,
                         &L.conv_bias});
        t.push_back({H, false, init.dt_bias, h(&LayerWeights::dt_bias), nullptr, &L.dt_bias});
        t.push_back({H, false, init.A_log, h(&LayerWeights::A), nullptr, &L.A, true});
        t.push_back({H, false, init.D, h(&LayerWeights::D), nullptr, &L.D});
        t.push_back({E, false, init.norm, h(&LayerWeights::gate_norm), nullptr, &L.gate_norm});
        t.push_back({D * E, true, init.out_proj, h(&LayerWeights::out_proj), &L.out_proj});
        if (c.proj_bias) {
            t.push_back({c.d_in_proj(), false, init.proj_bias, h(&LayerWeights::in_proj_bias),
                         nullptr, &L.in_proj_bias});
            t.push_back({D, false, init.proj_bias, h(&LayerWeights::out_proj_bias), nullptr,
                         &L.out_proj_bias});
        }
    }
    return t;
}

Result<DeviceWeights> build(const ModelConfig& c, const ModelWeights* w, uint64_t seed, DType act,
                            cudaStream_t stream) {
    DeviceWeights d;
    std::vector<TensorSpec> specs = tensor_list(c, w, d);
    const size_t act_size = dtype_size(act);
    size_t total = 0, largest = 0;
    std::vector<size_t> offsets;
    for (const TensorSpec& s : specs) {
        offsets.push_back(total);
        total += DevicePool::round_up(static_cast<size_t>(s.numel) * (s.big ? act_size : 4));
        largest = std::max(largest, static_cast<size_t>(s.numel));
    }
    DUALITY_ASSIGN_OR_RETURN(d.block, DeviceBuffer::allocate(total, "the model weights"));
    // f32 staging for conversions (uploads) and small tensors.
    DUALITY_ASSIGN_OR_RETURN(DeviceBuffer staging,
                             DeviceBuffer::allocate(w ? largest * 4 : 0, "weight conversion"));
    std::vector<float> small;
    uint64_t tensor_seed = seed;
    for (size_t i = 0; i < specs.size(); ++i) {
        const TensorSpec& s = specs[i];
        const uint64_t ts = tensor_seed++;
        char* dst = d.block.as<char>() + offsets[i];
        if (s.big) {
            *s.dst_act = dst;
            if (s.host) {
                DUALITY_CUDA_CHECK(cudaMemcpyAsync(staging.data(), s.host,
                                                   static_cast<size_t>(s.numel) * 4,
                                                   cudaMemcpyHostToDevice, stream));
                convert_from_f32(staging.as<float>(), dst, s.numel, act, stream);
                DUALITY_CUDA_CHECK(cudaStreamSynchronize(stream));  // staging is reused
            } else {
                fill_uniform(dst, s.numel, act, ts, s.range.lo, s.range.hi, stream);
            }
        } else {
            *s.dst_f32 = reinterpret_cast<const float*>(dst);
            small.resize(static_cast<size_t>(s.numel));
            for (int64_t j = 0; j < s.numel; ++j) {
                float v = s.host ? s.host[j]
                                 : s.range.lo + (s.range.hi - s.range.lo) *
                                                    uniform_hash(ts, static_cast<uint64_t>(j));
                if (!s.host && s.negate_exp) v = -std::exp(v);
                small[static_cast<size_t>(j)] = v;
            }
            upload(dst, small.data(), small.size() * 4);
        }
    }
    if (c.tie_embeddings) d.head = d.embedding;
    DUALITY_CUDA_CHECK(cudaStreamSynchronize(stream));
    return d;
}

}  // namespace

Result<DeviceWeights> upload_weights(const ModelConfig& c, const ModelWeights& w, DType act,
                                     cudaStream_t stream) {
    return build(c, &w, 0, act, stream);
}

Result<DeviceWeights> random_device_weights(const ModelConfig& c, uint64_t seed, DType act,
                                            cudaStream_t stream) {
    return build(c, nullptr, seed, act, stream);
}

}  // namespace duality::cuda
