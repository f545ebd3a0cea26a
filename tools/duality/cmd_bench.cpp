// `duality bench`: prefill and decode throughput of a model (a folder, or a preset shape with
// random weights) through the public batched API, each figure beside its roofline fraction; with
// --ops, the CUDA ops of one layer in the model's shapes. Table by default, --json for machines.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <span>

#include "core/profile_range.h"
#include "duality/model.h"
#include "engine/roofline.h"
#include "ops/op_bench.h"
#include "tools/duality/bench_report.h"
#include "tools/duality/commands.h"

namespace duality::cli {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

// "512,2k,8192" → {512, 2048, 8192}; false (with a message naming the flag) when malformed.
bool parse_size_list(const std::string& flag, const std::string& text, std::vector<int64_t>* out) {
    out->clear();
    size_t pos = 0;
    while (pos <= text.size()) {
        const size_t comma = std::min(text.find(',', pos), text.size());
        std::string item = text.substr(pos, comma - pos);
        int64_t scale = 1;
        if (!item.empty() && (item.back() == 'k' || item.back() == 'K')) {
            scale = 1024;
            item.pop_back();
        }
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || errno == ERANGE || v < 1 || v > (1LL << 30) / scale) {
            std::fprintf(stderr,
                         "duality bench: %s: \"%s\" is not a positive count (expected a list "
                         "like 1,8,32 or 512,2k)\n",
                         flag.c_str(), text.substr(pos, comma - pos).c_str());
            return false;
        }
        out->push_back(v * scale);
        pos = comma + 1;
    }
    return true;
}

struct Options {
    std::string model, config;
    bool random_weights = false;
    BackendFlags backend;
    std::string prefill_lens = "512,2048,8192,32768", prefill_batches = "1,8";
    std::string decode_batches = "1,8,32,64,256";
    int decode_steps = 32, warmup = 3, iters = 20, gemm_algos = 0;
    int64_t max_tokens = 8192;
    bool no_prefill = false, no_decode = false, json = false, ops = false;
    std::optional<double> hbm_gbps, peak_tflops;
    uint64_t seed = 0;
};

// The peaks: the table entry for the device, each figure replaced by its flag when given.
void set_peaks(const Options& o, bool cuda, BenchReport* r) {
    std::optional<roofline::DevicePeak> known;
    if (cuda) known = roofline::known_gpu_peak(r->info.name);
    if (known) {
        r->bytes_per_s = known->bytes_per_s;
        r->flops_per_s = known->flops_per_s;
        r->peak_source = "table";
    }
    if (o.hbm_gbps) r->bytes_per_s = *o.hbm_gbps * 1e9;
    if (o.peak_tflops) r->flops_per_s = *o.peak_tflops * 1e12;
    if (o.hbm_gbps || o.peak_tflops) r->peak_source = known ? "table+flags" : "flags";
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int64_t n, int64_t vocab) {
    std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int32_t& v : t) v = d(rng);
    return t;
}

// One step() of `batch` fresh sequences of `len` tokens, timed; repeated while short (at most 5
// runs, about 0.3 s), after one untimed warm-up run when warmup > 0.
PrefillResult bench_prefill(Model& model, const Options& o, int64_t batch, int64_t len,
                            std::mt19937_64& rng) {
    PrefillResult r{batch, len, 0, roofline::prefill_flops(model.config(), batch, len), ""};
    if (batch > model.n_slots()) {
        r.skipped = "batch above the " + std::to_string(model.n_slots()) +
                    " state slots that fit in memory";
        return r;
    }
    std::vector<std::vector<int32_t>> tokens;
    std::vector<SeqInput> in;
    for (int64_t s = 0; s < batch; ++s)
        tokens.push_back(random_tokens(rng, len, model.config().vocab_size));
    for (int64_t s = 0; s < batch; ++s) in.push_back({static_cast<int>(s), tokens[s]});
    auto run = [&]() -> Result<double> {
        for (int64_t s = 0; s < batch; ++s)
            DUALITY_RETURN_IF_ERROR(model.reset_slot(static_cast<int>(s)));
        const auto t0 = Clock::now();
        auto logits = model.step(in);
        if (!logits) return logits.status();
        return seconds_since(t0);
    };
    if (o.warmup > 0) {
        auto w = run();
        if (!w) {
            r.skipped = w.status().message();
            return r;
        }
    }
    int runs = 0;
    double total = 0;
    const ProfileRange range("bench_prefill");  // the timed runs (scripts/gpu-check.sh profile)
    while (runs < 5 && (runs == 0 || total < 0.3)) {
        auto t = run();
        if (!t) {
            r.skipped = t.status().message();
            return r;
        }
        total += *t;
        ++runs;
    }
    r.seconds = total / runs;
    return r;
}

