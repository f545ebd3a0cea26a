// `duality inspect DIR`: what a checkpoint folder holds, without running it: the config, every
// stored tensor, the parameter count and the memory the engine needs.
#include <cstdio>

#include "core/tensor.h"
#include "duality/config.h"
#include "loader/tensor_store.h"
#include "model/weights.h"
#include "tools/duality/commands.h"

namespace duality::cli {

namespace {
std::string human_bytes(double b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f %s", b, units[u]);
    return buf;
}
}  // namespace

Action add_inspect_command(CLI::App& app) {
    auto dir = std::make_shared<std::string>();
    auto tensors = std::make_shared<bool>(false);
    CLI::App* cmd = app.add_subcommand("inspect", "Describe a model folder: config, tensors, "
                                                  "parameter count, memory needed");
    cmd->add_option("dir", *dir, "Model folder (default: the bundled model)");
    cmd->add_flag("--tensors", *tensors, "List every stored tensor");
    return [dir, tensors]() {
        const std::string path = dir->empty() ? default_model_dir() : *dir;
        auto config = load_model_config(path);
        if (!config) {
            std::fprintf(stderr, "duality: %s\n", config.status().message().c_str());
            return 1;
        }
        auto store = load_tensor_store(path);
        if (!store) {
            std::fprintf(stderr, "duality: %s\n", store.status().message().c_str());
            return 1;
        }
        const ModelConfig& c = *config;
        std::printf("%s\n", path.c_str());
        std::printf("  format        %s\n", c.format == CheckpointFormat::kHuggingFace
                                                 ? "Hugging Face Mamba2ForCausalLM"
                                                 : "state-spaces (mamba_ssm)");
        std::printf("  d_model %lld  n_layer %lld  d_inner %lld  n_head %lld  head_dim %lld\n",
                    (long long)c.d_model, (long long)c.n_layer, (long long)c.d_inner,
                    (long long)c.n_head, (long long)c.head_dim);
        std::printf("  d_state %lld  n_group %lld  d_conv %lld  chunk_size %lld\n",
                    (long long)c.d_state, (long long)c.n_group, (long long)c.d_conv,
                    (long long)c.chunk_size);
        std::printf("  vocab %lld (padded to %lld)  tied head: %s  proj bias: %s  dt_limit [%g, %g]\n",
                    (long long)c.vocab_size, (long long)c.vocab_padded,
                    c.tie_embeddings ? "yes" : "no", c.proj_bias ? "yes" : "no", c.dt_min,
                    c.dt_max);

        int64_t params = 0;
        size_t stored_bytes = 0;
        std::map<std::string, int> dtypes;
        for (const auto& [name, t] : store->tensors()) {
            int64_t n = 1;
            for (int64_t d : t.shape) n *= d;
            params += n;
            stored_bytes += t.nbytes;
            ++dtypes[std::string(dtype_name(t.dtype))];
            if (*tensors)
                std::printf("    %-48s %-5s %-18s %s\n", name.c_str(),
                            std::string(dtype_name(t.dtype)).c_str(), shape_str(t.shape).c_str(),
                            human_bytes(static_cast<double>(t.nbytes)).c_str());
        }
        // A tied checkpoint may store lm_head.weight as a duplicate of the embedding.
        if (c.tie_embeddings) {
            if (const RawTensor* head = store->find("lm_head.weight")) {
                int64_t n = 1;
                for (int64_t d : head->shape) n *= d;
                params -= n;
            }
        }
        std::string dtype_list;
        for (const auto& [d, n] : dtypes) dtype_list += (dtype_list.empty() ? "" : ", ") + d + " x" + std::to_string(n);
        std::printf("  tensors       %zu (%s), %s on disk\n", store->tensors().size(),
                    dtype_list.c_str(), human_bytes(static_cast<double>(stored_bytes)).c_str());
        std::printf("  parameters    %lld (%.2fM)\n", (long long)params, params / 1e6);
        const double state_bytes =
            4.0 * static_cast<double>(c.n_layer) *
            static_cast<double>(c.n_head * c.head_dim * c.d_state + (c.d_conv - 1) * c.conv_dim());
        std::printf("  memory        weights %s as f32 (CPU), %s as bf16 (GPU); state %s per "
                    "sequence (f32)\n",
                    human_bytes(4.0 * static_cast<double>(params)).c_str(),
                    human_bytes(2.0 * static_cast<double>(params)).c_str(),
                    human_bytes(state_bytes).c_str());
        // Validate the weights against the config as the loader would.
        auto weights = load_weights(*store, c);
        std::printf("  check         %s\n",
                    weights.is_ok() ? "all tensors present with the right shapes"
                                    : weights.status().message().c_str());
        return weights.is_ok() ? 0 : 1;
    };
}

}  // namespace duality::cli
