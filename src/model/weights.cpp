#include "model/weights.h"

#include <cmath>
#include <map>
#include <set>

#include "core/half.h"

namespace duality {
namespace {

// Canonical name: no leading "model.", and "backbone.embeddings." for the embedding.
std::string canonical_name(std::string name) {
    if (name.rfind("model.", 0) == 0) name = name.substr(6);
    const std::string old_emb = "backbone.embedding.";
    if (name.rfind(old_emb, 0) == 0) name = "backbone.embeddings." + name.substr(old_emb.size());
    return name;
}

class WeightReader {
public:
    WeightReader(const TensorStore& store) {
        for (const auto& [name, t] : store.tensors()) {
            const std::string c = canonical_name(name);
            if (!by_name_.emplace(c, &t).second) duplicate_ = name;
            original_[c] = name;
        }
    }
    const std::string& duplicate() const { return duplicate_; }

    // Reads tensor `name`, which must have one of the given shapes, into `out` as f32.
    Status read(const std::string& name, std::vector<std::vector<int64_t>> shapes,
                HostBuffer* out, bool optional = false) {
        auto it = by_name_.find(name);
        if (it == by_name_.end()) {
            if (optional) return Status::ok();
            return not_found("checkpoint is missing tensor \"" + name + "\"");
        }
        used_.insert(name);
        const RawTensor& t = *it->second;
        const std::string where = t.file + ": tensor \"" + original_[name] + "\"";
        if (!dtype_is_float(t.dtype))
            return invalid_argument(where + " has dtype " + std::string(dtype_name(t.dtype)) +
                                    "; expected f32, f16 or bf16");
        bool shape_ok = false;
        for (const auto& s : shapes) shape_ok |= (s == t.shape);
        if (!shape_ok)
            return invalid_argument(where + " has shape " + shape_str(t.shape) +
                                    " but the config implies " + shape_str(shapes.front()));
        int64_t numel = 1;
        for (int64_t d : t.shape) numel *= d;
        out->resize(static_cast<size_t>(numel));
        convert_to_f32(t.dtype, t.data, out->data(), static_cast<size_t>(numel));
        for (int64_t i = 0; i < numel; ++i) {
            if (!std::isfinite(out->data()[i]))
                return invalid_argument(where + " holds a non-finite value at element " +
                                        std::to_string(i));
        }
        return Status::ok();
    }
    void mark_used(const std::string& name) { used_.insert(name); }
    bool has(const std::string& name) const { return by_name_.count(name) > 0; }

