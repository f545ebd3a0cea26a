// The HTTP server: routes and their handlers, SSE streaming, error bodies (see server.h).
#include "server/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <functional>
#include <thread>
#include <vector>

#include "server/generation.h"
#include "server/metrics.h"
#include "server/request_head.h"

namespace duality::server {

using nlohmann::json;

namespace {

constexpr const char* kJson = "application/json";

void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(dump(e.to_json()), kJson);
}

ApiError error_for_status(int status, const std::string& message) {
    ApiError e;
    e.status = status;
    e.message = message;
    e.type = status == 404   ? "not_found_error"
             : status >= 500 ? "server_error"
                             : "invalid_request_error";
    return e;
}

// The paths served and the methods each answers (HEAD is GET without the body).
constexpr Endpoint kEndpoints[] = {{"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
                                   {"/v1/models", "GET, HEAD"}, {"/tokenize", "POST"},
                                   {"/detokenize", "POST"},     {"/health", "GET, HEAD"},
                                   {"/metrics", "GET, HEAD"}};

// An error whose connection must close (a request body left unread): cpp-httplib 0.11 writes a
// handler's "Connection: close" but keeps the connection open, and the next request would be
// read from the middle of the unread body. A content provider that fails once it has written the
// body makes cpp-httplib drop the connection after the response. (A HEAD response has no body
// and so keeps the connection.)
void send_error_and_close(httplib::Response& res, const ApiError& e) {
    const std::string body = dump(e.to_json());
    res.status = e.status;
    res.set_header("Connection", "close");
    res.set_header("Content-Length", std::to_string(body.size()));
    res.set_content_provider(kJson, [body](size_t, httplib::DataSink& sink) {
        sink.write(body.data(), body.size());
        return false;  // written: now close
    });
}

int64_t unix_now() {
    return static_cast<int64_t>(std::time(nullptr));
}

// One of generation_workers() taken by a generation request; given back when destroyed (a
// stream's state holds it until the connection ends).
class WorkerSlot {
  public:
    explicit WorkerSlot(std::atomic<int>& busy) : busy_(busy) {}
    ~WorkerSlot() { --busy_; }
    WorkerSlot(const WorkerSlot&) = delete;
    WorkerSlot& operator=(const WorkerSlot&) = delete;

  private:
    std::atomic<int>& busy_;
};

}  // namespace

int generation_workers(int http_threads) {
    return std::max(1, http_threads - std::clamp(http_threads / 8, 1, 16));
}

struct Server::Impl {
    Impl(Engine& e, Tokenizer t, ChatTemplate c, int32_t eos, ServerOptions o)
        : engine(e), tokenizer(std::move(t)), tmpl(std::move(c)), eos_id(eos), opt(std::move(o)) {}

    void routes();
    // Answers a request refused from its head (check_request_head); false: route it.
    bool refuse_head(const httplib::Request& req, httplib::Response& res) const;
    // body: the request's body, read by body_route within --max-body.
    // http10: the request came as HTTP/1.0, whose clients cannot read a chunked stream.
    void handle_generate(const std::string& body, httplib::Response& res, bool chat, bool http10);
    // A worker for a generation, or nullptr when generation_workers() are all taken.
    std::shared_ptr<WorkerSlot> take_worker();
    // A POST route that reads its body within --max-body (see below) and hands it to `handle`.
    using BodyHandler =
        std::function<void(const std::string& body, const httplib::Request&, httplib::Response&)>;
    httplib::Server::HandlerWithContentReader body_route(BodyHandler handle);
    std::string too_large_message() const {
        return "the request body is larger than the server's limit (" +
               std::to_string(opt.max_body_bytes / 1024) + " KB, --max-body)";
    }
    void stream(httplib::Response& res, std::shared_ptr<Generation> gen,
                std::shared_ptr<WorkerSlot> worker, const std::string& id, int64_t created,
                bool include_usage, bool http10);

