// `duality generate`: streams a continuation of a prompt, then prints prompt and generation
// speed on stderr.
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "duality/model.h"
#include "duality/sampling.h"
#include "duality/tokenizer.h"
#include "sampling/stop_strings.h"
#include "tools/duality/commands.h"

namespace duality::cli {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}
}  // namespace

Action add_generate_command(CLI::App& app) {
    struct Options {
        std::string model, prompt, prompt_ids;
        int n = 128;
        BackendFlags backend;
        SamplingParams sampling;
        std::optional<uint64_t> seed;
        bool ids = false, ignore_eos = false;
        std::vector<std::string> stop, logit_bias;
    };
    auto opt = std::make_shared<Options>();
    opt->sampling.temperature = 0.8f;
    opt->sampling.top_k = 40;
    opt->sampling.top_p = 0.95f;
    opt->sampling.min_p = 0.05f;
    CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt (streams it)");
    cmd->add_option("--model", opt->model, "Model folder (default: the bundled model)");
    auto* prompt_opt =
        cmd->add_option("prompt,-p,--prompt", opt->prompt, "Prompt text (also the first argument)");
    auto* prompt_ids_opt =
        cmd->add_option("--prompt-ids", opt->prompt_ids, "Prompt as token ids, e.g. 1,2,3");
    prompt_opt->excludes(prompt_ids_opt);
    cmd->add_option("-n,--max-tokens", opt->n, "Tokens to generate")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    cmd->add_option("--temperature", opt->sampling.temperature, "Sampling temperature (0: greedy)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cmd->add_option("--top-k", opt->sampling.top_k, "Keep the k most likely tokens (0: off)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cmd->add_option("--top-p", opt->sampling.top_p, "Nucleus sampling mass (1: off)")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    cmd->add_option("--min-p", opt->sampling.min_p, "Drop tokens below min-p x the top probability")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    cmd->add_option("--repetition-penalty", opt->sampling.repetition_penalty,
                    "Penalty for tokens already in the prompt or output (1: off)")
        ->capture_default_str();
    cmd->add_option("--presence-penalty", opt->sampling.presence_penalty,
                    "Subtracted once from tokens already generated")
        ->capture_default_str();
    cmd->add_option("--frequency-penalty", opt->sampling.frequency_penalty,
                    "Subtracted per occurrence from tokens already generated")
        ->capture_default_str();
    // (One value per use: by default a vector option would take the prompt that follows too.)
    cmd->add_option("--logit-bias", opt->logit_bias,
                    "ID=BIAS: add BIAS (in [-100, 100]) to token ID's logit (repeatable)")
        ->allow_extra_args(false);
    cmd->add_option("--seed", opt->seed, "Random seed (default: random, printed on stderr)");
    cmd->add_flag("--greedy", opt->sampling.greedy, "Always take the most likely token");
    cmd->add_option("--stop", opt->stop, "Stop before this string (repeatable)")
        ->allow_extra_args(false);
    cmd->add_flag("--ignore-eos", opt->ignore_eos, "Keep going after the end-of-text token");
    cmd->add_flag("--ids", opt->ids, "Print generated token ids instead of text");
    add_backend_flags(cmd, &opt->backend);

    return [opt]() {
        if (opt->prompt.empty() && opt->prompt_ids.empty()) {
            std::fprintf(stderr,
                         "duality generate: give a prompt (TEXT, -p TEXT or --prompt TEXT) or "
                         "--prompt-ids 1,2,3\n");
            return 2;
        }
        if (opt->ids && !opt->stop.empty()) {
            std::fprintf(stderr,
                         "duality generate: --stop matches text; it cannot be used with "
                         "--ids (which prints token ids)\n");
            return 2;
        }
        for (const std::string& entry : opt->logit_bias) {
            const size_t eq = entry.find('=');
            char* end = nullptr;
            const long id = eq == std::string::npos ? -1 : std::strtol(entry.c_str(), &end, 10);
            const char* bias_text = eq == std::string::npos ? "" : entry.c_str() + eq + 1;
            char* bias_end = nullptr;
            const float bias = std::strtof(bias_text, &bias_end);
            if (eq == 0 || eq == std::string::npos || end != entry.c_str() + eq || id < 0 ||
                id > INT32_MAX || *bias_text == '\0' || *bias_end != '\0') {
                std::fprintf(stderr,
                             "duality generate: --logit-bias takes ID=BIAS (e.g. 50256=-100), "
                             "got '%s'\n",
                             entry.c_str());
                return 2;
            }
            opt->sampling.logit_bias.emplace_back(static_cast<int32_t>(id), bias);
        }
        if (Status s = opt->sampling.validate(); !s.is_ok()) {
            std::fprintf(stderr, "duality generate: %s\n", s.message().c_str());
            return 2;
        }
        auto loaded = load_text_model(opt->model, to_load_options(opt->backend));
        if (!loaded) return 1;
        auto& model = loaded->model;
        auto& tokenizer = loaded->tokenizer;
        std::vector<int32_t> prompt;
        if (!opt->prompt_ids.empty()) {
            if (!parse_id_list("--prompt-ids", opt->prompt_ids, &prompt)) return 2;
        } else {
            prompt = tokenizer.encode(opt->prompt);
        }
        if (prompt.empty()) {
            std::fprintf(stderr, "duality generate: the prompt encodes to no tokens\n");
            return 2;
        }
        SamplingParams sampling = opt->sampling;
        sampling.seed = opt->seed ? *opt->seed : std::random_device{}();
        if (!opt->seed && !sampling.is_greedy())
            std::fprintf(stderr, "[seed %llu]\n", static_cast<unsigned long long>(sampling.seed));
        // Only ids the tokenizer knows may be sampled (HF configs count padded rows as vocab).
        const int64_t V = model->config().vocab_size;
        const int64_t n_valid = std::min<int64_t>(V, tokenizer.vocab_size());
        for (const auto& [id, bias] : sampling.logit_bias)
            if (id >= n_valid) {
                std::fprintf(stderr,
                             "duality generate: --logit-bias %d: not a token id of this model "
                             "(0 to %lld)\n",
                             id, static_cast<long long>(n_valid - 1));
                return 2;
            }
        // The end-of-text id: config.json's eos_token_id, else the tokenizer's <|endoftext|>.
        const int64_t config_eos = model->config().eos_token_id;
        const int32_t eos = opt->ignore_eos   ? -1
                            : config_eos >= 0 ? static_cast<int32_t>(config_eos)
                                              : tokenizer.eos_id().value_or(-1);

        // The sequence lives in the model's state slot 0 (on the GPU with --device cuda).
        if (Status s = model->reset_slot(0); !s.is_ok()) {
            std::fprintf(stderr, "duality: %s\n", s.message().c_str());
            return 1;
        }
        StreamDecoder stream(tokenizer);
        StopStrings stops(opt->stop);
        std::vector<int32_t> output;
        // Prints one generated token; false where generation ends here (the end-of-text id, a
        // stop string, or --max-tokens reached).
        auto emit = [&](int32_t token) {
            if (token == eos) return false;
            output.push_back(token);
            if (opt->ids) {
                std::printf("%s%d", output.size() > 1 ? "," : "", token);
            } else {
                std::fputs(stops.push(stream.push(token)).c_str(), stdout);
                if (stops.stopped()) return false;
            }
            std::fflush(stdout);
            return static_cast<int>(output.size()) < opt->n;
        };
        auto print_prompt = [&] {
            if (!opt->ids)
                std::fputs(opt->prompt_ids.empty() ? opt->prompt.c_str()
                                                   : tokenizer.decode(prompt).c_str(),
                           stdout);
            std::fflush(stdout);
        };
        double prompt_s = 0;
        Clock::time_point t_gen;
        // Greedy without penalties: the argmax where the model runs (no logits to the host),
        // through Model::decode_greedy: one step at a time, or where the model feeds its ids on
        // the device (DeviceInfo::device_loop) blocks of kDeviceBlock steps without a host round
        // trip between them (the model may then run a few steps past an end; its state is not
        // used again, but the generation time includes them).
        const bool device_greedy = sampling.is_greedy() && !sampling.has_penalties();
        if (device_greedy) {
            constexpr int kDeviceBlock = 16;
            const int block_steps = model->device_info().device_loop ? kDeviceBlock : 1;
            SamplingParams greedy;
            greedy.greedy = true;
            const uint64_t draw = 0;
            const SeqInput prompt_in{0, prompt};
            const auto t_prompt = Clock::now();
            auto first = model->step_sample(std::span<const SeqInput>(&prompt_in, 1),
                                            std::span<const SamplingParams>(&greedy, 1),
                                            std::span<const uint64_t>(&draw, 1));
            if (!first) {
                std::fprintf(stderr, "duality: %s\n", first.status().message().c_str());
                return 1;
            }
            prompt_s = seconds_since(t_prompt);
            print_prompt();
            t_gen = Clock::now();
            std::vector<int32_t> block = std::move(*first);
            for (;;) {
                bool more = true;
                for (int32_t token : block)
                    if (!(more = emit(token))) break;
                if (!more) break;
                const int32_t last = output.back();
                const SeqInput in{0, std::span<const int32_t>(&last, 1)};
                auto ids = model->decode_greedy(
                    std::span<const SeqInput>(&in, 1),
                    std::min(block_steps, opt->n - static_cast<int>(output.size())));
                if (!ids) {
                    std::fprintf(stderr, "\nduality: %s\n", ids.status().message().c_str());
                    return 1;
                }
                block = std::move(*ids);
            }
        } else {
            auto advance = [&](std::span<const int32_t> tokens) {
                const SeqInput in{0, tokens};
                return model->step(std::span<const SeqInput>(&in, 1));
            };
            const auto t_prompt = Clock::now();
            auto logits = advance(prompt);
            if (!logits) {
                std::fprintf(stderr, "duality: %s\n", logits.status().message().c_str());
                return 1;
            }
            prompt_s = seconds_since(t_prompt);
            print_prompt();
            Sampler sampler(sampling);
            t_gen = Clock::now();
            for (;;) {
                const int32_t token = sampler.sample(
                    std::span<float>(logits->data(), static_cast<size_t>(n_valid)), prompt, output);
                if (!emit(token)) break;
                logits = advance(std::span<const int32_t>(&token, 1));
                if (!logits) {
                    std::fprintf(stderr, "\nduality: %s\n", logits.status().message().c_str());
                    return 1;
                }
            }
        }
        const double gen_s = seconds_since(t_gen);
        if (!opt->ids) std::fputs(stops.push(stream.flush()).c_str(), stdout);
        if (!opt->ids) std::fputs(stops.flush().c_str(), stdout);
        std::fputs("\n", stdout);
        std::fflush(stdout);
        std::fprintf(stderr,
                     "prompt: %zu tokens in %.3f s (%.1f tokens/s); generation: %zu "
                     "tokens in %.3f s (%.1f tokens/s)\n",
                     prompt.size(), prompt_s, prompt.size() / std::max(prompt_s, 1e-9),
                     output.size(), gen_s, output.size() / std::max(gen_s, 1e-9));
        return 0;
    };
}

}  // namespace duality::cli
