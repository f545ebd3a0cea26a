// /metrics: the engine's counters and the HTTP layer's, in the Prometheus text format (0.0.4).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "duality/engine.h"

namespace duality::server {

// HTTP responses by (path, status code); safe to use from every connection thread.
class HttpCounters {
  public:
    void count(const std::string& path, int status);
    std::map<std::pair<std::string, int>, uint64_t> snapshot() const;

  private:
    mutable std::mutex mu_;
    std::map<std::pair<std::string, int>, uint64_t> counts_;
};

std::string render_metrics(const EngineStats& stats, const HttpCounters& http);

}  // namespace duality::server
