// config.json → ModelConfig, for both checkpoint formats (spec section 2).
#include <cmath>
#include <limits>
#include <system_error>
#include <utility>

#include "core/read_file.h"
#include "duality/config.h"
#include "loader/json.h"

namespace duality {
namespace {

using nlohmann::json;

constexpr int64_t kMaxDim = int64_t{1} << 24;  // bounds every size so products cannot overflow
// The SSD's chunk length, which no weight's shape checks: its Q × Q score tiles per chunk must
// fit in memory (a chunk_size of 2^24 passed loading and ran out of memory at the first prefill).
// Real checkpoints use 256.
constexpr int64_t kMaxChunkSize = 4096;

// Typed access to one JSON object; every error names the file and the key.
class Fields {
  public:
    Fields(const json& obj, std::string source, std::string prefix = "")
        : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

    bool has(const char* key) const { return obj_.contains(key) && !obj_[key].is_null(); }

    Status get_int(const char* key, int64_t* out, std::optional<int64_t> fallback,
                   int64_t min_value = 1, int64_t max_value = kMaxDim) const {
        if (!has(key)) {
            if (!fallback) return missing(key);
            *out = *fallback;
            return Status::ok();
        }
        const json& v = obj_[key];
        if (!v.is_number_integer()) return wrong(key, "an integer");
        const int64_t x = v.get<int64_t>();
        if (x < min_value || x > max_value)
            return invalid_argument(where(key) + " = " + std::to_string(x) + " is out of range [" +
                                    std::to_string(min_value) + ", " + std::to_string(max_value) +
                                    "]");
        *out = x;
        return Status::ok();
    }
    Status get_bool(const char* key, bool* out, std::optional<bool> fallback) const {
        if (!has(key)) {
            if (!fallback) return missing(key);
            *out = *fallback;
            return Status::ok();
        }
        if (!obj_[key].is_boolean()) return wrong(key, "true or false");
        *out = obj_[key].get<bool>();
        return Status::ok();
    }
    Status get_double(const char* key, double* out, double fallback) const {
        if (!has(key)) {
            *out = fallback;
            return Status::ok();
        }
        auto x = json_number(obj_[key]);
        if (!x) return wrong(key, "a number");
        *out = *x;
        return Status::ok();
    }
    Status get_string(const char* key, std::string* out, const char* fallback) const {
        if (!has(key)) {
            *out = fallback;
            return Status::ok();
        }
        if (!obj_[key].is_string()) return wrong(key, "a string");
        *out = obj_[key].get<std::string>();
        return Status::ok();
    }
    // A two-element [lo, hi] range such as time_step_limit / dt_limit.
    Status get_range(const char* key, float* lo, float* hi) const {
        *lo = 0.0f;
        *hi = std::numeric_limits<float>::infinity();
        if (!has(key)) return Status::ok();
        const json& v = obj_[key];
        if (!v.is_array() || v.size() != 2) return wrong(key, "a [min, max] pair");
        auto a = json_number(v[0]), b = json_number(v[1]);
        if (!a || !b || std::isnan(*a) || std::isnan(*b) || *a < 0 || *a > *b)
            return invalid_argument(where(key) + " = [" + json_brief(v[0]) + ", " +
                                    json_brief(v[1]) + "] must be [min, max] with 0 <= min <= max");
        *lo = static_cast<float>(*a);
        *hi = static_cast<float>(*b);
        return Status::ok();
    }
    std::string where(const char* key) const { return source_ + ": \"" + prefix_ + key + "\""; }

  private:
    Status missing(const char* key) const {
        return invalid_argument(where(key) + " is required but missing");
    }
    Status wrong(const char* key, const char* expected) const {
        return invalid_argument(where(key) + " must be " + expected + ", got " +
                                json_brief(obj_[key]));
    }

