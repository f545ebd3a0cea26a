// Tokenizer throughput on gutenberg-valid.txt (English prose), reported as bytes/s of text:
//   encode/cold   a fresh word cache every iteration (BPE runs for every distinct word)
//   encode/warm   the cache already holds the text's words (steady state of a server)
//   decode        ids -> text
// Environment: DUALITY_BENCH_TEXT and DUALITY_BENCH_TOKENIZER override the input files.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "duality/tokenizer.h"

namespace {

std::string env_or(const char* name, const std::string& fallback) {
    const char* v = std::getenv(name);
    return v && *v ? v : fallback;
}

const std::string& text() {
    static const std::string t = [] {
        const std::string path = env_or("DUALITY_BENCH_TEXT", std::string(DUALITY_SHARED_DIR) +
                                                                  "/data/eval/gutenberg-valid.txt");
        std::ifstream in(path, std::ios::binary);
        if (!in) {
            std::fprintf(stderr, "cannot read %s\n", path.c_str());
            std::exit(1);
        }
        std::ostringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }();
    return t;
}

duality::Result<duality::Tokenizer> load() {
    return duality::Tokenizer::load(
        env_or("DUALITY_BENCH_TOKENIZER",
               std::string(DUALITY_SOURCE_DIR) + "/models/mamba2-gutenberg-17m"));
}

const duality::Tokenizer& tokenizer() {
    static const duality::Tokenizer t = [] {
        auto r = load();
        if (!r) {
            std::fprintf(stderr, "%s\n", r.status().message().c_str());
            std::exit(1);
        }
        return *r;
    }();
    return t;
}

void BM_EncodeCold(benchmark::State& state) {
    const std::string& t = text();
    for (auto _ : state) {
        state.PauseTiming();
        auto tok = load();  // a fresh, empty cache
        state.ResumeTiming();
        benchmark::DoNotOptimize(tok->encode(t));
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * t.size()));
}
BENCHMARK(BM_EncodeCold)->Name("encode/cold")->Unit(benchmark::kMillisecond)->Iterations(5);

void BM_EncodeWarm(benchmark::State& state) {
    const std::string& t = text();
    const duality::Tokenizer& tok = tokenizer();
    benchmark::DoNotOptimize(tok.encode(t));
    for (auto _ : state) benchmark::DoNotOptimize(tok.encode(t));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * t.size()));
}
BENCHMARK(BM_EncodeWarm)->Name("encode/warm")->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
    const std::string& t = text();
    const duality::Tokenizer& tok = tokenizer();
    const std::vector<int32_t> ids = tok.encode(t);
    for (auto _ : state) benchmark::DoNotOptimize(tok.decode(ids));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * t.size()));
}
BENCHMARK(BM_Decode)->Name("decode")->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
