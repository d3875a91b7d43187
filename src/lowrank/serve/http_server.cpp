// HttpServer on cpp-httplib: routes, authentication, the request → engine → response flow,
// streaming, disconnect detection and graceful stop (see http_server.h). The only file that
// includes httplib.h; it is compiled with pkg-config's cpp-httplib flags (CMakeLists.txt).
#include "lowrank/serve/http_server.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <random>
#include <thread>

#include <httplib.h>

#include "lowrank/core/log.h"
#include "lowrank/data/tokenizer.h"

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

void check_adapter_name(std::string_view name, std::string_view param) {
  const std::string p(param);
  if (name.empty()) throw ApiError(400, str("'", param, "' is empty"), p);
  if (name.size() > 255) throw ApiError(400, str("'", param, "' is longer than 255 bytes"), p);
  if (name.front() == '.') throw ApiError(400, str("'", param, "' must not start with '.'"), p);
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '/' || c == '\\' || u < 0x20 || u == 0x7f)
      throw ApiError(400, str("'", param, "' must not contain '/', '\\\\', NUL or control characters"), p);
  }
}

fs::path resolve_adapter_dir(const fs::path& root, std::string_view name, std::string_view lora_path) {
  check_adapter_name(name);
  std::error_code ec;
  const fs::path canonical_root = fs::canonical(root, ec);
  // The root is the operator's; its path stays out of client-facing messages.
  if (ec || !fs::is_directory(canonical_root))
    throw ApiError(500, "the adapter root is not a readable directory");
  const std::string param = lora_path.empty() ? "lora_name" : "lora_path";
  if (lora_path.find('\0') != std::string_view::npos) throw ApiError(400, "'lora_path' contains NUL", param);
  fs::path candidate = lora_path.empty() ? canonical_root / fs::path(name) : fs::path(lora_path);
  if (candidate.is_relative()) candidate = canonical_root / candidate;
  // Symlinks in the existing part are resolved, ".." is removed lexically in the rest: what the
  // check below sees is where a later open would land.
  const fs::path resolved = fs::weakly_canonical(candidate, ec);
  if (ec) throw ApiError(404, str("adapter '", name, "' not found"), param, "adapter_not_found");
  auto [r, c] = std::mismatch(canonical_root.begin(), canonical_root.end(), resolved.begin(), resolved.end());
  const bool inside = r == canonical_root.end() && c != resolved.end() && !c->empty();
  if (!inside) throw ApiError(400, str("'", param, "' resolves outside the adapter root"), param);
  if (!fs::is_directory(resolved))
    throw ApiError(404, str("adapter '", name, "' not found under the adapter root"), param,
                   "adapter_not_found");
  if (!fs::is_regular_file(resolved / "adapter_config.json"))
    throw ApiError(404, str("adapter '", name, "' has no adapter_config.json"), param, "adapter_not_found");
  return resolved;
}

