// HttpServer on cpp-httplib: routes, authentication, body limits, errors mapped to statuses,
// writing responses (plain, chunked with heartbeats, server-sent events), disconnect detection and
// graceful stop (see http_server.h). What a call means is the task layer's (completion_task.h). The only file
// that includes httplib.h; it is compiled with pkg-config's cpp-httplib flags (CMakeLists.txt).
#include "lowrank/serve/http_server.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <random>
#include <thread>

// cpp-httplib listens with a backlog of 5 by default: 16 clients connecting at once overflowed it
// and some got a connection reset (bench/peers/serve_llamacpp.py). Only this file includes the
// server side of httplib, so the setting is the same for every use of it.
#ifndef CPPHTTPLIB_LISTEN_BACKLOG
#define CPPHTTPLIB_LISTEN_BACKLOG 512
#endif
#include <httplib.h>

#include "lowrank/core/log.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/serve/adapter_root.h"
#include "lowrank/serve/completion_task.h"
#include "lowrank/serve/playground.h"
#include "lowrank/serve/request_log.h"
#include "lowrank/version.h"

namespace lowrank::serve {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

bool constant_time_equal(std::string_view given, std::string_view expected) {
  // The loop runs over the secret's length whatever `given` is, and ORs every difference in:
  // no branch depends on a secret byte. `acc` is volatile so that the compiler cannot turn the
  // accumulation into an early exit.
  volatile unsigned char acc = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto g = static_cast<unsigned char>(i < given.size() ? given[i] : 0);
    acc = static_cast<unsigned char>(acc | (g ^ static_cast<unsigned char>(expected[i])));
  }
  return acc == 0;
}

namespace {

using Clock = std::chrono::steady_clock;

std::string random_hex_id() {
  // Unique per process (counter) and unlikely to repeat across restarts (random base).
  static const uint64_t base = std::random_device{}() * 0x9E3779B97F4A7C15ull ^ std::random_device{}();
  static std::atomic<uint64_t> counter{0};
  const uint64_t x = base + counter.fetch_add(1) * 0xD1B54A32D192ED03ull;
  static const char* kHex = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 0; i < 16; ++i) out[i] = kHex[(x >> (60 - 4 * i)) & 0xF];
  return out;
}

std::string sse(const OrderedJson& value) {
  return "data: " + to_text(value) + "\n\n";
}

const char* status_text(int status) {
  switch (status) {
    case 400:
      return "malformed HTTP request";
    case 404:
      return "no such endpoint";
    case 405:
      return "method not allowed";
    case 413:
      return "request body too large";
    case 414:
      return "request URI too long";
    default:
      return "HTTP error";
  }
}

}  // namespace

struct HttpServer::Impl {
  Impl(Engine& e, const data::Tokenizer& t, ServerConfig c) : engine(e), tokenizer(t), config(std::move(c)) {
    LR_CHECK(config.threads >= 1, InvalidArgument, "ServerConfig.threads must be >= 1, got ", config.threads);
    LR_CHECK(config.port >= 0 && config.port <= 65535, InvalidArgument,
             "ServerConfig.port must be in [0, 65535], got ", config.port);
    LR_CHECK(config.max_body_bytes > 0, InvalidArgument, "ServerConfig.max_body_bytes must be > 0");
    LR_CHECK(config.heartbeat > 0ms, InvalidArgument, "ServerConfig.heartbeat must be > 0");
    LR_CHECK(!config.model_name.empty(), InvalidArgument, "ServerConfig.model_name is empty");
    LR_CHECK(config.drain_timeout.count() >= 0, InvalidArgument,
             "ServerConfig.drain_timeout must be >= 0, got ", config.drain_timeout.count(), " ms");
    limits = api_limits(engine, config.max_prompt_tokens, config.max_choices);
    created = static_cast<int64_t>(std::time(nullptr));
    routes();
  }

  // --- plumbing ------------------------------------------------------------------------------

  static void send_json(httplib::Response& res, int status, const OrderedJson& body) {
    res.status = status;
    res.set_content(to_text(body), "application/json");
  }

