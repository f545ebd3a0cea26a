// `duality logits`: the debugging window into the engine. Runs a prefill over --ids and prints the
// argmax at every position and the full logit row of the last position. The ids go through the
// model in pieces of --piece tokens with the state carried over, so that only one piece's logits
// are held (tokens × vocabulary f32: about 200 MB per 1,000 tokens of a 50k vocabulary).
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <span>

#include <nlohmann/json.hpp>

#include "duality/model.h"
#include "tools/duality/commands.h"

namespace duality::cli {

Action add_logits_command(CLI::App& app) {
    struct Options {
        std::string model, ids;
        int piece = 2048;
        bool json = false;
        BackendFlags backend;
    };
    auto opt = std::make_shared<Options>();
    CLI::App* cmd = app.add_subcommand(
        "logits", "Run a prefill (in pieces of --piece tokens) and print its logits");
    cmd->add_option("--model", opt->model, "Model folder (config.json + weights)")->required();
    cmd->add_option("--ids", opt->ids, "Comma-separated prompt token ids, e.g. 1,2,3")->required();
    cmd->add_option("--piece", opt->piece,
                    "Tokens per model call, the state carried over (bounds the memory for logits)")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    cmd->add_flag("--json", opt->json, "Print {\"argmax\": [...], \"last\": [...]} as JSON");
    add_backend_flags(cmd, &opt->backend);
    return [opt]() {
        std::vector<int32_t> ids;
        if (!parse_id_list("--ids", opt->ids, &ids)) return 2;
        auto model = Model::load(opt->model, to_load_options(opt->backend));
        if (!model) {
            std::fprintf(stderr, "duality: %s\n", model.status().message().c_str());
            return 1;
        }
        SequenceState state = (*model)->new_state();
        const int64_t V = (*model)->config().vocab_size;
        const size_t P = static_cast<size_t>(opt->piece);
        std::vector<int64_t> argmax(ids.size());
        std::vector<float> last_row;
        for (size_t p = 0; p < ids.size(); p += P) {
            const size_t n = std::min(P, ids.size() - p);
            auto logits = (*model)->forward(std::span(ids).subspan(p, n), state, LogitsMode::kAll);
            if (!logits) {
                std::fprintf(stderr, "duality: %s\n", logits.status().message().c_str());
                return 1;
            }
            for (size_t t = 0; t < n; ++t) {
                const float* row = logits->data() + t * V;
                argmax[p + t] = std::max_element(row, row + V) - row;
            }
            if (p + n == ids.size()) last_row.assign(logits->end() - V, logits->end());
        }
        const float* last = last_row.data();
        if (opt->json) {
            nlohmann::json out;
            out["argmax"] = argmax;
            out["last"] = std::vector<float>(last, last + V);
            std::cout << out.dump() << "\n";
            return 0;
        }
        std::printf("position  token  argmax\n");
        for (size_t t = 0; t < ids.size(); ++t)
            std::printf("%8zu  %5d  %6lld\n", t, ids[t], static_cast<long long>(argmax[t]));
        std::vector<int64_t> order(V);
        std::iota(order.begin(), order.end(), 0);
        const int64_t k = std::min<int64_t>(5, V);
        std::partial_sort(order.begin(), order.begin() + k, order.end(),
                          [&](int64_t a, int64_t b) { return last[a] > last[b]; });
        std::printf("top-%lld at the last position:\n", static_cast<long long>(k));
        for (int64_t i = 0; i < k; ++i)
            std::printf("  %6lld  %.6f\n", static_cast<long long>(order[i]), last[order[i]]);
        return 0;
    };
}

}  // namespace duality::cli