    Engine& engine;
    Tokenizer tokenizer;
    ChatTemplate tmpl;
    int32_t eos_id;
    ServerOptions opt;
    httplib::Server http;
    HttpCounters counters;
    std::atomic<bool> shutting_down{false};
    // Workers taken by generation requests (take_worker), from before the body is parsed until
    // the reply (or the stream) ends: shutdown() drains on it.
    std::atomic<int> busy_workers{0};
    int listen_fd = -1;  // the listening socket (see bind())
};

void Server::Impl::routes() {
    http.set_payload_max_length(static_cast<size_t>(opt.max_body_bytes));
    const int threads = opt.http_threads;
    http.new_task_queue = [threads] {
        return new httplib::ThreadPool(static_cast<size_t>(threads));
    };
    http.set_read_timeout(30, 0);
    // Remember the listening socket: bind() widens its accept backlog afterwards.
    http.set_socket_options([this](socket_t sock) {
        httplib::default_socket_options(sock);
        listen_fd = sock;
    });
    http.set_write_timeout(30, 0);

    for (const bool chat : {false, true})
        http.Post(chat ? "/v1/chat/completions" : "/v1/completions",
                  body_route([this, chat](const std::string& body, const httplib::Request& req,
                                          httplib::Response& res) {
                      handle_generate(body, res, chat, req.version == "HTTP/1.0");
                  }));
    // vLLM's token endpoints: no model step, so no worker limit.
    http.Post("/tokenize", body_route([this](const std::string& body, const httplib::Request&,
                                             httplib::Response& res) {
                  json reply;
                  if (auto e = tokenize_request(body, opt.limits, tokenizer, tmpl, &reply))
                      send_error(res, *e);
                  else
                      res.set_content(dump(reply), kJson);
              }));
    http.Post("/detokenize", body_route([this](const std::string& body, const httplib::Request&,
                                               httplib::Response& res) {
                  json reply;
                  if (auto e = detokenize_request(body, opt.limits, tokenizer, &reply))
                      send_error(res, *e);
                  else
                      res.set_content(dump(reply), kJson);
              }));
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
        json model = {{"id", opt.limits.model_name},
                      {"object", "model"},
                      {"created", unix_now()},
                      {"owned_by", "duality"}};
        res.set_content(dump(json{{"object", "list"}, {"data", json::array({model})}}), kJson);
    });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
        if (shutting_down) {
            res.status = 503;
            res.set_content(R"({"status": "shutting down"})", kJson);
        } else {
            res.set_content(R"({"status": "ok"})", kJson);
        }
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
        res.set_content(render_metrics(engine.stats(), counters), "text/plain; version=0.0.4");
    });

    // Heads checked before routing (request_head.h): framing errors, too large bodies and wrong
    // methods are answered without reading the body; a client that waits for "100 Continue"
    // gets the refusal instead and never sends the body.
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
        return refuse_head(req, res) ? httplib::Server::HandlerResponse::Handled
                                     : httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_expect_100_continue_handler(
        [this](const httplib::Request& req, httplib::Response& res) {
            return refuse_head(req, res) ? res.status : 100;
        });

    // cpp-httplib adds "Keep-Alive" to every response to a client that did not ask to close,
    // also to one that will close: drop it there.
    http.set_post_routing_handler([](const httplib::Request&, httplib::Response& res) {
        if (res.get_header_value("Connection") == "close") res.headers.erase("Keep-Alive");
    });

    // Errors raised by httplib itself (unknown path, body too large, bad request line) get the
    // same JSON body as ours.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty() || res.content_provider_) return;  // ours, already written
        std::string message;
        switch (res.status) {
            case 404:
                message = "no such endpoint: " + req.method + " " + req.path;
                break;
            case 413:
                message = too_large_message();
                break;
            default:
                message = "HTTP error " + std::to_string(res.status);
                break;
        }
        send_error(res, error_for_status(res.status, message));
    });
    http.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
            std::string what = "internal error";
            try {
                if (ep) std::rethrow_exception(ep);
            } catch (const std::exception& e) {
                what = std::string("internal error: ") + e.what();
            } catch (...) {
            }
            send_error(res, error_for_status(500, what));
        });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
        counters.count(req.path, res.status);
    });
}

bool Server::Impl::refuse_head(const httplib::Request& req, httplib::Response& res) const {
    auto values = [&req](const char* name) {
        std::vector<std::string> out;
        for (size_t i = 0; i < req.get_header_value_count(name); ++i)
            out.push_back(req.get_header_value(name, i));
        return out;
    };
    RequestHead head;
    head.method = req.method;
    head.path = req.path;
    head.content_length = values("Content-Length");
    head.transfer_encoding = values("Transfer-Encoding");
    const auto refusal = check_request_head(head, kEndpoints, opt.max_body_bytes);
    if (!refusal) return false;
    if (!refusal->allow.empty()) res.set_header("Allow", refusal->allow);
    const ApiError e = error_for_status(refusal->status, refusal->message);
    if (refusal->close)
        send_error_and_close(res, e);
    else
        send_error(res, e);
    return true;
}

