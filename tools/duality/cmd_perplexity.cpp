// `duality perplexity`: perplexity of a text file under the model.
//
// Definition (the usual recipe, and the one in the bundled model's train_log.json): the whole
// file is tokenized as one string and cut into non-overlapping windows of --context tokens (the
// last one may be shorter); each window starts from a zero state; every token but the first of
// each window is scored; perplexity = exp(mean negative log-likelihood). The softmax runs over
// every row the model's head produces (as transformers does).
//
// A window runs through the model in pieces of at most --piece tokens, the state carried from one
// to the next, so that only one piece's logits (tokens × vocabulary f32, 200 MB per 1,000 tokens
// of a 50k vocabulary) are held at a time: a whole window's, at --context 100000, took 20 GB.
// The default, 2048, is a multiple of the usual SSD chunk sizes (128, 256), so the chunking is then
// the same as in one pass.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include <omp.h>

#include "core/read_file.h"
#include "duality/model.h"
#include "duality/tokenizer.h"
#include "ops/cpu/ops.h"
#include "tools/duality/commands.h"

namespace duality::cli {

namespace {

void draw_progress(size_t done, size_t total, double nll_sum, size_t scored, double seconds) {
    const int width = 30;
    const int filled = total ? static_cast<int>(width * done / total) : width;
    std::fprintf(
        stderr, "\r[%.*s%*s] %zu/%zu windows  ppl %.3f  %.0f tok/s ", filled,
        "##############################", width - filled, "", done, total,
        scored ? std::exp(nll_sum / static_cast<double>(scored)) : 0.0,
        seconds > 0 ? (static_cast<double>(scored) + static_cast<double>(done)) / seconds : 0.0);
    std::fflush(stderr);
}

}  // namespace

Action add_perplexity_command(CLI::App& app) {
    struct Options {
        std::string model, file;
        int context = 1024;
        int piece = 2048;
        int64_t windows = 0;  // 0: all
        BackendFlags backend;
        bool quiet = false;
    };
    auto opt = std::make_shared<Options>();
    CLI::App* cmd = app.add_subcommand(
        "perplexity",
        "Perplexity of a text file: non-overlapping windows of --context tokens, each from a zero "
        "state, every token but the first of each window scored, ppl = exp(mean NLL)");
    cmd->add_option("--model", opt->model, "Model folder (default: the bundled model)");
    cmd->add_option("--file", opt->file, "Text file")->required();
    cmd->add_option("--context", opt->context, "Window length in tokens")
        ->check(CLI::Range(2, 1 << 20))
        ->capture_default_str();
    cmd->add_option("--piece", opt->piece,
                    "Tokens per model call within a window (bounds the memory for logits)")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    cmd->add_option("--windows", opt->windows,
                    "Score only the file's first N windows (0: all; the same recipe on a prefix)")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
        ->capture_default_str();
    cmd->add_flag("-q,--quiet", opt->quiet, "No progress bar");
    add_backend_flags(cmd, &opt->backend);

    return [opt]() {
        auto text = read_file(opt->file);
        if (!text) {
            std::fprintf(stderr, "duality perplexity: --file %s\n",
                         text.status().message().c_str());
            return 1;
        }
        auto loaded = load_text_model(opt->model, to_load_options(opt->backend));
        if (!loaded) return 1;
        auto& model = loaded->model;
        auto& tokenizer = loaded->tokenizer;
        const std::vector<int32_t> tokens = tokenizer.encode(*text);
        if (tokens.size() < 2) {
            std::fprintf(stderr, "duality perplexity: %s has fewer than 2 tokens\n",
                         opt->file.c_str());
            return 1;
        }
        const size_t C = static_cast<size_t>(opt->context);
        size_t n_windows = (tokens.size() + C - 1) / C;
        if (opt->windows > 0) n_windows = std::min(n_windows, static_cast<size_t>(opt->windows));
        const int64_t V = model->config().vocab_size;
        const bool show = !opt->quiet;
        const int threads = opt->backend.threads > 0 ? opt->backend.threads : omp_get_max_threads();
        const auto t0 = std::chrono::steady_clock::now();
        double nll_sum = 0;
        size_t scored = 0;
        for (size_t w = 0; w < n_windows; ++w) {
            const size_t begin = w * C, len = std::min(C, tokens.size() - begin);
            if (len < 2) continue;  // a lone last token has nothing to score
            SequenceState state = model->new_state();
            const size_t P = static_cast<size_t>(opt->piece);
            std::vector<double> nll;
            for (size_t p = 0; p + 1 < len; p += P) {
                // Positions [p, p + n) of the window; each scores the token after it (the
                // window's last token scores nothing).
                const size_t n = std::min(P, len - p), n_scored = std::min(n, len - 1 - p);
                auto logits = model->forward(std::span(tokens).subspan(begin + p, n), state,
                                             LogitsMode::kAll);
                if (!logits) {
                    std::fprintf(stderr, "\nduality: %s\n", logits.status().message().c_str());
                    return 1;
                }
                nll.resize(n_scored);
                cpu::cross_entropy(logits->data(), static_cast<int64_t>(n_scored), V,
                                   tokens.data() + begin + p + 1, nll.data(), threads);
                for (double x : nll) nll_sum += x;
                scored += n_scored;
            }
            if (show) {
                const double s =
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                draw_progress(w + 1, n_windows, nll_sum, scored, s);
            }
        }
        if (show) std::fputs("\n", stderr);
        std::printf("perplexity = %.4f over %zu tokens\n",
                    std::exp(nll_sum / static_cast<double>(scored)), scored);
        return 0;
    };
}

}  // namespace duality::cli