// warmup + decode_steps greedy steps of `batch` one-token sequences, each step fed the previous
// step's ids: Model::decode_greedy, untimed for the warmup, then wall-clocked (it returns host
// ids, so each call is synchronous). That is one step_sample() per step, or, where the model
// feeds the ids on the device (DeviceInfo::device_loop), the steps queued back to back; there the
// warmup (when > 0) also makes one call of decode_steps, whose graphs (captured per call length)
// are then not timed.
DecodeResult bench_decode(Model& model, const Options& o, int64_t batch, DType weight_dtype,
                          DType state_dtype, std::mt19937_64& rng) {
    DecodeResult r;
    r.batch = batch;
    r.steps = o.decode_steps;
    r.bytes_per_step =
        roofline::decode_bytes(model.config(), weight_dtype, state_dtype).step(batch);
    if (batch > model.n_slots()) {
        r.skipped = "batch above the " + std::to_string(model.n_slots()) +
                    " state slots that fit in memory";
        return r;
    }
    std::vector<int32_t> next = random_tokens(rng, batch, model.config().vocab_size);
    std::vector<SeqInput> in(static_cast<size_t>(batch));
    for (int64_t s = 0; s < batch; ++s) {
        if (Status st = model.reset_slot(static_cast<int>(s)); !st.is_ok()) {
            r.skipped = st.message();
            return r;
        }
    }
    // `steps` steps from `next`, which then holds the last step's ids.
    auto run = [&](int steps) -> Status {
        if (steps == 0) return Status::ok();
        for (int64_t s = 0; s < batch; ++s)
            in[static_cast<size_t>(s)] = {
                static_cast<int>(s), std::span<const int32_t>(&next[static_cast<size_t>(s)], 1)};
        DUALITY_ASSIGN_OR_RETURN(std::vector<int32_t> ids, model.decode_greedy(in, steps));
        next.assign(ids.end() - batch, ids.end());
        return Status::ok();
    };
    const bool loop_warmup = o.warmup > 0 && model.device_info().device_loop;
    for (const int steps : {o.warmup, loop_warmup ? o.decode_steps : 0}) {
        if (Status st = run(steps); !st.is_ok()) {
            r.skipped = st.message();
            return r;
        }
    }
    std::optional<ProfileRange> range;  // the timed steps (scripts/gpu-check.sh profile)
    range.emplace("bench_decode");
    const Clock::time_point t0 = Clock::now();
    if (Status st = run(o.decode_steps); !st.is_ok()) {
        r.skipped = st.message();
        return r;
    }
    r.seconds = seconds_since(t0);
    return r;
}

// Loads the model with n_slots state slots; on CUDA, halves the slots while memory runs out.
Result<std::unique_ptr<Model>> load_model(const Options& o, const std::string& dir,
                                          const ModelConfig& config, LoadOptions lo) {
    for (;;) {
        auto m = o.random_weights ? Model::random(config, lo, o.seed) : Model::load(dir, lo);
        if (m || m.status().code() != StatusCode::kResourceExhausted || lo.n_slots <= 1) return m;
        lo.n_slots /= 2;
    }
}

int run_bench(const Options& o) {
    std::vector<int64_t> lens, prefill_batches, decode_batches;
    if (!parse_size_list("--prefill-lens", o.prefill_lens, &lens) ||
        !parse_size_list("--prefill-batches", o.prefill_batches, &prefill_batches) ||
        !parse_size_list("--decode-batches", o.decode_batches, &decode_batches))
        return 2;
    if (o.no_prefill) lens.clear();
    if (o.no_decode) decode_batches.clear();
    if ((o.hbm_gbps && !(*o.hbm_gbps > 0)) || (o.peak_tflops && !(*o.peak_tflops > 0))) {
        std::fprintf(stderr, "duality bench: --hbm-gbps and --peak-tflops must be > 0\n");
        return 2;
    }
    const std::string model_dir = o.model.empty() ? default_model_dir() : o.model;
    auto config = o.random_weights ? preset_config(o.config) : load_model_config(model_dir);
    if (!config) {
        std::fprintf(stderr, "duality bench: %s\n", config.status().message().c_str());
        return o.random_weights ? 2 : 1;
    }
    LoadOptions lo = to_load_options(o.backend);
    const bool cuda = lo.device == Device::kCuda;
    BenchReport r;
    r.model = o.random_weights ? o.config : model_dir;
    r.random_weights = o.random_weights;
    r.backend = cuda ? "cuda" : "cpu";
    // The CPU backend computes in f32 whatever --dtype says.
    const DType weight_dtype = cuda ? lo.dtype : DType::kF32;
    const DType state_dtype = cuda ? lo.state_dtype : DType::kF32;
    r.dtype = std::string(dtype_name(weight_dtype));
    r.state_dtype = std::string(dtype_name(state_dtype));

    if (o.ops) {
        if (!cuda) {
            std::fprintf(stderr,
                         "duality bench: --ops times the CUDA kernels: it needs a GPU "
                         "(--device cuda)\n");
            return 2;
        }
        OpBenchOptions oo;
        oo.config = *config;
        oo.act = lo.dtype;
        oo.state_dtype = lo.state_dtype;
        oo.token_counts = lens;
        oo.decode_batches = decode_batches;
        oo.warmup = o.warmup;
        oo.iters = o.iters;
        oo.gemm_algos = o.gemm_algos;
        oo.device_index = lo.device_index;
        oo.seed = o.seed;
        auto ops = run_op_bench(oo);
        if (!ops) {
            std::fprintf(stderr, "duality bench: %s\n", ops.status().message().c_str());
            return 1;
        }
        r.info.name = ops->device;
        r.ops = std::move(ops->rows);
        set_peaks(o, cuda, &r);
        std::fputs((o.json ? render_json(r) : render_table(r)).c_str(), stdout);
        return 0;
    }

    int64_t slots = 1;
    if (!lens.empty())
        slots = std::max(slots, *std::max_element(prefill_batches.begin(), prefill_batches.end()));
    if (!decode_batches.empty())
        slots = std::max(slots, *std::max_element(decode_batches.begin(), decode_batches.end()));
    lo.n_slots = static_cast<int>(slots);
    lo.max_tokens = o.max_tokens;
    auto model = load_model(o, model_dir, *config, lo);
    if (!model) {
        std::fprintf(stderr, "duality bench: %s\n", model.status().message().c_str());
        return 1;
    }
    r.info = (*model)->device_info();
    r.n_slots = (*model)->n_slots();
    set_peaks(o, cuda, &r);

    std::mt19937_64 rng(o.seed);
    for (int64_t len : lens)
        for (int64_t b : prefill_batches)
            r.prefill.push_back(bench_prefill(**model, o, b, len, rng));
    for (int64_t b : decode_batches)
        r.decode.push_back(bench_decode(**model, o, b, weight_dtype, state_dtype, rng));
    std::fputs((o.json ? render_json(r) : render_table(r)).c_str(), stdout);
    return 0;
}

}  // namespace

