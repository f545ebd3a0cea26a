// `duality logits`: the debugging window into the engine. Runs one prefill over --ids and prints
// the argmax at every position and the full logit row of the last position.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <numeric>

#include <nlohmann/json.hpp>

#include "duality/model.h"
#include "tools/duality/commands.h"

namespace duality::cli {

bool parse_id_list(const std::string& text, std::vector<int32_t>* ids) {
    ids->clear();
    size_t pos = 0;
    while (pos <= text.size()) {
        const size_t comma = std::min(text.find(',', pos), text.size());
        const std::string item = text.substr(pos, comma - pos);
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || errno == ERANGE || v < 0 || v > INT32_MAX) {
            std::fprintf(stderr, "duality: --ids: \"%s\" is not a token id (expected e.g. 1,2,3)\n",
                         item.c_str());
            return false;
        }
        ids->push_back(static_cast<int32_t>(v));
        pos = comma + 1;
    }
    return true;
}

Action add_logits_command(CLI::App& app) {
    struct Options {
        std::string model, ids;
        bool json = false;
        BackendFlags backend;
    };
    auto opt = std::make_shared<Options>();
    CLI::App* cmd = app.add_subcommand("logits", "Run one prefill and print its logits");
    cmd->add_option("--model", opt->model, "Model folder (config.json + weights)")->required();
    cmd->add_option("--ids", opt->ids, "Comma-separated prompt token ids, e.g. 1,2,3")->required();
    cmd->add_flag("--json", opt->json, "Print {\"argmax\": [...], \"last\": [...]} as JSON");
    add_backend_flags(cmd, &opt->backend);
    return [opt]() {
        std::vector<int32_t> ids;
        if (!parse_id_list(opt->ids, &ids)) return 2;
        auto model = Model::load(opt->model, to_load_options(opt->backend));
        if (!model) {
            std::fprintf(stderr, "duality: %s\n", model.status().message().c_str());
            return 1;
        }
        SequenceState state = (*model)->new_state();
        auto logits = (*model)->forward(ids, state, LogitsMode::kAll);
        if (!logits) {
            std::fprintf(stderr, "duality: %s\n", logits.status().message().c_str());
            return 1;
        }
        const int64_t V = (*model)->config().vocab_size;
        const std::vector<float>& l = *logits;
        std::vector<int64_t> argmax(ids.size());
        for (size_t t = 0; t < ids.size(); ++t) {
            const float* row = l.data() + t * V;
            argmax[t] = std::max_element(row, row + V) - row;
        }
        const float* last = l.data() + (ids.size() - 1) * V;
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
