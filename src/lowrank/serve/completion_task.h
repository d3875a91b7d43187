// CompletionTask — the task layer between the HTTP transport (http_server.h) and the engine, after
// llama.cpp's server split (http / task / queue / engine): one parsed /v1/completions or
// /v1/chat/completions call (openai_api.h) as the engine requests it fans out to, and the fan-in of
// their streams into the OpenAI response body or stream chunks. No sockets and no parsing: the
// transport writes what this builds.
//
// Fan-out: a call with P prompts and n samples each has P × n choices; choice i is prompt i / n,
// sample i % n, and a given seed becomes seed + (i % n), so that the n samples differ and a
// request is reproducible.
//
// Lifetime: the task is shared by the handler and its response's content provider. When the last
// owner lets go (the response was written, or its client vanished), requests still running are
// cancelled. Not thread-safe: one response drives it at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/serve/engine.h"
#include "lowrank/serve/openai_api.h"

namespace lowrank::serve {

// What every response of one call carries.
struct ResponseMeta {
  std::string id;  // "cmpl-…" / "chatcmpl-…"
  int64_t created = 0;
  std::string model;  // as the response names it
  bool chat = false;
  bool include_usage = false;
  int64_t prompt_tokens = 0;  // Σ over prompts, each counted once whatever n is
};

class CompletionTask {
 public:
  // One choice's engine request and what it produced so far.
  struct Choice {
    std::shared_ptr<RequestStream> stream;
    std::string text;
    int64_t completion_tokens = 0;
    bool done = false;
    FinishReason finish = FinishReason::kNone;
    std::string message;
    std::vector<LogprobEntry> logprobs;         // per generated token, when asked for
    std::vector<LogprobEntry> prompt_logprobs;  // with echo and logprobs: prompt tokens 1..
    int64_t text_offset = 0;                    // completions' logprobs: characters reported so far
    bool started = false;                       // its first event has arrived
    EndedBy ended_by = EndedBy::kRequest;       // from the finish event
    RequestTimings timings;                     // from the finish event
  };
  // An engine event of choice `choice`.
  struct Event {
    size_t choice = 0;
    StreamEvent event;
    std::string echo;      // the choice's first event with echo: its prompt's text, sent first
    OrderedJson logprobs;  // the chunk's logprobs object (null unless asked for)
  };
  // How the server counts tasks: `in_flight` while a task lives (responses not yet written), and
  // `on_disconnect` once for a task whose client went away while it still ran. Either may be null.
  struct Counters {
    std::atomic<int64_t>* in_flight = nullptr;
    std::function<void()> on_disconnect;
  };

  CompletionTask(Engine& engine, ResponseMeta meta, Counters counters);
  CompletionTask(const CompletionTask&) = delete;
  CompletionTask& operator=(const CompletionTask&) = delete;
  ~CompletionTask();  // cancels what still runs

  // Queues every choice of `call` for `adapter` ("" = the base model). Returns false when the
  // engine refused one because its queue is full or it is shutting down (the choices queued so
  // far are cancelled when the task dies), with a hint in `retry_after_s`. Throws ApiError 404
  // (model_not_found) for an adapter that is not loaded.
  bool submit(const GenerateCall& call, const std::string& adapter, int64_t& retry_after_s);

  const ResponseMeta& meta() const { return meta_; }
  const std::vector<Choice>& choices() const { return choices_; }
  bool all_done() const { return live_ == 0; }

  // Appends the events available on every stream to `out`, waiting up to `timeout` for the first
  // one. Returns true when it got any.
  bool collect(std::vector<Event>& out, std::chrono::milliseconds timeout);
  // Waits until every choice has finished or `timeout` passed; true when all finished.
  bool wait_all(std::chrono::milliseconds timeout);
  // The client went away: cancel what still runs (counted once as a disconnect).
  void client_gone();

  // The body of a finished non-streaming call. Throws ApiError when a choice did not finish
  // normally (503 cancelled, 400 rejected); a choice a shutdown's drain ended has its text so far
  // and finish_reason "abort" (as vLLM reports an aborted request).
  OrderedJson final_body() const;
  // Streaming: chat's first chunk of every choice (the assistant role), empty for completions.
  std::vector<OrderedJson> opening_chunks() const;
  // The chunks of one event: its text (none when empty), then for a finish its finish_reason, or
  // an error object for a choice that could not finish normally (as vLLM sends mid-stream).
  std::vector<OrderedJson> event_chunks(const Event& e) const;
  // The last chunk with the usage, when the call asked for it (stream_options.include_usage).
  std::optional<OrderedJson> usage_chunk() const;

 private:
  void apply(size_t i, StreamEvent e, std::vector<Event>& out);
  void cancel_unfinished();
  Usage usage() const;

  // The logprobs object of `entries` (completions: after `leading`, its offsets from
  // `text_offset`, advanced past them).
  OrderedJson logprobs_json(int64_t& text_offset, std::optional<int64_t> leading,
                            std::span<const LogprobEntry> entries) const;
  std::string token_text(int64_t id) const;
  size_t prompt_of(size_t choice) const { return choice / static_cast<size_t>(n_); }

  Engine& engine_;
  ResponseMeta meta_;
  // From the call (submit): samples per prompt, log-probabilities, echo and the prompts.
  int64_t n_ = 1;
  bool logprobs_ = false;
  bool echo_ = false;
  std::vector<std::string> prompt_texts_;
  std::vector<int64_t> first_prompt_tokens_;
  Counters counters_;
  std::vector<Choice> choices_;
  size_t live_ = 0;
  std::atomic<bool> gone_{false};
};

}  // namespace lowrank::serve
