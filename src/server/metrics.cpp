// Prometheus text rendering of the server's metrics (see metrics.h and docs/server.md).
#include "server/metrics.h"

#include <cstdio>

namespace duality::server {

void HttpCounters::count(const std::string& path, int status) {
    // Unknown paths are counted together so that scanners cannot grow the label set.
    static const char* const kKnown[] = {"/v1/completions", "/v1/chat/completions", "/v1/models",
                                         "/tokenize",       "/detokenize",          "/health",
                                         "/metrics"};
    std::string label = "other";
    for (const char* k : kKnown)
        if (path == k) label = k;
    std::lock_guard lock(mu_);
    ++counts_[{label, status}];
}

std::map<std::pair<std::string, int>, uint64_t> HttpCounters::snapshot() const {
    std::lock_guard lock(mu_);
    return counts_;
}

namespace {

std::string num(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void scalar(std::string& out, const char* name, const char* type, const char* help, double v) {
    header(out, name, type, help);
    out += std::string(name) + " " + num(v) + "\n";
}

void histogram(std::string& out, const char* name, const char* help, const Histogram& h) {
    header(out, name, "histogram", help);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < h.bounds.size(); ++i) {
        cumulative += h.counts[i];
        out += std::string(name) + "_bucket{le=\"" + num(h.bounds[i]) + "\"} " +
               std::to_string(cumulative) + "\n";
    }
    out += std::string(name) + "_bucket{le=\"+Inf\"} " + std::to_string(h.count) + "\n";
    out += std::string(name) + "_sum " + num(h.sum) + "\n";
    out += std::string(name) + "_count " + std::to_string(h.count) + "\n";
}

}  // namespace

std::string render_metrics(const EngineStats& s, const HttpCounters& http) {
    std::string out;
    header(out, "duality_http_requests_total", "counter",
           "HTTP requests answered, by path and status");
    for (const auto& [key, n] : http.snapshot())
        out += "duality_http_requests_total{path=\"" + key.first + "\",code=\"" +
               std::to_string(key.second) + "\"} " + std::to_string(n) + "\n";
    header(out, "duality_requests_finished_total", "counter", "Sequences finished, by reason");
    for (FinishReason r : {FinishReason::kStop, FinishReason::kLength, FinishReason::kCancelled,
                           FinishReason::kTimeout, FinishReason::kError})
        out += std::string("duality_requests_finished_total{reason=\"") + to_string(r) + "\"} " +
               std::to_string(s.finished[static_cast<size_t>(r)]) + "\n";
    scalar(out, "duality_prompt_tokens_total", "counter", "Prompt tokens received",
           static_cast<double>(s.prompt_tokens));
    scalar(out, "duality_prefill_tokens_total", "counter",
           "Prompt tokens run through the model (not answered from the cache)",
           static_cast<double>(s.prefill_tokens));
    scalar(out, "duality_generation_tokens_total", "counter", "Tokens generated",
           static_cast<double>(s.generated_tokens));
    scalar(out, "duality_engine_steps_total", "counter", "Engine steps run",
           static_cast<double>(s.steps));
    scalar(out, "duality_queue_depth", "gauge", "Sequences waiting for a state slot",
           s.queue_depth);
    scalar(out, "duality_running_sequences", "gauge", "Sequences holding a state slot", s.running);
    scalar(out, "duality_slots_in_use", "gauge", "State slots in use", s.running);
    scalar(out, "duality_slots_total", "gauge", "State slots for running sequences", s.slots_total);
    histogram(out, "duality_batch_size", "Sequences per engine step", s.batch_size);
    histogram(out, "duality_step_tokens", "Tokens per engine step", s.step_tokens);
    histogram(out, "duality_step_seconds", "Model time of an engine step (forward and sampling)",
              s.step_s);
    histogram(out, "duality_time_to_first_token_seconds", "Arrival to first generated token",
              s.ttft_s);
    histogram(out, "duality_inter_token_latency_seconds",
              "Time between consecutive tokens of a sequence", s.itl_s);
    histogram(out, "duality_request_duration_seconds", "Arrival to finish of a sequence",
              s.duration_s);
    scalar(out, "duality_cache_hits_total", "counter", "State cache lookups that found a prefix",
           static_cast<double>(s.cache_hits));
    scalar(out, "duality_cache_misses_total", "counter", "State cache lookups that found nothing",
           static_cast<double>(s.cache_misses));
    scalar(out, "duality_cache_evictions_total", "counter",
           "Cached states dropped (memory budget or TTL)", static_cast<double>(s.cache_evictions));
    scalar(out, "duality_cache_hit_tokens_total", "counter",
           "Prompt tokens whose state came from the cache",
           static_cast<double>(s.cache_hit_tokens));
    scalar(out, "duality_cache_entries", "gauge", "Cached states",
           static_cast<double>(s.cache_entries));
    scalar(out, "duality_cache_bytes", "gauge", "Host memory held by cached states",
           static_cast<double>(s.cache_bytes));
    return out;
}

}  // namespace duality::server