    const json& obj_;
    std::string source_;
    std::string prefix_;
};

Status parse_hf(const json& j, const std::string& source, ModelConfig* c) {
    Fields f(j, source);
    c->format = CheckpointFormat::kHuggingFace;
    std::string model_type, act;
    DUALITY_RETURN_IF_ERROR(f.get_string("model_type", &model_type, "mamba2"));
    if (model_type != "mamba2")
        return unsupported(f.where("model_type") + " = \"" + model_type +
                           "\": only Mamba-2 (\"mamba2\") models are supported");
    int64_t expand;
    DUALITY_RETURN_IF_ERROR(f.get_int("hidden_size", &c->d_model, std::nullopt));
    DUALITY_RETURN_IF_ERROR(f.get_int("num_hidden_layers", &c->n_layer, std::nullopt));
    DUALITY_RETURN_IF_ERROR(f.get_int("vocab_size", &c->vocab_size, std::nullopt));
    // Missing optional keys take transformers' Mamba2Config defaults.
    DUALITY_RETURN_IF_ERROR(f.get_int("expand", &expand, 2));
    DUALITY_RETURN_IF_ERROR(f.get_int("head_dim", &c->head_dim, 64));
    DUALITY_RETURN_IF_ERROR(f.get_int("state_size", &c->d_state, 128));
    DUALITY_RETURN_IF_ERROR(f.get_int("n_groups", &c->n_group, 8));
    DUALITY_RETURN_IF_ERROR(f.get_int("conv_kernel", &c->d_conv, 4));
    DUALITY_RETURN_IF_ERROR(f.get_int("chunk_size", &c->chunk_size, 256, 1, kMaxChunkSize));
    DUALITY_RETURN_IF_ERROR(f.get_bool("use_bias", &c->proj_bias, false));
    DUALITY_RETURN_IF_ERROR(f.get_bool("use_conv_bias", &c->conv_bias, true));
    DUALITY_RETURN_IF_ERROR(f.get_bool("residual_in_fp32", &c->residual_in_fp32, true));
    DUALITY_RETURN_IF_ERROR(f.get_bool("tie_word_embeddings", &c->tie_embeddings, false));
    DUALITY_RETURN_IF_ERROR(f.get_double("layer_norm_epsilon", &c->norm_eps, 1e-5));
    DUALITY_RETURN_IF_ERROR(f.get_range("time_step_limit", &c->dt_min, &c->dt_max));
    DUALITY_RETURN_IF_ERROR(f.get_string("hidden_act", &act, "silu"));
    if (act != "silu")
        return unsupported(f.where("hidden_act") + " = \"" + act + "\": only silu is supported");
    bool rms_norm;
    DUALITY_RETURN_IF_ERROR(f.get_bool("rms_norm", &rms_norm, true));
    if (!rms_norm) return unsupported(f.where("rms_norm") + " = false is not supported");
    DUALITY_RETURN_IF_ERROR(f.get_int("eos_token_id", &c->eos_token_id, -1, -1));
    DUALITY_RETURN_IF_ERROR(f.get_int("bos_token_id", &c->bos_token_id, -1, -1));
    // A special token the model cannot produce or read (an eos never sampled, ids out of range).
    for (const auto& [key, id] :
         {std::pair{"eos_token_id", c->eos_token_id}, std::pair{"bos_token_id", c->bos_token_id}}) {
        if (id >= c->vocab_size)
            return invalid_argument(f.where(key) + " = " + std::to_string(id) +
                                    " is not a token id: it must be below vocab_size = " +
                                    std::to_string(c->vocab_size));
    }
    c->d_inner = expand * c->d_model;
    if (c->d_inner % c->head_dim != 0)
        return invalid_argument(source + ": expand * hidden_size = " + std::to_string(c->d_inner) +
                                " is not a multiple of head_dim = " + std::to_string(c->head_dim));
    c->n_head = c->d_inner / c->head_dim;
    int64_t num_heads;
    DUALITY_RETURN_IF_ERROR(f.get_int("num_heads", &num_heads, c->n_head));
    if (num_heads != c->n_head)
        return invalid_argument(
            f.where("num_heads") + " = " + std::to_string(num_heads) +
            " but expand * hidden_size / head_dim = " + std::to_string(c->n_head));
    c->vocab_padded = c->vocab_size;  // HF configs store the padded size
    return Status::ok();
}

Status parse_state_spaces(const json& j, const std::string& source, ModelConfig* c) {
    Fields f(j, source);
    c->format = CheckpointFormat::kStateSpaces;
    DUALITY_RETURN_IF_ERROR(f.get_int("d_model", &c->d_model, std::nullopt));
    DUALITY_RETURN_IF_ERROR(f.get_int("n_layer", &c->n_layer, std::nullopt));
    DUALITY_RETURN_IF_ERROR(f.get_int("vocab_size", &c->vocab_size, std::nullopt));
    int64_t d_intermediate, pad_multiple;
    DUALITY_RETURN_IF_ERROR(f.get_int("d_intermediate", &d_intermediate, 0, 0));
    if (d_intermediate != 0)
        return unsupported(f.where("d_intermediate") + " > 0 (MLP blocks) is not supported");
    if (f.has("attn_layer_idx") &&
        (!j["attn_layer_idx"].is_array() || !j["attn_layer_idx"].empty()))
        return unsupported(f.where("attn_layer_idx") +
                           ": hybrid attention layers are not supported yet");
    bool rms_norm;
    DUALITY_RETURN_IF_ERROR(f.get_bool("rms_norm", &rms_norm, true));
    if (!rms_norm) return unsupported(f.where("rms_norm") + " = false is not supported");
    DUALITY_RETURN_IF_ERROR(f.get_bool("residual_in_fp32", &c->residual_in_fp32, true));
    DUALITY_RETURN_IF_ERROR(f.get_bool("tie_embeddings", &c->tie_embeddings, true));
    DUALITY_RETURN_IF_ERROR(f.get_int("pad_vocab_size_multiple", &pad_multiple, 8));
    c->vocab_padded = (c->vocab_size + pad_multiple - 1) / pad_multiple * pad_multiple;
    c->norm_eps = 1e-5;

    if (!j.contains("ssm_cfg") || !j["ssm_cfg"].is_object())
        return invalid_argument(f.where("ssm_cfg") + " is required and must be an object");
    Fields s(j["ssm_cfg"], source, "ssm_cfg.");
    std::string layer;
    DUALITY_RETURN_IF_ERROR(s.get_string("layer", &layer, "Mamba1"));
    if (layer != "Mamba2")
        return unsupported(s.where("layer") + " = \"" + layer + "\": only Mamba2 is supported");
    int64_t expand;
    DUALITY_RETURN_IF_ERROR(s.get_int("d_state", &c->d_state, 128));
    DUALITY_RETURN_IF_ERROR(s.get_int("d_conv", &c->d_conv, 4));
    DUALITY_RETURN_IF_ERROR(s.get_int("expand", &expand, 2));
    DUALITY_RETURN_IF_ERROR(s.get_int("headdim", &c->head_dim, 64));
    DUALITY_RETURN_IF_ERROR(s.get_int("ngroups", &c->n_group, 1));
    DUALITY_RETURN_IF_ERROR(s.get_int("chunk_size", &c->chunk_size, 256, 1, kMaxChunkSize));
    DUALITY_RETURN_IF_ERROR(s.get_bool("bias", &c->proj_bias, false));
    DUALITY_RETURN_IF_ERROR(s.get_bool("conv_bias", &c->conv_bias, true));
    DUALITY_RETURN_IF_ERROR(s.get_range("dt_limit", &c->dt_min, &c->dt_max));
    bool flag;
    DUALITY_RETURN_IF_ERROR(s.get_bool("rmsnorm", &flag, true));
    if (!flag) return unsupported(s.where("rmsnorm") + " = false is not supported");
    DUALITY_RETURN_IF_ERROR(s.get_bool("norm_before_gate", &flag, false));
    if (flag) return unsupported(s.where("norm_before_gate") + " = true is not supported");
    DUALITY_RETURN_IF_ERROR(s.get_bool("D_has_hdim", &flag, false));
    if (flag) return unsupported(s.where("D_has_hdim") + " = true is not supported");
    c->d_inner = expand * c->d_model;
    if (s.has("d_ssm")) {
        int64_t d_ssm;
        DUALITY_RETURN_IF_ERROR(s.get_int("d_ssm", &d_ssm, std::nullopt));
        if (d_ssm != c->d_inner)
            return unsupported(s.where("d_ssm") +
                               " != expand * d_model (gated MLP channels) is "
                               "not supported");
    }
    if (c->d_inner % c->head_dim != 0)
        return invalid_argument(
            source + ": expand * d_model = " + std::to_string(c->d_inner) +
            " is not a multiple of ssm_cfg.headdim = " + std::to_string(c->head_dim));
    c->n_head = c->d_inner / c->head_dim;
    return Status::ok();
}

}  // namespace

Result<ModelConfig> parse_model_config(const std::string& json_text, const std::string& source) {
    DUALITY_ASSIGN_OR_RETURN(json j, parse_json(json_text, source));
    if (!j.is_object()) return invalid_argument(source + ": the config is not a JSON object");
    ModelConfig c;
    const bool state_spaces = j.contains("ssm_cfg") || j.contains("d_model");
    DUALITY_RETURN_IF_ERROR(state_spaces ? parse_state_spaces(j, source, &c)
                                         : parse_hf(j, source, &c));
    if (c.n_head % c.n_group != 0)
        return invalid_argument(source + ": n_groups = " + std::to_string(c.n_group) +
                                " does not divide the number of heads " + std::to_string(c.n_head));
    if (c.vocab_size > c.vocab_padded) return invalid_argument(source + ": bad vocab_size");
    if (!(c.norm_eps > 0) || !std::isfinite(c.norm_eps))
        return invalid_argument(source + ": the norm epsilon must be a positive finite number");
    if (c.d_conv < 2) return unsupported(source + ": conv kernel width must be at least 2");
    return c;
}

Result<ModelConfig> load_model_config(const std::filesystem::path& dir) {
    const auto path = dir / "config.json";
    auto text = read_file(path);
    if (!text) {
        std::error_code ec;
        if (!std::filesystem::is_directory(dir, ec))
            return not_found(dir.string() + ": not a model folder (no such directory)");
        if (text.status().code() == StatusCode::kNotFound)
            return not_found(path.string() +
                             ": no such file (every model folder needs config.json)");
        return text.status();
    }
    return parse_model_config(*text, path.string());
}

}  // namespace duality
