// `duality serve`: the OpenAI-compatible HTTP server (docs/server.md).
#include <pthread.h>
#include <signal.h>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <thread>

#include "duality/engine.h"
#include "engine/roofline.h"
#include "server/server.h"
#include "tools/duality/commands.h"

namespace duality::cli {

namespace {
// --state-memory and --cache-memory: at most 1e9 MB (a petabyte), far above any machine, and low
// enough that byte counts and slot counts derived from them cannot overflow.
constexpr double kMaxMegabytes = 1e9;
// State slots in all (--max-seqs + --cache-slots, each also capped at this).
constexpr int kMaxSlots = 65536;
}  // namespace

Action add_serve_command(CLI::App& app) {
    struct Options {
        std::string model, served_name, host = "127.0.0.1", config;
        bool random_weights = false;
        int port = 8000;
        BackendFlags backend;
        int max_seqs = 0, max_queue = 1024, cache_slots = -1, http_threads = 128;
        int64_t max_batch_tokens = 0, prefill_chunk = 0, max_prompt_tokens = 32768;
        int64_t max_tokens_limit = 4096, checkpoint_every = 0, max_body_kb = 1024;
        int64_t template_max_output =
            static_cast<int64_t>(server::jinja::Limits{}.max_output_bytes);
        double state_memory_mb = 0, cache_memory_mb = -1, cache_ttl_s = 3600;
        double request_timeout_s = 600, shutdown_grace_s = 10;
    };
    auto opt = std::make_shared<Options>();
    CLI::App* cmd = app.add_subcommand(
        "serve", "Serve the model over HTTP (OpenAI-compatible; see docs/server.md)");
    auto* model =
        cmd->add_option("--model", opt->model, "Model folder (default: the bundled model)");
    auto* random = cmd->add_flag("--random-weights", opt->random_weights,
                                 "Serve a preset shape with random weights (benchmarks; the "
                                 "bundled model's tokenizer)");
    auto* config_opt = cmd->add_option(
        "--config", opt->config, "Preset shape for --random-weights: mamba2-130m ... mamba2-2.7b");
    random->needs(config_opt);
    config_opt->needs(random);
    model->excludes(random);
    cmd->add_option("--served-model-name", opt->served_name,
                    "The model id clients send (default: the folder's name)");
    cmd->add_option("--host", opt->host, "Address to listen on")->capture_default_str();
    cmd->add_option("--port", opt->port, "Port (0: any free port, printed on stderr)")
        ->check(CLI::Range(0, 65535))
        ->capture_default_str();
    add_backend_flags(cmd, &opt->backend);
    cmd->add_option("--max-seqs", opt->max_seqs,
                    "Sequences running at once (default 16 on the CPU, 64 on the GPU)")
        ->check(CLI::Range(1, kMaxSlots));
    cmd->add_option("--state-memory", opt->state_memory_mb,
                    "Size the running-sequence slot pool from this many MB instead of --max-seqs")
        ->check(number_in(0, kMaxMegabytes, "MB"));
    cmd->add_option("--max-queue", opt->max_queue, "Waiting sequences before HTTP 503")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    cmd->add_option("--max-batch-tokens", opt->max_batch_tokens,
                    "Tokens per engine step (default 1024 on the CPU, 8192 on the GPU)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
    cmd->add_option("--prefill-chunk", opt->prefill_chunk,
                    "Prefill pieces end at multiples of this (default 256 on the CPU, 2048 on "
                    "the GPU)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
    cmd->add_option("--max-prompt-tokens", opt->max_prompt_tokens, "Longer prompts get HTTP 400")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 24))
        ->capture_default_str();
    cmd->add_option("--max-tokens-limit", opt->max_tokens_limit,
                    "The largest max_tokens a request may ask for")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 24))
        ->capture_default_str();
    cmd->add_option("--cache-memory", opt->cache_memory_mb,
                    "Host MB for cached conversation states (default 256 on the CPU, 0 on the "
                    "GPU, whose cache lives in --cache-slots); 0 given explicitly turns the "
                    "cache off")
        ->check(number_in(0, kMaxMegabytes, "MB"));
    cmd->add_option("--cache-slots", opt->cache_slots,
                    "Device state slots for the most recent cached states (default 0 on the "
                    "CPU, --max-seqs on the GPU)")
        ->check(CLI::Range(0, kMaxSlots));
    cmd->add_option("--cache-ttl", opt->cache_ttl_s, "Drop cached states unused for S seconds")
        ->check(seconds_in(1e7, false))
        ->capture_default_str();
    cmd->add_option("--checkpoint-every", opt->checkpoint_every,
                    "Also cache the state every K prompt tokens (a multiple of --prefill-chunk)")
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--request-timeout", opt->request_timeout_s,
                    "Cancel requests running longer than S seconds")
        ->check(seconds_in(1e7, false))
        ->capture_default_str();
    cmd->add_option("--max-body", opt->max_body_kb, "Larger request bodies (KB) get HTTP 413")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
        ->capture_default_str();
    cmd->add_option("--template-max-output", opt->template_max_output,
                    "The longest prompt (bytes) a model's Jinja chat template may render; longer "
                    "ones get HTTP 400")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
        ->capture_default_str();
    cmd->add_option("--http-threads", opt->http_threads,
                    "Connections served at once; N/8 of them (1 to 16) are kept from generation "
                    "requests, for /health and /metrics")
        ->check(CLI::Range(2, 4096))
        ->capture_default_str();
    cmd->add_option("--shutdown-grace", opt->shutdown_grace_s,
                    "On SIGTERM/SIGINT, let running requests finish for S seconds")
        ->check(seconds_in(1e7, true))
        ->capture_default_str();

    return [opt]() {
        // SIGTERM and SIGINT are taken by one thread (sigwait) that shuts the server down. Block
        // them first, so that every thread started from here on (the CUDA runtime's, OpenMP's,
        // the engine's, the HTTP pool's) inherits the mask and none of them dies of the signal.
        sigset_t signals;
        sigemptyset(&signals);
        sigaddset(&signals, SIGTERM);
        sigaddset(&signals, SIGINT);
        pthread_sigmask(SIG_BLOCK, &signals, nullptr);
        signal(SIGPIPE, SIG_IGN);

        LoadOptions lo = to_load_options(opt->backend);
        const bool gpu = lo.device == Device::kCuda;
        const std::string dir = opt->model.empty() ? default_model_dir() : opt->model;
        auto config = opt->random_weights ? preset_config(opt->config) : load_model_config(dir);
        if (!config) {
            std::fprintf(stderr, "duality serve: %s\n", config.status().message().c_str());
            return 1;
        }
        // The tokenizer: the model's own, or the bundled model's for random weights.
        const std::string tok_dir = opt->random_weights ? default_model_dir() : dir;
        auto tokenizer = Tokenizer::load(tok_dir);
        if (!tokenizer) {
            std::fprintf(stderr, "duality serve: %s\n", tokenizer.status().message().c_str());
            return 1;
        }
        if (Status s = tokenizer->check_fits_model(config->vocab_padded); !s.is_ok()) {
            std::fprintf(stderr, "duality serve: %s%s\n", s.message().c_str(),
                         opt->random_weights
                             ? " (--random-weights serves the bundled model's tokenizer, which "
                               "fits the mamba2-* presets)"
                             : "");
            return 1;
        }
        server::jinja::Limits template_limits;
        template_limits.max_output_bytes = static_cast<size_t>(opt->template_max_output);
        auto tmpl = opt->random_weights
                        ? Result<server::ChatTemplate>(server::ChatTemplate::plain())
                        : server::ChatTemplate::load(dir, template_limits);
        if (!tmpl) {
            std::fprintf(stderr, "duality serve: %s\n", tmpl.status().message().c_str());
            return 1;
        }

        EngineOptions eo;
        eo.max_queue = opt->max_queue;
        eo.max_batch_tokens = opt->max_batch_tokens > 0 ? opt->max_batch_tokens : gpu ? 8192 : 1024;
        eo.prefill_chunk = opt->prefill_chunk > 0 ? opt->prefill_chunk : gpu ? 2048 : 256;
        eo.max_seqs = opt->max_seqs > 0 ? opt->max_seqs : gpu ? 64 : 16;
        // On the GPU the cache lives in spare device slots (restored by a device copy); spilling
        // a state to host memory costs a device-to-host copy of the whole state, so it is opt-in.
        eo.cache_slots = opt->cache_slots >= 0 ? opt->cache_slots : gpu ? eo.max_seqs : 0;
        const double cache_mb = opt->cache_memory_mb >= 0 ? opt->cache_memory_mb : gpu ? 0 : 256;
        eo.cache_host_bytes = static_cast<int64_t>(cache_mb * 1024 * 1024);
        if (opt->cache_memory_mb == 0) eo.cache_slots = 0;  // --cache-memory 0: no cache at all
        eo.checkpoint_every = opt->checkpoint_every;
        eo.cache_ttl_s = opt->cache_ttl_s;
        if (opt->state_memory_mb > 0) {
            const int64_t per_seq = roofline::state_slot_bytes(
                *config, lo.device == Device::kCuda ? lo.state_dtype : DType::kF32);
            const double fits = opt->state_memory_mb * 1024 * 1024 / static_cast<double>(per_seq);
            if (fits < 1) {
                std::fprintf(stderr,
                             "duality serve: --state-memory %g MB holds no sequence (one needs "
                             "%.1f MB)\n",
                             opt->state_memory_mb, per_seq / 1048576.0);
                return 2;
            }
            if (fits > kMaxSlots) {
                std::fprintf(
                    stderr,
                    "duality serve: --state-memory %g MB holds %.0f sequences (%.1f MB "
                    "each), more than %d (the most --max-seqs allows); give at most %.0f MB\n",
                    opt->state_memory_mb, std::floor(fits), per_seq / 1048576.0, kMaxSlots,
                    std::floor(kMaxSlots * (per_seq / 1048576.0)));
                return 2;
            }
            eo.max_seqs = static_cast<int>(fits);
        }
        if (eo.max_seqs + eo.cache_slots > kMaxSlots) {
            const std::string seqs_from = opt->state_memory_mb > 0 ? " (from --state-memory)" : "";
            const std::string slots_from =
                opt->cache_slots >= 0 ? "" : " (the GPU's default: --max-seqs)";
            std::fprintf(stderr,
                         "duality serve: --max-seqs %d%s + --cache-slots %d%s = %d state slots, "
                         "more than %d; give fewer\n",
                         eo.max_seqs, seqs_from.c_str(), eo.cache_slots, slots_from.c_str(),
                         eo.max_seqs + eo.cache_slots, kMaxSlots);
            return 2;
        }
        eo.sample_vocab = std::min<int64_t>(config->vocab_size, tokenizer->vocab_size());
        lo.n_slots = eo.max_seqs + eo.cache_slots;
        lo.max_tokens = std::max<int64_t>(eo.max_batch_tokens, 8192);
        lo.sample_vocab = eo.sample_vocab;
        if (Status s = eo.validate(lo.n_slots); !s.is_ok()) {
            std::fprintf(stderr, "duality serve: %s\n", s.message().c_str());
            return 2;
        }

        std::fprintf(stderr, "duality serve: loading %s on the %s ...\n",
                     opt->random_weights ? opt->config.c_str() : dir.c_str(), gpu ? "GPU" : "CPU");
        auto m = opt->random_weights ? Model::random(*config, lo, 1) : Model::load(dir, lo);
        if (!m) {
            std::fprintf(stderr, "duality serve: %s\n", m.status().message().c_str());
            return 1;
        }
        auto engine = Engine::start(**m, eo);
        if (!engine) {
            std::fprintf(stderr, "duality serve: %s\n", engine.status().message().c_str());
            return 1;
        }

        server::ServerOptions so;
        so.host = opt->host;
        so.port = opt->port;
        so.http_threads = opt->http_threads;
        so.max_body_bytes = opt->max_body_kb * 1024;
        so.request_timeout_s = opt->request_timeout_s;
        so.shutdown_grace_s = opt->shutdown_grace_s;
        so.limits.model_name = !opt->served_name.empty() ? opt->served_name
                               : opt->random_weights     ? opt->config
                                                         : model_folder_name(dir);
        so.limits.max_prompt_tokens = opt->max_prompt_tokens;
        so.limits.max_tokens_limit = opt->max_tokens_limit;
        so.limits.vocab_size = config->vocab_size;
        so.limits.sample_vocab = eo.sample_vocab;
        so.limits.max_queue = opt->max_queue;
        const int64_t config_eos = config->eos_token_id;
        const int32_t eos =
            config_eos >= 0 ? static_cast<int32_t>(config_eos) : tokenizer->eos_id().value_or(-1);

        server::Server srv(**engine, std::move(*tokenizer), std::move(*tmpl), eos, so);
        auto port = srv.bind();
        if (!port) {
            std::fprintf(stderr, "duality serve: %s\n", port.status().message().c_str());
            return 1;
        }
        std::atomic<bool> signalled{false};
        std::thread waiter([&srv, &signalled, signals] {
            int sig = 0;
            sigwait(&signals, &sig);
            signalled = true;
            std::fprintf(stderr, "duality serve: %s: finishing running requests, then exiting\n",
                         sig == SIGTERM ? "SIGTERM" : "SIGINT");
            srv.shutdown();
        });
        std::fprintf(stderr, "duality serve: listening on http://%s:%d (model %s, %s, %d slots)\n",
                     opt->host.c_str(), *port, so.limits.model_name.c_str(), gpu ? "cuda" : "cpu",
                     eo.max_seqs);
        std::fflush(stderr);
        srv.serve();
        if (!signalled) kill(getpid(), SIGTERM);  // serve() failed on its own: free the waiter
        waiter.join();
        std::fprintf(stderr, "duality serve: stopped\n");
        return 0;
    };
}

}  // namespace duality::cli
