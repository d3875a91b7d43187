// HttpServer — the OpenAI-compatible HTTP front of the serving engine (engine.h), on cpp-httplib
// (kept out of this header). Endpoints, after the OpenAI API reference and vLLM's server:
//   POST /v1/completions, POST /v1/chat/completions   (JSON, or server-sent events with stream)
//   GET  /v1/models, GET /v1/models/{id}              (adapters list the base model as "parent")
//   POST /v1/load_lora_adapter, /v1/unload_lora_adapter (vLLM's runtime adapter API)
//   POST /tokenize, POST /detokenize, GET /version    (vLLM's shapes; no API key needed, as vLLM)
//   GET  /health, GET /metrics                         (no API key needed; Prometheus text)
//   GET  /, /playground/*                              (the playground page, playground.h)
//   GET  /runs, /runs/{name}                           (run reports, with ServerConfig::runs_dir)
// This file is the transport: routes, authentication, worker threads, body limits, errors mapped
// to statuses, streaming and disconnects. Request and response shapes are in openai_api.h, the
// fan-out of a call into engine requests in completion_task.h, the adapter root's confinement in
// adapter_root.h; docs/serving.md is the user's page.
//
// Deviations and limits:
//   - A client that disconnects cancels its requests. A streaming response notices at its next
//     write; while no token comes it writes an SSE comment (": keep-alive") every `heartbeat`. A
//     non-streaming response that takes longer than `heartbeat` is sent chunked, with JSON
//     whitespace (" ") as the probe, and its status is then fixed at 200: a request that fails
//     after that point (its adapter was unloaded while it waited, a shutdown without drain) gets
//     the OpenAI error object in a 200 body.
//   - /v1/load_lora_adapter only reads directories under the adapter root (adapter_root.h).
//   - Shutdown (stop(), on SIGTERM) follows vLLM's --shutdown-timeout (vllm-project/vllm#34730):
//     new requests get 503 with Retry-After, /health answers 503 so that a proxy takes the replica
//     out, in-flight requests get `drain_timeout` to finish, and those still running then end with
//     their text so far and finish_reason "abort" (streams: that chunk, then [DONE]).
//   - One request-log line per generation call (request_log.h), in ServerConfig::log_format.
//
// Threads: httplib's pool runs the handlers (ServerConfig::threads of them; a streaming response
// holds one for its duration); the engine runs the model on its own thread (Engine::start()).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/serve/engine.h"
#include "lowrank/serve/openai_api.h"
#include "lowrank/serve/request_log.h"

namespace lowrank::data {
class Tokenizer;
}

namespace lowrank::serve {

struct ServerConfig {
  std::string host = "127.0.0.1";      // loopback unless told otherwise
  int port = 8080;                     // 0: any free port (see HttpServer::port())
  std::string api_key;                 // empty: no authentication; else `Authorization: Bearer KEY` on /v1/*
  std::string model_name = "lowrank";  // the base model's id in the API
  std::filesystem::path adapter_root;  // empty: /v1/load_lora_adapter is refused
  size_t max_body_bytes = size_t{1} << 20;  // larger request bodies get 413
  int64_t max_prompt_tokens = 0;            // 0: the model's context
  int64_t max_choices = 64;                 // prompts × n in one request
  int threads = 16;                         // HTTP worker threads (concurrent connections)
  ChatTemplate chat_template = ChatTemplate::kPlain;
  // How long a response waits for the engine before probing its client (see the file comment).
  std::chrono::milliseconds heartbeat{1000};
  // stop(): how long to wait for responses still being written after the engine has shut down.
  std::chrono::milliseconds stop_timeout{10000};
  // stop(true): how long in-flight requests may run before they are ended ("abort"); 0 ends them
  // at once (vLLM's --shutdown-timeout 0).
  std::chrono::milliseconds drain_timeout{30000};
  // The Retry-After of the 503 answered while stopping, seconds.
  int64_t stopping_retry_after_s = 1;
  LogFormat log_format = LogFormat::kText;  // the request log (request_log.h)
  // Cross-origin use: empty (default) sends no CORS header, so browsers keep other origins' pages
  // from reading responses; an origin ("https://app.example") or "*" is allowed to call the API
  // (preflight OPTIONS answered, Access-Control-Allow-Origin on responses to that origin).
  std::string cors_origin;
  std::filesystem::path runs_dir;  // empty: GET /runs answers 404
};

class HttpServer {
 public:
  // Serves `engine` (which the caller starts, and which must outlive the server) with `tokenizer`
  // for text prompts. Throws InvalidArgument for a bad config field.
  HttpServer(Engine& engine, const data::Tokenizer& tokenizer, ServerConfig config);
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer();  // stop(false) if still running

  // Binds host:port and serves on a background thread; returns once the socket listens. Throws
  // IoError when the address cannot be bound, InvalidArgument when called twice.
  void start();
  // The bound port (the chosen one when ServerConfig::port was 0); 0 before start().
  int port() const;
  // Graceful stop: new API requests get 503 with Retry-After and /health 503, the engine shuts
  // down (Engine::shutdown: with `drain`, in-flight requests get ServerConfig::drain_timeout to
  // finish; without, or after it, they end with finish_reason "abort"), responses still being
  // written get up to stop_timeout, then the socket closes and the thread joins. Idempotent; any
  // thread.
  void stop(bool drain = true);
  // Blocks until stop() has finished.
  void wait();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Compares `given` against the secret `expected` in time that depends only on expected's length
// (every byte is compared, no early exit), so that response times do not reveal a key's prefix.
bool constant_time_equal(std::string_view given, std::string_view expected);

}  // namespace lowrank::serve