    // Every tensor in the file must have been claimed.
    Status check_all_used() const {
        for (const auto& [name, t] : by_name_) {
            if (!used_.count(name))
                return invalid_argument(t->file + ": unexpected tensor \"" + original_.at(name) +
                                        "\" (does config.json match these weights?)");
        }
        return Status::ok();
    }

private:
    std::map<std::string, const RawTensor*> by_name_;
    std::map<std::string, std::string> original_;
    std::set<std::string> used_;
    std::string duplicate_;
};

}  // namespace

size_t ModelWeights::bytes() const {
    size_t n = embedding.size() + norm_f.size() + lm_head.size();
    for (const LayerWeights& l : layers)
        n += l.norm.size() + l.in_proj.size() + l.in_proj_bias.size() + l.conv_weight.size() +
             l.conv_bias.size() + l.dt_bias.size() + l.A.size() + l.D.size() +
             l.gate_norm.size() + l.out_proj.size() + l.out_proj_bias.size();
    return n * sizeof(float);
}

RandomInit RandomInit::for_config(const ModelConfig& c) {
    const float in_scale = 1.0f / std::sqrt(static_cast<float>(c.d_model));
    const float out_scale = 1.0f / std::sqrt(static_cast<float>(c.d_inner));
    RandomInit r;
    r.embedding = {-0.1f, 0.1f};
    r.in_proj = {-in_scale, in_scale};
    r.out_proj = {-out_scale, out_scale};
    r.lm_head = {-in_scale, in_scale};
    r.conv_weight = {-0.5f, 0.5f};
    r.conv_bias = {-0.1f, 0.1f};
    r.dt_bias = {-6.9f, -2.25f};  // softplus: Δ ≈ 1e-3 .. 1e-1
    r.A_log = {0.0f, 2.7725887f};  // A in -[1, 16]
    r.D = {0.5f, 1.5f};
    r.norm = {1.0f, 1.0f};
    r.proj_bias = {-0.01f, 0.01f};
    return r;
}

ModelWeights random_weights(const ModelConfig& c, uint64_t seed) {
    const RandomInit init = RandomInit::for_config(c);
    uint64_t tensor_seed = seed;
    auto fill = [&](HostBuffer& b, int64_t n, RandomRange r) {
        b.resize(static_cast<size_t>(n));
        const uint64_t s = tensor_seed++;
        float* d = b.data();
#pragma omp parallel for if (n > (1 << 16))
        for (int64_t i = 0; i < n; ++i) d[i] = r.lo + (r.hi - r.lo) * uniform_hash(s, static_cast<uint64_t>(i));
    };
    const int64_t D = c.d_model, E = c.d_inner, H = c.n_head, V = c.vocab_padded;
    ModelWeights w;
    fill(w.embedding, V * D, init.embedding);
    fill(w.norm_f, D, init.norm);
    if (!c.tie_embeddings) fill(w.lm_head, V * D, init.lm_head);
    w.layers.resize(static_cast<size_t>(c.n_layer));
    for (LayerWeights& l : w.layers) {
        fill(l.norm, D, init.norm);
        fill(l.in_proj, c.d_in_proj() * D, init.in_proj);
        fill(l.conv_weight, c.conv_dim() * c.d_conv, init.conv_weight);
        if (c.conv_bias) fill(l.conv_bias, c.conv_dim(), init.conv_bias);
        fill(l.dt_bias, H, init.dt_bias);
        fill(l.A, H, init.A_log);
        for (size_t h = 0; h < l.A.size(); ++h) l.A.data()[h] = -std::exp(l.A.data()[h]);
        fill(l.D, H, init.D);
        fill(l.gate_norm, E, init.norm);
        fill(l.out_proj, D * E, init.out_proj);
        if (c.proj_bias) {
            fill(l.in_proj_bias, c.d_in_proj(), init.proj_bias);
            fill(l.out_proj_bias, D, init.proj_bias);
        }
    }
    return w;
}

Result<ModelWeights> load_weights(const TensorStore& store, const ModelConfig& c) {
    WeightReader r(store);
    if (!r.duplicate().empty())
        return invalid_argument("checkpoint holds \"" + r.duplicate() +
                                "\" under two spellings of one name");
    ModelWeights w;
    const int64_t D = c.d_model, E = c.d_inner, H = c.n_head, V = c.vocab_padded;
    DUALITY_RETURN_IF_ERROR(r.read("backbone.embeddings.weight", {{V, D}}, &w.embedding));
    DUALITY_RETURN_IF_ERROR(r.read("backbone.norm_f.weight", {{D}}, &w.norm_f));
    if (c.tie_embeddings) {
        // Tied checkpoints may still carry lm_head.weight as a duplicate of the embedding.
        if (r.has("lm_head.weight")) {
            HostBuffer copy;
            DUALITY_RETURN_IF_ERROR(r.read("lm_head.weight", {{V, D}}, &copy));
        }
    } else {
        DUALITY_RETURN_IF_ERROR(r.read("lm_head.weight", {{V, D}}, &w.lm_head));
    }
    w.layers.resize(static_cast<size_t>(c.n_layer));
    for (int64_t i = 0; i < c.n_layer; ++i) {
        LayerWeights& l = w.layers[static_cast<size_t>(i)];
        const std::string p = "backbone.layers." + std::to_string(i) + ".";
        const std::string m = p + "mixer.";
        DUALITY_RETURN_IF_ERROR(r.read(p + "norm.weight", {{D}}, &l.norm));
        DUALITY_RETURN_IF_ERROR(r.read(m + "in_proj.weight", {{c.d_in_proj(), D}}, &l.in_proj));
        DUALITY_RETURN_IF_ERROR(r.read(m + "conv1d.weight",
                                       {{c.conv_dim(), 1, c.d_conv}, {c.conv_dim(), c.d_conv}},
                                       &l.conv_weight));
        DUALITY_RETURN_IF_ERROR(r.read(m + "dt_bias", {{H}}, &l.dt_bias));
        DUALITY_RETURN_IF_ERROR(r.read(m + "A_log", {{H}}, &l.A));
        for (size_t h = 0; h < l.A.size(); ++h) l.A.data()[h] = -std::exp(l.A.data()[h]);
        DUALITY_RETURN_IF_ERROR(r.read(m + "D", {{H}}, &l.D));
        DUALITY_RETURN_IF_ERROR(r.read(m + "norm.weight", {{E}}, &l.gate_norm));
        DUALITY_RETURN_IF_ERROR(r.read(m + "out_proj.weight", {{D, E}}, &l.out_proj));
        if (c.conv_bias)
            DUALITY_RETURN_IF_ERROR(r.read(m + "conv1d.bias", {{c.conv_dim()}}, &l.conv_bias));
        if (c.proj_bias) {
            DUALITY_RETURN_IF_ERROR(r.read(m + "in_proj.bias", {{c.d_in_proj()}}, &l.in_proj_bias));
            DUALITY_RETURN_IF_ERROR(r.read(m + "out_proj.bias", {{D}}, &l.out_proj_bias));
        }
    }
    DUALITY_RETURN_IF_ERROR(r.check_all_used());
    return w;
}

}  // namespace duality
