// The serving engine's scheduler: continuous batching over the model's state slots (engine.h).
#include "duality/engine.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <optional>
#include <thread>

#include "engine/state_cache.h"

namespace duality {

const char* to_string(FinishReason reason) {
    switch (reason) {
        case FinishReason::kNone:
            return "none";
        case FinishReason::kStop:
            return "stop";
        case FinishReason::kLength:
            return "length";
        case FinishReason::kCancelled:
            return "cancelled";
        case FinishReason::kTimeout:
            return "timeout";
        case FinishReason::kError:
            return "error";
    }
    return "unknown";
}

Status EngineOptions::validate(int model_slots) const {
    if (max_seqs < 1) return invalid_argument("max_seqs must be at least 1");
    if (cache_slots < 0) return invalid_argument("cache_slots must not be negative");
    if (max_seqs + cache_slots > model_slots)
        return invalid_argument(
            "max_seqs + cache_slots = " + std::to_string(max_seqs + cache_slots) +
            " but the model has " + std::to_string(model_slots) + " state slots");
    if (max_queue < 1) return invalid_argument("max_queue must be at least 1");
    if (max_batch_tokens < 1) return invalid_argument("max_batch_tokens must be at least 1");
    if (prefill_chunk < 1) return invalid_argument("prefill_chunk must be at least 1");
    if (cache_host_bytes < 0) return invalid_argument("cache_host_bytes must not be negative");
    if (checkpoint_every < 0 || (checkpoint_every > 0 && checkpoint_every % prefill_chunk != 0))
        return invalid_argument(
            "checkpoint_every = " + std::to_string(checkpoint_every) +
            " must be a multiple of prefill_chunk = " + std::to_string(prefill_chunk));
    if (!(cache_ttl_s > 0)) return invalid_argument("cache_ttl_s must be positive");
    return Status::ok();
}

// ---- Sequence --------------------------------------------------------------------------------

bool Sequence::wait(std::vector<int32_t>* out, SteadyClock::time_point until,
                    std::vector<TokenLogprobs>* logprobs) {
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, until,
                   [&] { return !pending_.empty() || reason_ != FinishReason::kNone; });
    out->insert(out->end(), pending_.begin(), pending_.end());
    pending_.clear();
    if (logprobs)
        logprobs->insert(logprobs->end(), std::make_move_iterator(pending_logprobs_.begin()),
                         std::make_move_iterator(pending_logprobs_.end()));
    pending_logprobs_.clear();
    return reason_ != FinishReason::kNone;
}

std::vector<TokenLogprobs> Sequence::prompt_logprobs() const {
    std::lock_guard lock(mu_);
    return prompt_logprobs_;
}

void Sequence::add_prompt_logprobs(std::vector<TokenLogprobs> logprobs) {
    std::lock_guard lock(mu_);
    prompt_logprobs_.insert(prompt_logprobs_.end(), std::make_move_iterator(logprobs.begin()),
                            std::make_move_iterator(logprobs.end()));
}

void Sequence::cancel(FinishReason reason) {
    std::lock_guard lock(mu_);
    if (cancel_reason_ == FinishReason::kNone) cancel_reason_ = reason;
}

FinishReason Sequence::cancel_reason() const {
    std::lock_guard lock(mu_);
    return cancel_reason_;
}

FinishReason Sequence::finish_reason() const {
    std::lock_guard lock(mu_);
    return reason_;
}

std::string Sequence::error() const {
    std::lock_guard lock(mu_);
    return error_;
}

int64_t Sequence::cached_tokens() const {
    std::lock_guard lock(mu_);
    return cached_tokens_;
}

void Sequence::push(int32_t token, const TokenLogprobs* logprobs) {
    {
        std::lock_guard lock(mu_);
        pending_.push_back(token);
        if (logprobs) pending_logprobs_.push_back(*logprobs);
    }
    cv_.notify_all();
}

void Sequence::set_cached_tokens(int64_t n) {
    std::lock_guard lock(mu_);
    cached_tokens_ = n;
}

void Sequence::finish(FinishReason reason, std::string error) {
    {
        std::lock_guard lock(mu_);
        if (reason_ != FinishReason::kNone) return;
        reason_ = reason;
        error_ = std::move(error);
    }
    cv_.notify_all();
}

