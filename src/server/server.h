// The OpenAI-compatible HTTP server (cpp-httplib) over an Engine: routes, errors, Server-Sent
// Events, health, metrics and graceful shutdown (docs/server.md).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "duality/engine.h"
#include "duality/status.h"
#include "duality/tokenizer.h"
#include "server/chat_template.h"
#include "server/openai.h"

namespace duality::server {

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 8000;         // 0: any free port
    int http_threads = 128;  // connections served at once (at least 2)
    int64_t max_body_bytes = 1 << 20;
    double request_timeout_s = 600;
    double shutdown_grace_s = 10;
    ApiLimits limits;
};

// Of `http_threads` workers, how many may run generation requests at once (at least 1). A
// generation holds its worker until it ends (a stream until its last event), so the rest,
// http_threads / 8 (1 to 16), are kept from generations for /health, /metrics, /v1/models and the
// 503 that one generation too many gets (with every worker held those used to wait for one to
// finish). Connections that hold a worker otherwise (a slow upload, an idle kept-alive one) can
// still take those.
int generation_workers(int http_threads);

class Server {
  public:
    Server(Engine& engine, Tokenizer tokenizer, ChatTemplate chat_template, int32_t eos_id,
           ServerOptions options);
    ~Server();

    // Binds the listening socket; returns the port (the chosen one for port 0).
    Result<int> bind();
    // Serves until shutdown(); call after bind().
    void serve();
    // Graceful stop, from any thread: refuse new requests (503), let running ones finish for
    // the grace period, cancel the rest, close the listener. serve() then returns.
    void shutdown();

    struct Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace duality::server
