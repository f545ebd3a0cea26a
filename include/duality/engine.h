// The serving engine: a request queue and a scheduler thread that runs continuous batching over a
// Model's state slots, with a conversation state cache.
//
// Each step the scheduler (1) drops cancelled and timed-out sequences, (2) admits waiting
// sequences into free slots, resuming each from the longest cached state whose tokens prefix its
// prompt, (3) runs one Model::step_sample over the decode token of every running sequence plus
// prefill pieces of new ones under a token budget (prefill packed without padding), and (4) hands
// each sequence its new token (through a courier thread, so that waking clients does not delay
// the next step). Prefill pieces end at multiples of `prefill_chunk` tokens of the
// sequence, so a sequence is computed the same way whatever else shares its steps.
//
// Token level only: text, stop strings and HTTP live in src/server/.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "duality/model.h"
#include "duality/sampling.h"
#include "duality/status.h"

namespace duality {

using SteadyClock = std::chrono::steady_clock;

struct EngineOptions {
    int max_seqs = 16;                // sequences running at once (in model slots [0, max_seqs +
                                      // cache_slots): see cache_slots)
    int max_queue = 1024;             // waiting sequences beyond which submit() fails
    int64_t max_batch_tokens = 1024;  // tokens per step: decode tokens + prefill pieces
    int64_t prefill_chunk = 256;      // prefill pieces end at multiples of this
    int64_t sample_vocab = 0;         // ids below this may be sampled (0: the whole vocabulary)
    // The conversation state cache.
    int64_t cache_host_bytes = 256 << 20;  // host memory for cached states; 0 with no cache
                                           // slots disables the cache
    int cache_slots = 0;           // model slots that hold the most recently used cached states
                                   // on the device ([max_seqs, max_seqs + cache_slots) at first;
                                   // a finished sequence's slot is adopted by the cache, which
                                   // hands one of its own to the engine, so the sets change)
    int64_t checkpoint_every = 0;  // also cache every K prompt tokens (a multiple of
                                   // prefill_chunk); 0: only at prompt end and finish
    double cache_ttl_s = 3600;     // cached states unused this long are dropped

    Status validate(int model_slots) const;
};

struct GenerateRequest {
    std::vector<int32_t> prompt;    // at least one token
    int64_t max_tokens = 16;        // >= 1
    SamplingParams sampling;        // penalties are applied on the host when set
    int32_t eos_id = -1;            // the sequence stops after this token (-1: never)
    std::vector<int32_t> stop_ids;  // ... and after any of these (vLLM's stop_token_ids)
    SteadyClock::time_point deadline = SteadyClock::time_point::max();
    bool use_cache = true;  // resume from and add to the state cache
    // Log-probabilities (sampling.h): -1 none; k in [0, kMaxTopLogprobs]: each generated token's,
    // with the k most likely ids beside it. Such sequences sample on the host, like penalties.
    int logprobs = -1;
    // Also each prompt token's from the second on (needs logprobs >= 0). The prompt then runs
    // from its start, not from a cached prefix: all but its last token through
    // Model::step_all_logits, a piece of at most prefill_chunk (and 512) tokens per scheduler turn.
    bool prompt_logprobs = false;
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kTimeout, kError };
const char* to_string(FinishReason reason);  // "stop", "length", "cancelled", ...

// One sequence's output channel, shared by the engine (which appends) and its client (which
// takes). Safe to use from any thread.
class Sequence {
  public:
    // Waits until there are new tokens or the sequence has finished, at most until `until`;
    // appends the new tokens to *out, and their log-probabilities to *logprobs where the request
    // asked for them (GenerateRequest::logprobs). Returns true once finished and every token was
    // taken.
    bool wait(std::vector<int32_t>* out, SteadyClock::time_point until,
              std::vector<TokenLogprobs>* logprobs = nullptr);
    // The prompt's log-probabilities (GenerateRequest::prompt_logprobs), one per prompt token from
    // the second on; complete before the first generated token arrives (fewer only when the
    // sequence ended before its prompt was scored).
    std::vector<TokenLogprobs> prompt_logprobs() const;
    // Asks the engine to stop this sequence; idempotent (the first reason stays). `reason` is
    // what it finishes with, and what the metrics count: kCancelled (the client is gone) or kStop
    // (the client found a stop string in the text).
    void cancel(FinishReason reason = FinishReason::kCancelled);
    FinishReason cancel_reason() const;  // kNone until cancel()

    FinishReason finish_reason() const;
    std::string error() const;  // for kError
    int64_t prompt_tokens() const { return prompt_tokens_; }
    int64_t cached_tokens() const;  // prompt tokens whose state came from the cache

    // Engine side.
    explicit Sequence(int64_t prompt_tokens) : prompt_tokens_(prompt_tokens) {}
    void push(int32_t token, const TokenLogprobs* logprobs = nullptr);
    void add_prompt_logprobs(std::vector<TokenLogprobs> logprobs);
    void set_cached_tokens(int64_t n);
    void finish(FinishReason reason, std::string error = {});

  private:
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::vector<int32_t> pending_;
    std::vector<TokenLogprobs> pending_logprobs_, prompt_logprobs_;
    FinishReason reason_ = FinishReason::kNone;
    std::string error_;
    int64_t prompt_tokens_ = 0, cached_tokens_ = 0;
    FinishReason cancel_reason_ = FinishReason::kNone;  // kNone: not cancelled
};

// A fixed-bucket histogram (Prometheus style: cumulative counts per upper bound, plus sum).
struct Histogram {
    std::vector<double> bounds;    // upper bounds, increasing; +Inf is implicit
    std::vector<uint64_t> counts;  // {bounds.size() + 1}: per bucket, not cumulative
    double sum = 0;
    uint64_t count = 0;

    explicit Histogram(std::vector<double> upper_bounds = {});
    void observe(double v);
};

// A snapshot of the engine's counters and gauges (see docs/server.md, /metrics).
struct EngineStats {
    uint64_t prompt_tokens = 0, prefill_tokens = 0, generated_tokens = 0;
    std::array<uint64_t, 6> finished{};  // by FinishReason
    uint64_t cache_hits = 0, cache_misses = 0, cache_evictions = 0, cache_hit_tokens = 0;
    uint64_t cache_entries = 0, cache_bytes = 0;
    uint64_t steps = 0;
    int queue_depth = 0, running = 0, slots_total = 0;
    Histogram batch_size, step_tokens, step_s, ttft_s, itl_s, duration_s;  // step_s: model time
};

class Engine {
  public:
    // Starts the scheduler thread over `model`, which must outlive the engine and is used by no
    // one else meanwhile. The model needs max_seqs + cache_slots slots.
    static Result<std::unique_ptr<Engine>> start(Model& model, const EngineOptions& options);
    ~Engine();  // cancels whatever is left, joins the scheduler, delivers what it told sequences
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Queues a request. Fails with kInvalidArgument for a bad request (empty prompt, ids outside
    // the vocabulary, max_tokens < 1, logprobs out of range, stop ids outside the vocabulary) and
    // kResourceExhausted when the queue is full or the engine is shutting down.
    Result<std::shared_ptr<Sequence>> submit(GenerateRequest request);

    // Refuses new requests from now on; running and queued ones go on.
    void stop_accepting();
    // Cancels every queued and running sequence.
    void cancel_all();
    // Sequences queued or running.
    int active() const;

    EngineStats stats() const;
    const EngineOptions& options() const;

    struct Impl;

  private:
    explicit Engine(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace duality