std::vector<AdapterInfo> register_adapter_root(Engine& engine, const fs::path& root) {
  LR_CHECK(fs::is_directory(root), NotFound, root.string(), ": the adapter root is not a directory");
  std::vector<fs::path> dirs;
  for (const fs::directory_entry& e : fs::directory_iterator(root))
    if (e.is_directory() && fs::is_regular_file(e.path() / "adapter_config.json")) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  std::vector<AdapterInfo> infos;
  for (const fs::path& dir : dirs) {
    const std::string name = dir.filename().string();
    if (name.starts_with(".")) continue;  // hidden directories are not adapters
    fs::path resolved;
    try {
      resolved = resolve_adapter_dir(root, name);
    } catch (const ApiError& e) {
      log::warn(dir.string(), ": skipped (", e.what(), ")");
      continue;
    }
    infos.push_back(engine.load_adapter(name, resolved));
  }
  return infos;
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
  // The requests of one API call (prompts × n choices) and what they produced so far. Shared by
  // the handler and its response's content provider; when the last owner lets go (the response was
  // written, or its client vanished), requests still running are cancelled.
  class Batch {
   public:
    struct Slot {
      std::shared_ptr<RequestStream> stream;
      std::string text;
      int64_t completion_tokens = 0;
      bool done = false;
      FinishReason finish = FinishReason::kNone;
      std::string message;
    };
    struct Event {
      size_t slot = 0;
      StreamEvent event;
    };

    explicit Batch(Impl& server) : server_(server) { ++server_.in_flight; }
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;
    ~Batch() {
      cancel_unfinished();
      --server_.in_flight;
    }

    void add(std::shared_ptr<RequestStream> stream) {
      Slot slot;
      slot.stream = std::move(stream);
      slots_.push_back(std::move(slot));
    }
    const std::vector<Slot>& slots() const { return slots_; }
    bool all_done() const { return live_ == 0; }
    void seal() { live_ = slots_.size(); }

    // Appends the events available on every stream to `out`, waiting up to `timeout` for the
    // first one. Returns true when it got any.
    bool collect(std::vector<Event>& out, std::chrono::milliseconds timeout) {
      const auto deadline = Clock::now() + timeout;
      const size_t before = out.size();
      for (;;) {
        for (size_t i = 0; i < slots_.size(); ++i) {
          StreamEvent e;
          while (!slots_[i].done && slots_[i].stream->next(e, 0ms)) apply(i, std::move(e), out);
        }
        if (out.size() > before || all_done()) return out.size() > before;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left <= 0ms) return false;
        // Block on one live stream; with several, only briefly, then poll them all again.
        const auto first = std::find_if(slots_.begin(), slots_.end(), [](const Slot& s) { return !s.done; });
        const auto slice = live_ == 1 ? left : std::min(left, std::chrono::milliseconds(5));
        StreamEvent e;
        if (first->stream->next(e, slice))
          apply(static_cast<size_t>(first - slots_.begin()), std::move(e), out);
      }
    }

    // Waits until every request has finished or `timeout` passed; true when all finished.
    bool wait_all(std::chrono::milliseconds timeout) {
      const auto deadline = Clock::now() + timeout;
      std::vector<Event> events;
      while (!all_done()) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left <= 0ms) return false;
        events.clear();
        collect(events, left);
      }
      return true;
    }

    // The client went away: cancel what still runs, counted once as a disconnect.
    void client_gone() {
      if (gone_.exchange(true)) return;
      if (!all_done()) {
        std::lock_guard lock(server_.counters_mutex);
        ++server_.counters.disconnects;
      }
      cancel_unfinished();
    }

    void cancel_unfinished() {
      for (Slot& s : slots_)
        if (!s.done && !s.stream->finished()) server_.engine.cancel(s.stream->id());
    }

   private:
    void apply(size_t i, StreamEvent e, std::vector<Event>& out) {
      Slot& s = slots_[i];
      if (e.kind == StreamEvent::Kind::kToken) {
        s.text += e.text;
      } else {
        s.done = true;
        --live_;
        s.finish = e.finish;
        s.message = e.message;
        s.completion_tokens = e.completion_tokens;
      }
      out.push_back({i, std::move(e)});
    }

    Impl& server_;
    std::vector<Slot> slots_;
    size_t live_ = 0;
    std::atomic<bool> gone_{false};
  };

  // What every response of one call carries.
  struct Meta {
    std::string id;
    int64_t created = 0;
    std::string model;
    bool chat = false;
    bool include_usage = false;
    int64_t prompt_tokens = 0;  // Σ over prompts, each counted once whatever n is
  };

  Impl(Engine& e, const data::Tokenizer& t, ServerConfig c) : engine(e), tokenizer(t), config(std::move(c)) {
    LR_CHECK(config.threads >= 1, InvalidArgument, "ServerConfig.threads must be >= 1, got ", config.threads);
    LR_CHECK(config.port >= 0 && config.port <= 65535, InvalidArgument,
             "ServerConfig.port must be in [0, 65535], got ", config.port);
    LR_CHECK(config.max_body_bytes > 0, InvalidArgument, "ServerConfig.max_body_bytes must be > 0");
    LR_CHECK(config.heartbeat > 0ms, InvalidArgument, "ServerConfig.heartbeat must be > 0");
    LR_CHECK(!config.model_name.empty(), InvalidArgument, "ServerConfig.model_name is empty");
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

  void refuse_if_stopping() const {
    if (stopping) throw ApiError(503, "the server is shutting down", "", "server_shutting_down");
  }

  static Json parse_body(const httplib::Request& req) {
    try {
      return parse_json(req.body, "the request body");
    } catch (const Error& e) {
      throw ApiError(400, e.what());
    }
  }

  // The adapter `model` names: "" for the base model (or no model given), else a loaded adapter.
  std::string adapter_of(const std::string& model) const {
    if (model.empty() || model == config.model_name) return {};
    if (engine.has_adapter(model)) return model;
    throw ApiError(404, str("The model '", model, "' does not exist"), "model", "model_not_found");
  }

  void routes() {
    // httplib owns and deletes the task queue it gets from this factory.
    svr.new_task_queue = [n = config.threads] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
    svr.set_payload_max_length(config.max_body_bytes);
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      return authorized(req, res) ? httplib::Server::HandlerResponse::Unhandled
                                  : httplib::Server::HandlerResponse::Handled;
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
    svr.Get("/health", guarded(&Impl::health));
    svr.Get("/metrics", guarded(&Impl::metrics));
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

  void generate(const httplib::Request& req, httplib::Response& res, bool chat) {
    refuse_if_stopping();
    const Json body = parse_body(req);
    GenerateCall call = chat ? parse_chat_request(body, tokenizer, config.chat_template, limits)
                             : parse_completion_request(body, tokenizer, limits);
    const std::string adapter = adapter_of(call.model);
    Meta meta{.id = (chat ? "chatcmpl-" : "cmpl-") + random_hex_id(),
              .created = static_cast<int64_t>(std::time(nullptr)),
              .model = call.model.empty() ? config.model_name : call.model,
              .chat = chat,
              .include_usage = call.include_usage};
    for (const auto& p : call.prompts) meta.prompt_tokens += static_cast<int64_t>(p.size());

    // Choice i = prompt i / n, sample i % n; a given seed becomes seed + (i % n), so the n
    // samples differ and a request is reproducible.
    auto batch = std::make_shared<Batch>(*this);
    for (const auto& prompt : call.prompts) {
      for (int64_t j = 0; j < call.n; ++j) {
        GenerationRequest request{.adapter = adapter, .prompt = prompt, .sampling = call.sampling};
        if (call.sampling.seed) request.sampling.seed = *call.sampling.seed + static_cast<uint64_t>(j);
        SubmitResult submitted;
        try {
          submitted = engine.submit(std::move(request));
        } catch (const NotFound& e) {  // the adapter was unloaded since adapter_of()
          throw ApiError(404, e.what(), "model", "model_not_found");
        }
        if (!submitted.stream) {
          // `batch` going out of scope cancels the choices already queued.
          refuse_if_stopping();
          res.set_header("Retry-After", std::to_string(std::max<int64_t>(1, submitted.retry_after_s)));
          throw ApiError(429, "the server's request queue is full; retry later", "", "rate_limit_exceeded");
        }
        batch->add(std::move(submitted.stream));
      }
    }
    batch->seal();
    if (call.stream)
      stream_response(std::move(batch), std::move(meta), res);
    else
      complete_response(std::move(batch), std::move(meta), res);
  }

  // The body of a finished non-streaming call; throws ApiError when a choice did not finish
  // normally.
  static OrderedJson final_body(const Batch& batch, const Meta& meta) {
    std::vector<Choice> choices;
    Usage usage{.prompt_tokens = meta.prompt_tokens};
    for (size_t i = 0; i < batch.slots().size(); ++i) {
      const Batch::Slot& s = batch.slots()[i];
      if (s.finish == FinishReason::kCancelled)
        throw ApiError(503, "the request was cancelled (server shutting down)", "", "cancelled");
      if (s.finish != FinishReason::kStop && s.finish != FinishReason::kLength)
        throw ApiError(400, str("the request could not be served: ", s.message), "", "rejected");
      choices.push_back({.index = static_cast<int64_t>(i), .text = s.text, .finish = s.finish});
      usage.completion_tokens += s.completion_tokens;
    }
    return meta.chat ? chat_response(meta.id, meta.created, meta.model, choices, usage)
                     : completion_response(meta.id, meta.created, meta.model, choices, usage);
  }

  void complete_response(std::shared_ptr<Batch> batch, Meta meta, httplib::Response& res) {
    // Most calls finish within one heartbeat: answer with a plain body and its true status.
    if (batch->wait_all(config.heartbeat)) {
      send_json(res, 200, final_body(*batch, meta));
      return;
    }
    // Longer ones: chunked, probing the client with JSON whitespace every heartbeat (a write to a
    // closed connection fails, which cancels the requests). The content type carries a charset so
    // that httplib does not gzip the body: compression would swallow the one-byte probes.
    res.status = 200;
    res.set_chunked_content_provider(
        "application/json; charset=utf-8",
        [this, batch, meta](size_t, httplib::DataSink& sink) {
          try {
            if (!batch->wait_all(config.heartbeat)) {
              if (sink.write(" ", 1)) return true;
              batch->client_gone();
              return false;
            }
            std::string body;
            try {
              body = to_text(final_body(*batch, meta));
            } catch (...) {
              body = to_text(error_body(to_api_error(std::current_exception())));
            }
            body += "\n";
            if (!sink.write(body.data(), body.size())) return false;
            sink.done();
            return true;
          } catch (...) {
            return false;
          }
        },
        [batch](bool) {});
  }

  void stream_response(std::shared_ptr<Batch> batch, Meta meta, httplib::Response& res) {
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");  // proxies: pass events through as they come
    auto started = std::make_shared<bool>(false);
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, batch, meta, started](size_t, httplib::DataSink& sink) {
          try {
            std::string out;
            if (!*started && meta.chat) {
              for (size_t i = 0; i < batch->slots().size(); ++i)
                out += sse(chat_chunk(meta.id, meta.created, meta.model, static_cast<int64_t>(i), "",
                                      std::nullopt,
                                      /*role_only=*/true));
            }
            *started = true;
            std::vector<Batch::Event> events;
            const bool got = batch->collect(events, config.heartbeat);
            for (const Batch::Event& e : events) out += event_text(meta, e);
            if (batch->all_done()) {
              if (meta.include_usage) {
                Usage usage{.prompt_tokens = meta.prompt_tokens};
                for (const auto& s : batch->slots()) usage.completion_tokens += s.completion_tokens;
                out += sse(usage_chunk(meta.id, meta.created, meta.model, meta.chat, usage));
              }
              out += "data: [DONE]\n\n";
            } else if (!got && out.empty()) {
              out = ": keep-alive\n\n";  // an SSE comment: clients ignore it, a dead socket fails it
            }
            // A zero-length write would end httplib's chunked stream: write only real data.
            if (!out.empty() && !sink.write(out.data(), out.size())) {
              batch->client_gone();
              return false;
            }
            if (batch->all_done()) sink.done();
            return true;
          } catch (...) {
            return false;
          }
        },
        [batch](bool) {});
  }

  // The SSE text of one stream event: a text chunk, a finishing chunk, or (a request that could
  // not finish normally) an error object, as vLLM sends mid-stream.
  static std::string event_text(const Meta& meta, const Batch::Event& e) {
    const auto index = static_cast<int64_t>(e.slot);
    const StreamEvent& ev = e.event;
    if (ev.kind == StreamEvent::Kind::kToken) {
      if (ev.text.empty()) return {};
      return sse(meta.chat
                     ? chat_chunk(meta.id, meta.created, meta.model, index, ev.text, std::nullopt)
                     : completion_chunk(meta.id, meta.created, meta.model, index, ev.text, std::nullopt));
    }
    if (ev.finish == FinishReason::kStop || ev.finish == FinishReason::kLength)
      return sse(meta.chat ? chat_chunk(meta.id, meta.created, meta.model, index, "", ev.finish)
                           : completion_chunk(meta.id, meta.created, meta.model, index, "", ev.finish));
    const ApiError error =
        ev.finish == FinishReason::kCancelled
            ? ApiError(503, "the request was cancelled (server shutting down)", "", "cancelled")
            : ApiError(400, str("the request could not be served: ", ev.message), "", "rejected");
    return sse(error_body(error));
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
    refuse_if_stopping();
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
    refuse_if_stopping();
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

  Engine& engine;
  const data::Tokenizer& tokenizer;
  ServerConfig config;
  ApiLimits limits;
  int64_t created = 0;
  httplib::Server svr;
  std::thread thread;
  int bound_port = 0;
  std::atomic<bool> stopping{false};
  std::atomic<bool> listen_ended{false};
  std::atomic<int64_t> in_flight{0};  // live Batches: responses not yet fully written
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
  s.engine.shutdown(drain);
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