  static void send_error(httplib::Response& res, const ApiError& e) {
    if (e.status() >= 500) log::warn("HTTP ", e.status(), ": ", e.what());
    send_json(res, e.status(), error_body(e));
  }

  // Every handler runs inside this: an exception becomes an OpenAI error response (the one place
  // errors are translated; see to_api_error).
  template <typename Fn>
  httplib::Server::Handler guarded(Fn fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) {
      try {
        (this->*fn)(req, res);
      } catch (...) {
        send_error(res, to_api_error(std::current_exception()));
      }
    };
  }

  // While stopping: 503 with Retry-After (a proxy retries elsewhere), OpenAI's error shape.
  void refuse_if_stopping(httplib::Response& res) const {
    if (!stopping) return;
    res.set_header("Retry-After", std::to_string(config.stopping_retry_after_s));
    throw ApiError(503, "the server is shutting down", "", "server_shutting_down");
  }

  static Json parse_body(const httplib::Request& req) {
    try {
      return parse_json(req.body, "the request body");
    } catch (const Error& e) {
      throw ApiError(400, e.what());
    }
  }

  // The adapter `model` names: "" for the base model (or no model given), else an adapter, whose
  // existence the engine checks once, at admission (CompletionTask::submit answers 404).
  std::string adapter_of(const std::string& model) const {
    if (model.empty() || model == config.model_name) return {};
    return model;
  }

  void routes() {
    // httplib owns and deletes the task queue it gets from this factory.
    svr.new_task_queue = [n = config.threads] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
    svr.set_payload_max_length(config.max_body_bytes);
    // Streamed tokens are small writes: with Nagle's algorithm a kept-alive connection (the openai
    // client's, a proxy's) holds the first event back until the peer's delayed ACK, about 40 ms.
    svr.set_tcp_nodelay(true);
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (preflight(req, res)) return httplib::Server::HandlerResponse::Handled;
      return authorized(req, res) ? httplib::Server::HandlerResponse::Unhandled
                                  : httplib::Server::HandlerResponse::Handled;
    });
    svr.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (cors_allows(req)) allow_origin(req, res);
    });
    // httplib's own refusals (unknown route, 413, a malformed request) get the OpenAI error shape
    // too; responses our handlers wrote already have a body.
    svr.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty() || res.content_provider_) return;
      std::string message = status_text(res.status);
      std::string code;
      if (res.status == 404) message = str("no such endpoint: ", req.method, " ", req.path);
      if (res.status == 413) {
        message = str("the request body is larger than the limit of ", config.max_body_bytes, " bytes");
        code = "request_too_large";
      }
      send_json(res, res.status, error_body(ApiError(res.status, message, "", code)));
    });
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      send_error(res, to_api_error(ep));
    });
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      {
        std::lock_guard lock(counters_mutex);
        ++counters.responses[res.status];
      }
      log::debug("HTTP ", req.method, " ", req.path, " -> ", res.status);
    });

    svr.Post("/v1/completions", guarded(&Impl::completions));
    svr.Post("/v1/chat/completions", guarded(&Impl::chat_completions));
    svr.Get("/v1/models", guarded(&Impl::models));
    svr.Get(R"(/v1/models/([^/]+))", guarded(&Impl::model));
    svr.Post("/v1/load_lora_adapter", guarded(&Impl::load_lora_adapter));
    svr.Post("/v1/unload_lora_adapter", guarded(&Impl::unload_lora_adapter));
    svr.Post("/tokenize", guarded(&Impl::tokenize));
    svr.Post("/detokenize", guarded(&Impl::detokenize));
    svr.Get("/version", guarded(&Impl::version));
    svr.Get("/health", guarded(&Impl::health));
    svr.Get("/metrics", guarded(&Impl::metrics));
    for (const PlaygroundAsset& asset : playground_assets())
      svr.Get(std::string(asset.path), [&asset](const httplib::Request&, httplib::Response& res) {
        send_page(res, asset.body, asset.content_type, playground_csp());
      });
    svr.Get("/runs", guarded(&Impl::runs));
    svr.Get(R"(/runs/([^/]+))", guarded(&Impl::run_page));
  }

  // --- cross-origin requests (ServerConfig::cors_origin) -------------------------------------

  bool cors_allows(const httplib::Request& req) const {
    if (config.cors_origin.empty() || !req.has_header("Origin")) return false;
    return config.cors_origin == "*" || req.get_header_value("Origin") == config.cors_origin;
  }

  void allow_origin(const httplib::Request& req, httplib::Response& res) const {
    res.set_header("Access-Control-Allow-Origin",
                   config.cors_origin == "*" ? std::string("*") : req.get_header_value("Origin"));
    res.set_header("Vary", "Origin");
  }

  // A CORS preflight from an allowed origin, answered before authentication (a preflight carries
  // no Authorization header). Without --cors-origin, OPTIONS falls through to 404.
  bool preflight(const httplib::Request& req, httplib::Response& res) const {
    if (req.method != "OPTIONS" || !cors_allows(req)) return false;
    allow_origin(req, res);
    res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
    res.set_header("Access-Control-Max-Age", "600");
    res.status = 204;
    return true;
  }

  // --- pages (playground.h) ------------------------------------------------------------------

  static void send_page(httplib::Response& res, std::string_view body, std::string_view content_type,
                        std::string_view csp) {
    for (const auto& [name, value] : page_headers(csp)) res.set_header(name, value);
    res.set_content(std::string(body), std::string(content_type));
  }

  void runs(const httplib::Request&, httplib::Response& res) {
    if (config.runs_dir.empty())
      throw ApiError(404, "no runs directory: start the server with --runs DIR", "", "runs_disabled");
    send_page(res, runs_index_html(config.runs_dir), "text/html; charset=utf-8", report_csp());
  }

  void run_page(const httplib::Request& req, httplib::Response& res) {
    if (config.runs_dir.empty())
      throw ApiError(404, "no runs directory: start the server with --runs DIR", "", "runs_disabled");
    send_page(res, run_page_html(config.runs_dir, req.matches[1]), "text/html; charset=utf-8", report_csp());
  }

  // `Authorization: Bearer KEY` on /v1/*; /health and /metrics stay open for probes and scrapers
  // (as vLLM). The check runs before the body is read, so an unauthenticated client cannot make
  // the server buffer a body.
  bool authorized(const httplib::Request& req, httplib::Response& res) const {
    if (config.api_key.empty() || !req.path.starts_with("/v1/")) return true;
    const std::string header = req.get_header_value("Authorization");
    std::string_view token;
    if (header.size() > 7 && (header.starts_with("Bearer ") || header.starts_with("bearer ")))
      token = std::string_view(header).substr(7);
    if (constant_time_equal(token, config.api_key)) return true;
    send_error(res, ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'", "",
                             "invalid_api_key"));
    return false;
  }

  // --- generation ----------------------------------------------------------------------------

  void completions(const httplib::Request& req, httplib::Response& res) { generate(req, res, false); }
  void chat_completions(const httplib::Request& req, httplib::Response& res) { generate(req, res, true); }

  // One generation call's request-log line, written when the last response callback holding it
  // lets go (the response was written, failed, or its client vanished), then its task released.
  struct CallLog {
    CallLog(const RequestLog& log, std::string endpoint) : writer(log), arrived(Clock::now()) {
      record.endpoint = std::move(endpoint);
    }
    CallLog(const CallLog&) = delete;
    CallLog& operator=(const CallLog&) = delete;
    ~CallLog() {
      try {
        if (task) fill_from_task();
        record.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - arrived).count();
        writer.write(record);
      } catch (...) {  // a log line must not take the server down
      }
    }
    void fill_from_task() {
      record.prompt_tokens = task->meta().prompt_tokens;
      for (const CompletionTask::Choice& c : task->choices()) {
        record.completion_tokens += c.completion_tokens;
        record.queue_ms = std::max(record.queue_ms, 1e3 * c.timings.queue_s);
        record.prefill_ms = std::max(record.prefill_ms, 1e3 * c.timings.prefill_s);
        record.decode_ms = std::max(record.decode_ms, 1e3 * c.timings.decode_s);
        std::string reason(api_finish_reason(c.finish));
        if (!c.done)
          reason = "none";
        else if (c.ended_by == EndedBy::kTimeout)
          reason = "timeout";
        else if (c.finish == FinishReason::kCancelled && c.ended_by != EndedBy::kShutdown)
          reason = "cancelled";
        else if (c.finish == FinishReason::kRejected)
          reason = "rejected";
        record.finish_reasons.push_back(std::move(reason));
      }
    }
    const RequestLog& writer;
    Clock::time_point arrived;
    RequestRecord record;
    std::shared_ptr<CompletionTask> task;
  };

  void generate(const httplib::Request& req, httplib::Response& res, bool chat) {
    auto call_log = std::make_shared<CallLog>(request_log, req.path);
    try {
      generate_logged(req, res, chat, call_log);
    } catch (...) {
      call_log->record.status = to_api_error(std::current_exception()).status();
      throw;
    }
  }

  void generate_logged(const httplib::Request& req, httplib::Response& res, bool chat,
                       const std::shared_ptr<CallLog>& call_log) {
    refuse_if_stopping(res);
    const Json body = parse_body(req);
    GenerateCall call = chat ? parse_chat_request(body, tokenizer, config.chat_template, limits)
                             : parse_completion_request(body, tokenizer, limits);
    ResponseMeta meta{.id = (chat ? "chatcmpl-" : "cmpl-") + random_hex_id(),
                      .created = static_cast<int64_t>(std::time(nullptr)),
                      .model = call.model.empty() ? config.model_name : call.model,
                      .chat = chat,
                      .include_usage = call.include_usage};
    call_log->record.id = meta.id;
    call_log->record.adapter = adapter_of(call.model);
    call_log->record.user = call.user;
    for (const auto& p : call.prompts) meta.prompt_tokens += static_cast<int64_t>(p.size());
    auto task = std::make_shared<CompletionTask>(
        engine, std::move(meta), CompletionTask::Counters{.in_flight = &in_flight, .on_disconnect = [this] {
                                                            std::lock_guard lock(counters_mutex);
                                                            ++counters.disconnects;
                                                          }});
    int64_t retry_after_s = 1;
    if (!task->submit(call, adapter_of(call.model), retry_after_s)) {
      // `task` going out of scope cancels the choices already queued.
      refuse_if_stopping(res);
      res.set_header("Retry-After", std::to_string(retry_after_s));
      throw ApiError(429, "the server's request queue is full; retry later", "", "rate_limit_exceeded");
    }
    call_log->task = std::move(task);
    if (call.stream)
      stream_response(call_log, res);
    else
      complete_response(call_log, res);
  }

  void complete_response(std::shared_ptr<CallLog> call_log, httplib::Response& res) {
    const std::shared_ptr<CompletionTask>& task = call_log->task;
    // Most calls finish within one heartbeat: answer with a plain body and its true status.
    if (task->wait_all(config.heartbeat)) {
      send_json(res, 200, task->final_body());
      return;
    }
    // Longer ones: chunked, probing the client with JSON whitespace every heartbeat (a write to a
    // closed connection fails, which cancels the requests). The content type carries a charset so
    // that httplib does not gzip the body: compression would swallow the one-byte probes.
    res.status = 200;
    res.set_chunked_content_provider(
        "application/json; charset=utf-8",
        [this, call_log](size_t, httplib::DataSink& sink) {
          CompletionTask& task = *call_log->task;
          try {
            if (!task.wait_all(config.heartbeat)) {
              if (sink.write(" ", 1)) return true;
              task.client_gone();
              call_log->record.status = kClientClosedRequest;
              return false;
            }
            std::string body;
            try {
              body = to_text(task.final_body());
            } catch (...) {
              const ApiError error = to_api_error(std::current_exception());
              call_log->record.status = error.status();  // in a 200 body: the status fixed already
              body = to_text(error_body(error));
            }
            body += "\n";
            if (!sink.write(body.data(), body.size())) {
              call_log->record.status = kClientClosedRequest;
              return false;
            }
            sink.done();
            return true;
          } catch (...) {
            return false;
          }
        },
        [call_log](bool) {});
  }

  void stream_response(std::shared_ptr<CallLog> call_log, httplib::Response& res) {
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");  // proxies: pass events through as they come
    auto started = std::make_shared<bool>(false);
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, call_log, started](size_t, httplib::DataSink& sink) {
          CompletionTask& task = *call_log->task;
          try {
            std::string out;
            if (!*started)
              for (const OrderedJson& chunk : task.opening_chunks()) out += sse(chunk);
            *started = true;
            std::vector<CompletionTask::Event> events;
            const bool got = task.collect(events, config.heartbeat);
            for (const CompletionTask::Event& e : events)
              for (const OrderedJson& chunk : task.event_chunks(e)) out += sse(chunk);
            if (task.all_done()) {
              if (const auto usage = task.usage_chunk()) out += sse(*usage);
              out += "data: [DONE]\n\n";
            } else if (!got && out.empty()) {
              out = ": keep-alive\n\n";  // an SSE comment: clients ignore it, a dead socket fails it
            }
            // A zero-length write would end httplib's chunked stream: write only real data.
            if (!out.empty() && !sink.write(out.data(), out.size())) {
              task.client_gone();
              call_log->record.status = kClientClosedRequest;
              return false;
            }
            if (task.all_done()) sink.done();
            return true;
          } catch (...) {
            return false;
          }
        },
        [call_log](bool) {});
  }

  // --- models and adapters -------------------------------------------------------------------

  void models(const httplib::Request&, httplib::Response& res) {
    const std::vector<AdapterInfo> adapters = engine.adapters();
    send_json(res, 200, models_response(config.model_name, created, limits.context, adapters));
  }

  void model(const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (id == config.model_name) return send_json(res, 200, model_json(id, created, "", limits.context));
    if (engine.has_adapter(id))
      return send_json(res, 200, model_json(id, created, config.model_name, limits.context));
    throw ApiError(404, str("The model '", id, "' does not exist"), "model", "model_not_found");
  }

  static std::string string_field(const Json& body, const char* key, bool required) {
    const auto it = body.find(key);
    if (it == body.end() || it->is_null()) {
      if (required) throw ApiError(400, str("'", key, "' is required"), key);
      return {};
    }
    if (!it->is_string()) throw ApiError(400, str("'", key, "' must be a string"), key);
    return it->get<std::string>();
  }

  void load_lora_adapter(const httplib::Request& req, httplib::Response& res) {
    refuse_if_stopping(res);
    const Json body = parse_body(req);
    if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
    const std::string name = string_field(body, "lora_name", true);
    const std::string path = string_field(body, "lora_path", false);
    if (config.adapter_root.empty())
      throw ApiError(403, "loading adapters is disabled: the server was started without an adapter root", "",
                     "adapter_loading_disabled");
    check_adapter_name(name);
    if (name == config.model_name) throw ApiError(400, "'lora_name' is the base model's name", "lora_name");
    if (engine.has_adapter(name))
      throw ApiError(400, str("The lora adapter '", name, "' has already been loaded."), "lora_name");
    const fs::path dir = resolve_adapter_dir(config.adapter_root, name, path);
    engine.load_adapter(name, dir);
    log::info("loaded adapter ", name);
    res.set_content(str("Success: LoRA adapter '", name, "' added successfully."), "text/plain");
  }

  void unload_lora_adapter(const httplib::Request& req, httplib::Response& res) {
    refuse_if_stopping(res);
    const Json body = parse_body(req);
    if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
    const std::string name = string_field(body, "lora_name", true);
    try {
      engine.unload_adapter(name);
    } catch (const NotFound&) {
      throw ApiError(404, str("The lora adapter '", name, "' is not loaded"), "lora_name", "model_not_found");
    }
    log::info("unloaded adapter ", name);
    res.set_content(str("Success: LoRA adapter '", name, "' removed successfully."), "text/plain");
  }

  // --- tokenizer (vLLM's /tokenize and /detokenize) and /version ---------------------------------

  void tokenize(const httplib::Request& req, httplib::Response& res) {
    send_json(res, 200, tokenize_response(parse_body(req), tokenizer, config.chat_template, limits));
  }

  void detokenize(const httplib::Request& req, httplib::Response& res) {
    send_json(res, 200, detokenize_response(parse_body(req), tokenizer, limits));
  }

  void version(const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"version", LOWRANK_VERSION}});  // CMakeLists.txt project(VERSION)
  }

  // --- probes --------------------------------------------------------------------------------

  void health(const httplib::Request&, httplib::Response& res) {
    send_json(res, stopping ? 503 : 200, {{"status", stopping ? "stopping" : "ok"}});
  }

  void metrics(const httplib::Request&, httplib::Response& res) {
    HttpCounters snapshot;
    {
      std::lock_guard lock(counters_mutex);
      snapshot = counters;
    }
    res.set_content(prometheus_metrics(engine.stats(), snapshot), "text/plain; version=0.0.4; charset=utf-8");
  }

  // nginx's status for a request whose client closed the connection before the response ended.
  static constexpr int kClientClosedRequest = 499;

  Engine& engine;
  const data::Tokenizer& tokenizer;
  ServerConfig config;
  RequestLog request_log{config.log_format};
  ApiLimits limits;
  int64_t created = 0;
  httplib::Server svr;
  std::thread thread;
  int bound_port = 0;
  std::atomic<bool> stopping{false};
  std::atomic<bool> listen_ended{false};
  std::atomic<int64_t> in_flight{0};  // live CompletionTasks: responses not yet fully written
  std::mutex counters_mutex;
  HttpCounters counters;
  std::mutex state_mutex;
  std::condition_variable state_changed;
  bool started = false, stop_begun = false, stopped = false;
};