Action add_bench_command(CLI::App& app) {
    auto opt = std::make_shared<Options>();
    CLI::App* cmd = app.add_subcommand(
        "bench", "Prefill and decode throughput (or per-op GPU timings) with roofline fractions");
    auto* model =
        cmd->add_option("--model", opt->model, "Model folder (default: the bundled model)");
    auto* random = cmd->add_flag("--random-weights", opt->random_weights,
                                 "Random weights in the shape of --config (no checkpoint needed)");
    auto* config = cmd->add_option("--config", opt->config,
                                   "Preset shape for --random-weights: mamba2-130m, -370m, "
                                   "-780m, -1.3b, -2.7b, codestral-7b");
    random->needs(config);
    config->needs(random);
    model->excludes(random);
    add_backend_flags(cmd, &opt->backend);
    cmd->add_option("--prefill-lens", opt->prefill_lens, "Prompt lengths to prefill (k = 1024)")
        ->capture_default_str();
    cmd->add_option("--prefill-batches", opt->prefill_batches, "Sequences per prefill step")
        ->capture_default_str();
    cmd->add_option("--decode-batches", opt->decode_batches, "Sequences per decode step")
        ->capture_default_str();
    cmd->add_option("--decode-steps", opt->decode_steps, "Timed decode steps per batch")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    cmd->add_option("--warmup", opt->warmup,
                    "Untimed decode steps (and op launches) first (with the device loop also "
                    "one call of --decode-steps); prefill: one untimed run when > 0")
        ->check(CLI::Range(0, 1 << 20))
        ->capture_default_str();
    cmd->add_option("--iters", opt->iters, "Timed launches per op (--ops)")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    cmd->add_option("--gemm-algos", opt->gemm_algos,
                    "With --ops: also time the first N cuBLASLt candidates of each GEMM "
                    "(rows in_proj/lt0, lt1, ...)")
        ->check(CLI::Range(0, 8));
    cmd->add_option("--max-tokens", opt->max_tokens,
                    "Tokens per forward pass (longer prefills run in pieces; sizes the workspace)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 24))
        ->capture_default_str();
    cmd->add_flag("--no-prefill", opt->no_prefill, "Skip the prefill measurements");
    cmd->add_flag("--no-decode", opt->no_decode, "Skip the decode measurements");
    cmd->add_flag("--ops", opt->ops,
                  "Time the CUDA ops of one layer instead (in_proj/out_proj GEMMs, conv1d, "
                  "ssd_chunked at each prefill length; the same and ssm_decode at each decode "
                  "batch)");
    cmd->add_option("--hbm-gbps", opt->hbm_gbps,
                    "Peak memory bandwidth in GB/s (default: the table entry for the GPU)");
    cmd->add_option("--peak-tflops", opt->peak_tflops,
                    "Peak dense bf16 TFLOP/s (default: the table entry for the GPU)");
    cmd->add_flag("--json", opt->json, "Print the results as JSON");
    cmd->add_option("--seed", opt->seed, "Seed of the random weights and tokens")
        ->capture_default_str();
    return [opt]() { return run_bench(*opt); };
}

}  // namespace duality::cli