// ---- Histogram -------------------------------------------------------------------------------

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds(std::move(upper_bounds)), counts(bounds.size() + 1, 0) {}

void Histogram::observe(double v) {
    const size_t i =
        static_cast<size_t>(std::lower_bound(bounds.begin(), bounds.end(), v) - bounds.begin());
    ++counts[i];
    sum += v;
    ++count;
}

// ---- Engine ----------------------------------------------------------------------------------

namespace {

double seconds(SteadyClock::duration d) {
    return std::chrono::duration<double>(d).count();
}

// A sequence the scheduler has taken from the queue.
struct Live {
    std::shared_ptr<Sequence> seq;
    GenerateRequest req;
    std::vector<int32_t> tokens;  // prompt, then generated tokens
    int64_t n_prompt = 0;
    int64_t pos = 0;  // tokens consumed into the slot's state
    int64_t n_generated = 0;
    int slot = -1;
    uint64_t order = 0;  // arrival order
    SteadyClock::time_point arrival, last_token;

    // Prefill: pieces of the prompt; the piece that ends the prompt also gives the first token.
    // Decode: every token but the newest generated one is in the state; the newest waits.
    bool decoding() const { return pos >= n_prompt; }
    // Whether a step that feeds it `consumed` tokens yields a token: a decode token, or the
    // prompt's last piece.
    bool yields(int64_t consumed) const { return decoding() || pos + consumed == n_prompt; }
};

// Whether a sequence's prompt still runs through prompt_logprobs_pieces(): all of it but the last
// token, whose logits give the first generated token in an ordinary step.
bool in_prompt_logprobs(const Live& r) {
    return r.req.prompt_logprobs && r.pos < r.n_prompt - 1;
}

}  // namespace