// The POST endpoints read their bodies themselves, counting bytes as they arrive: the
// system cpp-httplib checks --max-body only against a Content-Length (a chunked body of 300 MB
// was read whole before its 413), and caps form-encoded bodies (curl -d's default type) at 8 KB
// whatever --max-body says, neither of which applies to a handler that reads its own content.
httplib::Server::HandlerWithContentReader Server::Impl::body_route(BodyHandler handle) {
    return [this, handle = std::move(handle)](const httplib::Request& req, httplib::Response& res,
                                              const httplib::ContentReader& read) {
        std::string body;
        bool too_large = false;
        const bool ok = read([&](const char* data, size_t n) {
            if (body.size() + n > static_cast<size_t>(opt.max_body_bytes)) {
                too_large = true;
                return false;  // stop reading: the rest of the body is never taken in
            }
            body.append(data, n);
            return true;
        });
        if (too_large || res.status == 413) {  // 413: httplib's own Content-Length check
            send_error(res, error_for_status(413, too_large_message()));
            return;
        }
        if (!ok) {
            send_error(res, error_for_status(400, "the request body could not be read"));
            return;
        }
        handle(body, req, res);
    };
}

std::shared_ptr<WorkerSlot> Server::Impl::take_worker() {
    if (++busy_workers > generation_workers(opt.http_threads)) {
        --busy_workers;
        return nullptr;
    }
    return std::make_shared<WorkerSlot>(busy_workers);
}

void Server::Impl::handle_generate(const std::string& body, httplib::Response& res, bool chat,
                                   bool http10) {
    if (shutting_down) {
        send_error(res, error_for_status(503, "the server is shutting down"));
        return;
    }
    std::shared_ptr<WorkerSlot> worker = take_worker();
    if (!worker) {
        const int n = generation_workers(opt.http_threads);
        send_error(res, error_for_status(
                            503, "the server is busy: all " + std::to_string(n) +
                                     " workers for generation requests are running one "
                                     "(--http-threads " +
                                     std::to_string(opt.http_threads) + " keeps " +
                                     std::to_string(opt.http_threads - n) +
                                     " for /health, /metrics and replies like this); retry later"));
        // Asks a kept-alive client to close: its connection would hold one of the kept workers
        // until it idles out (cpp-httplib keeps reading it until the client closes or 5 s pass).
        res.set_header("Connection", "close");
        return;
    }
    ApiRequest request;
    if (auto e = parse_request(body, chat, opt.limits, tokenizer, tmpl, &request)) {
        send_error(res, *e);
        return;
    }
    auto started = Generation::start(engine, request, tokenizer, eos_id, opt.request_timeout_s);
    if (auto* e = std::get_if<ApiError>(&started)) {
        send_error(res, *e);
        return;
    }
    std::shared_ptr<Generation> gen = std::move(std::get<0>(started));
    const std::string id = make_id(chat ? "chatcmpl-" : "cmpl-");
    const int64_t created = unix_now();
    if (request.stream) {
        stream(res, std::move(gen), std::move(worker), id, created, request.include_usage, http10);
        return;
    }
    std::vector<Generation::Delta> deltas;
    while (!gen->poll(SteadyClock::now() + std::chrono::milliseconds(200), &deltas)) deltas.clear();
    if (!gen->error().empty()) {
        send_error(res, error_for_status(500, "generation failed: " + gen->error()));
        return;
    }
    res.set_content(dump(gen->response(id, created, opt.limits.model_name)), kJson);
}