HttpServer::HttpServer(Engine& engine, const data::Tokenizer& tokenizer, ServerConfig config)
    : impl_(std::make_unique<Impl>(engine, tokenizer, std::move(config))) {}

HttpServer::~HttpServer() {
  bool running;
  {
    std::lock_guard lock(impl_->state_mutex);
    running = impl_->started && !impl_->stop_begun;
  }
  if (running) stop(false);
}

void HttpServer::start() {
  Impl& s = *impl_;
  std::lock_guard lock(s.state_mutex);
  LR_CHECK(!s.started, InvalidArgument, "HttpServer::start: already started");
  const std::string& host = s.config.host;
  int port = s.config.port;
  if (port == 0)
    port = s.svr.bind_to_any_port(host);
  else if (!s.svr.bind_to_port(host, port))
    port = -1;
  LR_CHECK(port > 0, IoError, "cannot listen on ", host, ":", s.config.port,
           " (address in use, or not an address of this machine)");
  s.bound_port = port;
  s.listen_ended = false;
  s.thread = std::thread([&s] {
    s.svr.listen_after_bind();
    s.listen_ended = true;
  });
  // The socket already accepts connections (they queue until the accept loop runs), but stop()
  // only takes effect once the loop has started: wait for it so that an early stop() is not lost.
  while (!s.svr.is_running() && !s.listen_ended) std::this_thread::sleep_for(1ms);
  s.started = true;
}

int HttpServer::port() const {
  return impl_->bound_port;
}

void HttpServer::stop(bool drain) {
  Impl& s = *impl_;
  {
    std::unique_lock lock(s.state_mutex);
    if (s.stop_begun) {
      s.state_changed.wait(lock, [&] { return s.stopped; });
      return;
    }
    s.stop_begun = true;
  }
  s.stopping = true;
  // vLLM's --shutdown-timeout 0: no drain at all.
  if (drain && s.config.drain_timeout.count() == 0) drain = false;
  s.engine.shutdown(drain, s.config.drain_timeout);
  // Every stream has its finish event now; give the responses time to write it.
  const auto deadline = Clock::now() + s.config.stop_timeout;
  while (s.in_flight > 0 && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  if (s.thread.joinable()) {
    s.svr.stop();
    s.thread.join();
  }
  {
    std::lock_guard lock(s.state_mutex);
    s.stopped = true;
  }
  s.state_changed.notify_all();
}

void HttpServer::wait() {
  std::unique_lock lock(impl_->state_mutex);
  impl_->state_changed.wait(lock, [&] { return impl_->stopped; });
}

}  // namespace lowrank::serve