struct Engine::Impl {
    Impl(Model& m, const EngineOptions& o) : model(m), opt(o), cache(m, cache_options(o)) {
        for (int s = opt.max_seqs - 1; s >= 0; --s) free_slots.push_back(s);
        stats.slots_total = opt.max_seqs;
        stats.batch_size = Histogram({1, 2, 4, 8, 16, 32, 64, 128, 256, 512});
        stats.step_tokens = Histogram({1, 4, 16, 64, 256, 1024, 4096, 16384});
        stats.step_s = Histogram({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5});
        stats.ttft_s = Histogram({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
        stats.itl_s = Histogram({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1});
        stats.duration_s = Histogram({0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300});
    }

    static engine::StateCacheOptions cache_options(const EngineOptions& o) {
        engine::StateCacheOptions c;
        c.host_bytes = o.cache_host_bytes;
        for (int i = 0; i < o.cache_slots; ++i) c.device_slots.push_back(o.max_seqs + i);
        c.ttl_s = o.cache_ttl_s;
        return c;
    }

    void run();
    void take_incoming(std::unique_lock<std::mutex>& lock);
    void reap(SteadyClock::time_point now);
    void admit(SteadyClock::time_point now);
    // Columns of a logits row that may be sampled (opt.sample_vocab, else the whole row).
    size_t sample_cols() const {
        const size_t V = static_cast<size_t>(model.config().vocab_size);
        return opt.sample_vocab > 0 ? std::min(V, static_cast<size_t>(opt.sample_vocab)) : V;
    }
    void prompt_logprobs_pieces();  // runs a piece of each prompt whose logprobs are wanted
    void launch();                  // starts a step over the running sequences
    void complete();                // waits for the started step and applies its tokens
    void finish(Live& r, FinishReason reason, std::string error = {});
    void release(Live& r, bool cache_state);
    void publish_gauges();
    void notify_finished();
    void post_notes();
    void run_courier();

    // What sequences are told (a new token, or their end), in the order the scheduler decided
    // it. The courier thread delivers them, so that waking up to max_seqs clients' threads
    // (a futex call each) is not on the path from one model step to the next.
    struct Note {
        std::shared_ptr<Sequence> seq;
        int32_t token = -1;
        FinishReason reason = FinishReason::kNone;  // kNone: the note is `token`
        std::string error;
        std::optional<TokenLogprobs> logprobs;  // the token's, where the request wants them
    };
    std::vector<Note> finished;  // scheduler thread: ends to tell at notify_finished()
    std::vector<Note> notes;     // scheduler thread: not yet posted to the courier
    std::mutex courier_mu;
    std::condition_variable courier_cv;
    std::vector<Note> courier_queue;  // courier_mu
    bool courier_stop = false;        // courier_mu
    std::thread courier;

    Model& model;
    EngineOptions opt;
    engine::StateCache cache;  // scheduler thread only

    // Shared with submitting threads (mu).
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Live> incoming;
    bool stopping = false, accepting = true;
    std::atomic<bool> cancel_everything{false};
    int queued = 0;  // incoming + waiting
    int n_running = 0;
    uint64_t next_order = 0;

    mutable std::mutex stats_mu;
    EngineStats stats;

    // Scheduler thread only.
    std::deque<Live> waiting;
    std::vector<Live> running;
    std::vector<int> free_slots;

    std::thread thread;

    // The step launch() started and complete() finishes (scheduler thread). Between the two the
    // scheduler tells clients of the previous step's tokens while the model computes. Completion,
    // reaping and admission all happen outside that window, so `running` does not change while
    // a step is in flight and `who` stays valid.
    struct InFlight {
        bool active = false;
        std::vector<size_t> who;        // running index per batch row
        std::vector<int64_t> consumed;  // tokens each row feeds
        int64_t step_tokens = 0;
        SteadyClock::time_point start;
        std::optional<Result<std::vector<int32_t>>> ready;   // host-sampled steps' ids
        std::vector<std::optional<TokenLogprobs>> logprobs;  // per batch row (host sampling)
    } flight;

    // DUALITY_TRACE_STEPS=FILE: one line per step (scheduler thread), for finding where serving
    // time goes: start and model time in ms since the engine started, the host time since the
    // previous step ended, decode rows, prefill pieces and their tokens.
    struct FileCloser {
        void operator()(std::FILE* f) const { std::fclose(f); }
    };
    std::unique_ptr<std::FILE, FileCloser> trace{open_trace()};
    SteadyClock::time_point trace_origin = SteadyClock::now(), last_step_end = trace_origin;
    static std::FILE* open_trace() {
        const char* path = std::getenv("DUALITY_TRACE_STEPS");
        std::FILE* f = path && *path ? std::fopen(path, "w") : nullptr;
        if (f)  // model_ms: from the step's launch to its ids (host work overlaps it)
            std::fputs("start_ms model_ms host_gap_ms decode_rows prefill_seqs prefill_tokens\n",
                       f);
        return f;
    }
};

void Engine::Impl::take_incoming(std::unique_lock<std::mutex>&) {
    while (!incoming.empty()) {
        waiting.push_back(std::move(incoming.front()));
        incoming.pop_front();
    }
}

void Engine::Impl::run() {
    for (;;) {
        {
            std::unique_lock lock(mu);
            if (waiting.empty() && running.empty() && !flight.active)
                cv.wait(lock, [&] { return stopping || !incoming.empty() || cancel_everything; });
            take_incoming(lock);
            if (stopping) cancel_everything = true;
        }
        if (flight.active) complete();
        const auto now = SteadyClock::now();
        reap(now);
        bool done;
        {
            std::lock_guard lock(mu);
            done = stopping && waiting.empty() && running.empty() && incoming.empty();
        }
        if (done) {
            notify_finished();
            break;
        }
        admit(now);
        prompt_logprobs_pieces();
        if (!running.empty()) launch();
        // The completed step's tokens and ends go out while the next step computes.
        notify_finished();
    }
    publish_gauges();
}

void Engine::Impl::finish(Live& r, FinishReason reason, std::string error) {
    {
        std::lock_guard lock(stats_mu);
        ++stats.finished[static_cast<size_t>(reason)];
        stats.duration_s.observe(seconds(SteadyClock::now() - r.arrival));
    }
    // Told after the counters (active(), stats) are updated: see notify_finished().
    finished.push_back({r.seq, -1, reason, std::move(error), std::nullopt});
}

void Engine::Impl::notify_finished() {
    {
        std::lock_guard lock(mu);
        n_running = static_cast<int>(running.size());
    }
    publish_gauges();
    for (Note& f : finished) notes.push_back(std::move(f));
    finished.clear();
    post_notes();
}

void Engine::Impl::post_notes() {
    if (notes.empty()) return;
    {
        std::lock_guard lock(courier_mu);
        if (courier_queue.empty()) {
            courier_queue.swap(notes);
        } else {
            for (Note& n : notes) courier_queue.push_back(std::move(n));
        }
    }
    notes.clear();
    courier_cv.notify_one();
}

void Engine::Impl::run_courier() {
    std::vector<Note> batch;
    for (;;) {
        {
            std::unique_lock lock(courier_mu);
            courier_cv.wait(lock, [&] { return courier_stop || !courier_queue.empty(); });
            if (courier_queue.empty()) return;  // stopping, and everything delivered
            batch.swap(courier_queue);
        }
        for (Note& n : batch) {
            if (n.reason == FinishReason::kNone) {
                n.seq->push(n.token, n.logprobs ? &*n.logprobs : nullptr);
            } else {
                n.seq->finish(n.reason, std::move(n.error));
            }
        }
        batch.clear();
    }
}

// Gives a finished sequence's slot back, first caching its state under the consumed tokens.
void Engine::Impl::release(Live& r, bool cache_state) {
    int freed = r.slot;
    if (cache_state && r.req.use_cache && cache.enabled() && r.pos > 0) {
        // The cache takes the slot itself where it keeps states in model slots, and gives back
        // one of its own: the final state is cached without a copy.
        freed = cache.adopt(std::span<const int32_t>(r.tokens.data(), static_cast<size_t>(r.pos)),
                            r.slot, SteadyClock::now());
    }
    free_slots.push_back(freed);
    r.slot = -1;
}

void Engine::Impl::reap(SteadyClock::time_point now) {
    const bool all = cancel_everything.exchange(false);
    auto verdict = [&](const Live& r) {
        if (all) return FinishReason::kCancelled;
        if (const FinishReason c = r.seq->cancel_reason(); c != FinishReason::kNone) return c;
        if (now > r.req.deadline) return FinishReason::kTimeout;
        return FinishReason::kNone;
    };
    int removed = 0;
    for (auto it = waiting.begin(); it != waiting.end();) {
        const FinishReason v = verdict(*it);
        if (v == FinishReason::kNone) {
            ++it;
            continue;
        }
        finish(*it, v);
        it = waiting.erase(it);
        ++removed;
    }
    for (size_t i = 0; i < running.size();) {
        const FinishReason v = verdict(running[i]);
        if (v == FinishReason::kNone) {
            ++i;
            continue;
        }
        finish(running[i], v);
        release(running[i], true);
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
    }
    std::lock_guard lock(mu);
    queued -= removed;
    n_running = static_cast<int>(running.size());
}

void Engine::Impl::admit(SteadyClock::time_point now) {
    int admitted = 0;
    while (!free_slots.empty() && !waiting.empty()) {
        Live r = std::move(waiting.front());
        waiting.pop_front();
        ++admitted;
        r.slot = free_slots.back();
        free_slots.pop_back();
        // Resume from the longest cached prefix; the prompt's last token always runs, since its
        // logits give the first generated token.
        // A prompt whose log-probabilities are wanted runs whole: a cached prefix has no logits.
        std::optional<engine::StateCache::Match> hit;
        const bool lookup = r.req.use_cache && cache.enabled() && !r.req.prompt_logprobs;
        if (lookup) hit = cache.lookup(r.tokens, r.n_prompt - 1, now);
        Status s = hit ? cache.restore(hit->id, r.slot, now) : model.reset_slot(r.slot);
        if (!s.is_ok() && hit) {  // fall back to a cold start
            hit.reset();
            s = model.reset_slot(r.slot);
        }
        if (!s.is_ok()) {
            finish(r, FinishReason::kError, s.message());
            free_slots.push_back(r.slot);
            continue;
        }
        r.pos = hit ? hit->length : 0;
        r.seq->set_cached_tokens(r.pos);
        {
            std::lock_guard lock(stats_mu);
            if (lookup) ++(hit ? stats.cache_hits : stats.cache_misses);
            stats.cache_hit_tokens += static_cast<uint64_t>(r.pos);
        }
        running.push_back(std::move(r));
    }
    std::lock_guard lock(mu);
    queued -= admitted;
    n_running = static_cast<int>(running.size());
}

void Engine::Impl::prompt_logprobs_pieces() {
    std::vector<size_t> todo;  // running indices, oldest first
    for (size_t i = 0; i < running.size(); ++i)
        if (in_prompt_logprobs(running[i])) todo.push_back(i);
    if (todo.empty()) return;
    std::sort(todo.begin(), todo.end(),
              [&](size_t a, size_t b) { return running[a].order < running[b].order; });
    // The completed step's tokens go out before this synchronous work.
    notify_finished();
    const size_t V = static_cast<size_t>(model.config().vocab_size);
    const size_t n = sample_cols();
    int64_t budget = opt.max_batch_tokens;  // shared by this turn's pieces (the first always runs)
    for (size_t k = 0; k < todo.size(); ++k) {
        Live& r = running[todo[k]];
        // At most 512 tokens a piece: their logits alone are 100 MB at GPT-NeoX's vocabulary.
        const int64_t len = std::min({opt.prefill_chunk, int64_t{512}, r.n_prompt - 1 - r.pos});
        if (k > 0 && len > budget) break;
        budget -= len;
        const auto piece = std::span<const int32_t>(r.tokens).subspan(static_cast<size_t>(r.pos),
                                                                      static_cast<size_t>(len));
        const auto start = SteadyClock::now();
        Result<std::vector<float>> logits = model.step_all_logits(r.slot, piece);
        if (logits.is_ok() && logits->size() != static_cast<size_t>(len) * V)
            logits = Status(StatusCode::kInternal,
                            "step_all_logits returned " + std::to_string(logits->size()) +
                                " logits for " + std::to_string(len) + " tokens");
        if (!logits.is_ok()) {
            finish(r, FinishReason::kError, logits.status().message());
            release(r, false);
            continue;
        }
        // Row i predicts token pos + i + 1. An id the tokenizer does not know (a padded row, given
        // as a prompt id) is scored against the whole row rather than the sampled ids. Rows in
        // parallel: each is a pass over the vocabulary in double precision.
        std::vector<TokenLogprobs> lps(static_cast<size_t>(len));
        const int32_t* next = r.tokens.data() + r.pos + 1;
        const int n_top = r.req.logprobs;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < len; ++i) {
            const float* row = logits->data() + static_cast<size_t>(i) * V;
            const size_t cols = static_cast<size_t>(next[i]) < n ? n : V;
            lps[static_cast<size_t>(i)] =
                sampling::logprobs(std::span<const float>(row, cols), next[i], n_top);
        }
        r.seq->add_prompt_logprobs(std::move(lps));
        r.pos += len;
        const auto done = SteadyClock::now();
        if (trace)
            std::fprintf(trace.get(), "%.3f %.3f %.3f 0 1 %lld\n",
                         1e3 * seconds(start - trace_origin), 1e3 * seconds(done - start),
                         1e3 * seconds(start - last_step_end), static_cast<long long>(len));
        last_step_end = done;
        std::lock_guard lock(stats_mu);  // counted as a step of one prefill piece
        stats.prefill_tokens += static_cast<uint64_t>(len);
        ++stats.steps;
        stats.batch_size.observe(1);
        stats.step_tokens.observe(static_cast<double>(len));
        stats.step_s.observe(seconds(done - start));
    }
    std::erase_if(running, [](const Live& r) { return r.slot < 0; });
    std::lock_guard lock(mu);
    n_running = static_cast<int>(running.size());
}

void Engine::Impl::launch() {
    // Decode tokens first, then one prefill piece per prefilling sequence in arrival order while
    // the token budget lasts (the first piece always runs, so prefill never starves).
    std::vector<size_t> who;  // running index per batch row
    std::vector<SeqInput> batch;
    int64_t budget = opt.max_batch_tokens, step_tokens = 0;
    for (size_t i = 0; i < running.size(); ++i) {
        Live& r = running[i];
        if (!r.decoding()) continue;
        batch.push_back(
            SeqInput{r.slot, std::span<const int32_t>(&r.tokens[static_cast<size_t>(r.pos)], 1)});
        who.push_back(i);
        --budget;
    }
    std::vector<size_t> prefilling;
    for (size_t i = 0; i < running.size(); ++i)
        if (!running[i].decoding() && !in_prompt_logprobs(running[i])) prefilling.push_back(i);
    std::sort(prefilling.begin(), prefilling.end(),
              [&](size_t a, size_t b) { return running[a].order < running[b].order; });
    bool any_prefill = false;
    for (size_t i : prefilling) {
        Live& r = running[i];
        const int64_t end =
            std::min((r.pos / opt.prefill_chunk + 1) * opt.prefill_chunk, r.n_prompt);
        const int64_t len = end - r.pos;
        if (any_prefill && len > budget) break;
        batch.push_back(
            SeqInput{r.slot, std::span<const int32_t>(&r.tokens[static_cast<size_t>(r.pos)],
                                                      static_cast<size_t>(len))});
        who.push_back(i);
        budget -= len;
        any_prefill = true;
    }
    for (const SeqInput& in : batch) step_tokens += static_cast<int64_t>(in.tokens.size());
    if (batch.empty()) return;  // every sequence is in prompt_logprobs_pieces()

    std::vector<SamplingParams> params(batch.size());
    std::vector<uint64_t> draws(batch.size());
    bool host_sampling = false;
    for (size_t b = 0; b < batch.size(); ++b) {
        const Live& r = running[who[b]];
        params[b] = r.req.sampling;
        draws[b] = static_cast<uint64_t>(r.n_generated);
        // Rows that yield no token (a prompt piece before its last) need neither.
        const bool yields = r.yields(static_cast<int64_t>(batch[b].tokens.size()));
        host_sampling |= yields && (r.req.sampling.has_penalties() || r.req.logprobs >= 0);
    }

    flight.active = true;
    flight.who = std::move(who);
    flight.consumed.clear();
    for (const SeqInput& in : batch)
        flight.consumed.push_back(static_cast<int64_t>(in.tokens.size()));
    flight.step_tokens = step_tokens;
    flight.ready.reset();
    flight.logprobs.assign(batch.size(), std::nullopt);
    // Where the model computes the step before returning (no overlap, or host sampling), the
    // previous step's tokens go out first rather than one step late.
    if (host_sampling || !model.overlaps_steps()) notify_finished();
    flight.start = SteadyClock::now();
    if (!host_sampling) {
        Status started = model.start_step_sample(batch, params, draws);
        if (!started.is_ok()) flight.ready = Result<std::vector<int32_t>>(started);
        return;
    }
    // Penalties need each sequence's history, and log-probabilities the whole row: sample on the
    // host from the step's logits.
    Result<std::vector<float>> logits = model.step(batch);
    if (!logits.is_ok()) {
        flight.ready = Result<std::vector<int32_t>>(logits.status());
        return;
    }
    const size_t V = static_cast<size_t>(model.config().vocab_size);
    const size_t n = sample_cols();
    std::vector<int32_t> out(batch.size(), 0);
    for (size_t b = 0; b < batch.size(); ++b) {
        const Live& r = running[flight.who[b]];
        std::span<float> row(logits->data() + b * V, n);
        const auto prompt =
            std::span<const int32_t>(r.tokens.data(), static_cast<size_t>(r.n_prompt));
        const auto output =
            std::span<const int32_t>(r.tokens).subspan(static_cast<size_t>(r.n_prompt));
        // Log-probabilities of the raw logits, for rows that yield a token (see complete()).
        const bool yields = r.yields(flight.consumed[b]);
        std::vector<float> raw;
        if (r.req.logprobs >= 0 && yields && params[b].has_penalties())
            raw.assign(row.begin(), row.end());
        sampling::apply_penalties(row, prompt, output, params[b]);
        out[b] = sampling::sample_row(row, params[b], draws[b]);
        if (r.req.logprobs >= 0 && yields)
            flight.logprobs[b] = sampling::logprobs(raw.empty() ? row : std::span<float>(raw),
                                                    out[b], r.req.logprobs);
    }
    flight.ready = Result<std::vector<int32_t>>(std::move(out));
}

void Engine::Impl::complete() {
    flight.active = false;
    Result<std::vector<int32_t>> ids =
        flight.ready ? std::move(*flight.ready) : model.finish_step_sample();
    flight.ready.reset();
    const std::vector<size_t>& who = flight.who;
    const int64_t step_tokens = flight.step_tokens;
    const auto model_start = flight.start;
    const auto done = SteadyClock::now();
    if (trace) {
        int64_t decode_rows = 0, prefill_seqs = 0;
        for (size_t b = 0; b < who.size(); ++b)
            ++(running[who[b]].decoding() ? decode_rows : prefill_seqs);
        std::fprintf(trace.get(), "%.3f %.3f %.3f %lld %lld %lld\n",
                     1e3 * seconds(model_start - trace_origin), 1e3 * seconds(done - model_start),
                     1e3 * seconds(model_start - last_step_end),
                     static_cast<long long>(decode_rows), static_cast<long long>(prefill_seqs),
                     static_cast<long long>(step_tokens - decode_rows));
    }
    last_step_end = done;
    {
        std::lock_guard lock(stats_mu);
        ++stats.steps;
        stats.batch_size.observe(static_cast<double>(who.size()));
        stats.step_tokens.observe(static_cast<double>(step_tokens));
        stats.step_s.observe(seconds(done - model_start));
    }
    if (!ids.is_ok()) {
        // The step failed (e.g. a device error): its sequences end with the error.
        std::vector<bool> failed(running.size(), false);
        for (size_t i : who) failed[i] = true;
        for (size_t i = 0; i < running.size(); ++i)
            if (failed[i]) {
                finish(running[i], FinishReason::kError, ids.status().message());
                release(running[i], false);
            }
        std::erase_if(running, [](const Live& r) { return r.slot < 0; });
        return;
    }

    uint64_t prefill = 0, generated = 0;
    std::vector<std::pair<FinishReason, size_t>> ended;
    std::vector<size_t> checkpoints;  // running indices whose state is cached after this step
    for (size_t b = 0; b < who.size(); ++b) {
        Live& r = running[who[b]];
        const bool was_prefill = !r.decoding();
        const int64_t consumed = flight.consumed[b];
        if (was_prefill) prefill += static_cast<uint64_t>(consumed);
        r.pos += consumed;
        if (was_prefill) {
            // Checkpoint the state every K tokens and at the prompt's end (the latter once the
            // first token is out: see below).
            const bool at_end = r.pos == r.n_prompt;
            const bool at_mark = opt.checkpoint_every > 0 && r.pos % opt.checkpoint_every == 0;
            if ((at_end || at_mark) && r.req.use_cache && cache.enabled())
                checkpoints.push_back(who[b]);
            if (!at_end) continue;  // only the prompt's last piece yields a token
        }
        const int32_t token = (*ids)[b];
        r.tokens.push_back(token);
        ++r.n_generated;
        ++generated;
        notes.push_back({r.seq, token, FinishReason::kNone, {}, std::move(flight.logprobs[b])});
        {
            std::lock_guard lock(stats_mu);
            if (r.n_generated == 1) {
                stats.ttft_s.observe(seconds(done - r.arrival));
            } else {
                stats.itl_s.observe(seconds(done - r.last_token));
            }
        }
        r.last_token = done;
        if (token == r.req.eos_id || std::find(r.req.stop_ids.begin(), r.req.stop_ids.end(),
                                               token) != r.req.stop_ids.end()) {
            ended.emplace_back(FinishReason::kStop, who[b]);
        } else if (r.n_generated >= r.req.max_tokens) {
            ended.emplace_back(FinishReason::kLength, who[b]);
        }
    }
    {
        std::lock_guard lock(stats_mu);
        stats.prefill_tokens += prefill;
        stats.generated_tokens += generated;
    }
    // The tokens go out with their ends at the next notify_finished(), in order, after the next
    // step is launched. A sequence that finished in this step is cached (at its finish) by
    // release(), before its client hears of the finish.
    for (size_t i : checkpoints) {
        // A sequence that also ended in this step is cached at its finish, which is the same
        // key (its last token is not consumed), by adopting its slot: no copy here.
        if (std::any_of(ended.begin(), ended.end(), [&](const auto& e) { return e.second == i; }))
            continue;
        Live& r = running[i];
        Status s = cache.insert(
            std::span<const int32_t>(r.tokens.data(), static_cast<size_t>(r.pos)), r.slot, done);
        (void)s;
    }
    for (auto& [reason, i] : ended) {
        finish(running[i], reason);
        release(running[i], true);
    }
    std::erase_if(running, [](const Live& r) { return r.slot < 0; });
    std::lock_guard lock(mu);
    n_running = static_cast<int>(running.size());
}

void Engine::Impl::publish_gauges() {
    int q, r;
    {
        std::lock_guard lock(mu);
        q = queued;
        r = n_running;
    }
    std::lock_guard lock(stats_mu);
    stats.queue_depth = q;
    stats.running = r;
    stats.cache_entries = cache.entries();
    stats.cache_bytes = cache.host_bytes();
    stats.cache_evictions = cache.evictions();
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Engine>> Engine::start(Model& model, const EngineOptions& options) {
    DUALITY_RETURN_IF_ERROR(options.validate(model.n_slots()));
    std::unique_ptr<Engine> engine(new Engine(std::make_unique<Impl>(model, options)));
    Impl* impl = engine->impl_.get();
    impl->courier = std::thread([impl] { impl->run_courier(); });
    impl->thread = std::thread([impl] { impl->run(); });
    return engine;
}

Engine::~Engine() {
    {
        std::lock_guard lock(impl_->mu);
        impl_->stopping = true;
        impl_->accepting = false;
    }
    impl_->cv.notify_all();
    if (impl_->thread.joinable()) impl_->thread.join();
    {
        std::lock_guard lock(impl_->courier_mu);
        impl_->courier_stop = true;
    }
    impl_->courier_cv.notify_all();
    if (impl_->courier.joinable()) impl_->courier.join();
}

Result<std::shared_ptr<Sequence>> Engine::submit(GenerateRequest request) {
    const int64_t V = impl_->model.config().vocab_size;
    if (request.prompt.empty()) return invalid_argument("the prompt has no tokens");
    for (size_t i = 0; i < request.prompt.size(); ++i)
        if (request.prompt[i] < 0 || request.prompt[i] >= V)
            return invalid_argument("token id " + std::to_string(request.prompt[i]) +
                                    " at position " + std::to_string(i) +
                                    " is outside the vocabulary [0, " + std::to_string(V) + ")");
    if (request.max_tokens < 1) return invalid_argument("max_tokens must be at least 1");
    if (request.logprobs < -1 || request.logprobs > kMaxTopLogprobs)
        return invalid_argument("logprobs must be in [-1, " + std::to_string(kMaxTopLogprobs) +
                                "], got " + std::to_string(request.logprobs));
    if (request.prompt_logprobs && request.logprobs < 0)
        return invalid_argument("prompt_logprobs needs logprobs >= 0");
    for (int32_t id : request.stop_ids)
        if (id < 0 || id >= V)
            return invalid_argument("stop id " + std::to_string(id) +
                                    " is outside the vocabulary [0, " + std::to_string(V) + ")");
    DUALITY_RETURN_IF_ERROR(request.sampling.validate());

    Live r;
    r.n_prompt = static_cast<int64_t>(request.prompt.size());
    r.seq = std::make_shared<Sequence>(r.n_prompt);
    r.tokens = request.prompt;
    r.req = std::move(request);
    r.req.prompt.clear();  // kept once, in tokens
    r.arrival = r.last_token = SteadyClock::now();
    std::shared_ptr<Sequence> seq = r.seq;
    {
        std::lock_guard lock(impl_->mu);
        if (!impl_->accepting) return resource_exhausted("the server is shutting down");
        if (impl_->queued >= impl_->opt.max_queue)
            return resource_exhausted("the request queue is full (" +
                                      std::to_string(impl_->opt.max_queue) + " waiting)");
        r.order = impl_->next_order++;
        ++impl_->queued;
        impl_->incoming.push_back(std::move(r));
    }
    {
        std::lock_guard lock(impl_->stats_mu);
        impl_->stats.prompt_tokens += static_cast<uint64_t>(seq->prompt_tokens());
    }
    impl_->cv.notify_all();
    return seq;
}

void Engine::stop_accepting() {
    std::lock_guard lock(impl_->mu);
    impl_->accepting = false;
}

void Engine::cancel_all() {
    {
        std::lock_guard lock(impl_->mu);
        impl_->cancel_everything = true;
    }
    impl_->cv.notify_all();
}

int Engine::active() const {
    std::lock_guard lock(impl_->mu);
    return impl_->queued + impl_->n_running;
}

EngineStats Engine::stats() const {
    std::lock_guard lock(impl_->stats_mu);
    return impl_->stats;
}

const EngineOptions& Engine::options() const {
    return impl_->opt;
}

}  // namespace duality