void Server::Impl::stream(httplib::Response& res, std::shared_ptr<Generation> gen,
                          std::shared_ptr<WorkerSlot> worker, const std::string& id,
                          int64_t created, bool include_usage, bool http10) {
    struct State {
        std::shared_ptr<Generation> gen;
        std::shared_ptr<WorkerSlot> worker;  // given back when the connection ends
        bool sent_role = false, finished = false;
    };
    auto st = std::make_shared<State>();
    st->gen = std::move(gen);
    st->worker = std::move(worker);
    const std::string model = opt.limits.model_name;
    res.set_header("Cache-Control", "no-cache");
    auto provider = [this, st, id, created, include_usage, model, http10](size_t,
                                                                          httplib::DataSink& sink) {
        auto send = [&](const json& j) {
            const std::string event = "data: " + dump(j) + "\n\n";
            return sink.write(event.data(), event.size());
        };
        if (!st->sent_role && st->gen->chat()) {
            // The role comes first, once per choice.
            json role = st->gen->chunk(id, created, model, {});
            for (int i = 0; i < st->gen->n_choices(); ++i)
                role["choices"].push_back({{"index", i},
                                           {"delta", {{"role", "assistant"}, {"content", ""}}},
                                           {"logprobs", nullptr},
                                           {"finish_reason", nullptr}});
            if (!send(role)) return false;
        }
        st->sent_role = true;
        std::vector<Generation::Delta> deltas;
        const bool done =
            st->gen->poll(SteadyClock::now() + std::chrono::milliseconds(100), &deltas);
        if (!deltas.empty() && !send(st->gen->chunk(id, created, model, deltas))) return false;
        if (!done) return sink.is_writable();
        if (!st->gen->error().empty()) {
            ApiError e = error_for_status(500, "generation failed: " + st->gen->error());
            if (!send(e.to_json())) return false;
        }
        if (include_usage) {
            json u = st->gen->chunk(id, created, model, {});
            u["usage"] = st->gen->usage();
            if (!send(u)) return false;
        }
        static const std::string kDone = "data: [DONE]\n\n";
        if (!sink.write(kDone.data(), kDone.size())) return false;
        st->finished = true;
        sink.done();
        // HTTP/1.0: the stream's end is the connection's end (failing closes it, even for a
        // client that asked to keep it alive).
        return !http10;
    };
    auto release = [st](bool) {
        // The connection ended (completed, or the client went away): free the sequences.
        st->gen->cancel();
        st->worker.reset();
    };
    if (http10) {
        // No chunked encoding in HTTP/1.0: the events as they are, ended by closing.
        res.set_header("Connection", "close");
        res.set_content_provider("text/event-stream", std::move(provider), std::move(release));
    } else {
        res.set_chunked_content_provider("text/event-stream", std::move(provider),
                                         std::move(release));
    }
}

Server::Server(Engine& engine, Tokenizer tokenizer, ChatTemplate chat_template, int32_t eos_id,
               ServerOptions options)
    : impl_(std::make_unique<Impl>(engine, std::move(tokenizer), std::move(chat_template), eos_id,
                                   std::move(options))) {
    impl_->routes();
}

Server::~Server() = default;

Result<int> Server::bind() {
    const std::string& host = impl_->opt.host;
    int port = impl_->opt.port;
    if (port == 0) {
        port = impl_->http.bind_to_any_port(host);
        if (port < 0) return io_error("cannot listen on " + host + ": no free port");
    } else if (!impl_->http.bind_to_port(host, port)) {
        return io_error("cannot listen on " + host + ":" + std::to_string(port) +
                        " (in use, or not an address of this machine)");
    }
    // cpp-httplib listens with a backlog of 5 (compiled into Debian's shared library): a burst
    // of clients overflows it and the kernel resets connections. A second listen() on the
    // socket widens the queue.
    if (impl_->listen_fd >= 0) ::listen(impl_->listen_fd, SOMAXCONN);
    return port;
}

void Server::serve() {
    impl_->http.listen_after_bind();
}

void Server::shutdown() {
    Impl& s = *impl_;
    if (s.shutting_down.exchange(true)) return;
    s.engine.stop_accepting();
    const auto grace_end =
        SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                 std::chrono::duration<double>(s.opt.shutdown_grace_s));
    while (SteadyClock::now() < grace_end && (s.engine.active() > 0 || s.busy_workers > 0))
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    s.engine.cancel_all();
    // Cancelled requests still write their last chunk and [DONE]; give them a moment.
    const auto drain_end = SteadyClock::now() + std::chrono::seconds(2);
    while (SteadyClock::now() < drain_end && s.busy_workers > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    s.http.stop();
}

}  // namespace duality::server
