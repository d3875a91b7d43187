// RequestStream — one request's queue of events between the serving engine (the producer, on its
// stepping thread) and the client that submitted it (the consumer, an HTTP handler or a test):
// the tokens with the text each releases, then exactly one finish event.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "lowrank/serve/sampler.h"
#include "lowrank/serve/scheduler.h"

namespace lowrank::serve {

// Who ended a request that did not end by itself (kFinish): the engine, because the request's
// deadline passed (EngineConfig::request_timeout; the event says kLength, as llama.cpp's server
// reports its time limit), or because a shutdown's drain ran out of time (kCancelled; the HTTP
// API answers it with the text so far and finish_reason "abort", vLLM's name).
enum class EndedBy { kRequest, kTimeout, kShutdown };

// Where a request's time went (kFinish), in seconds: waiting before its first step, from then to
// its first token, and from the first token to its end (0 for the phases it never reached).
struct RequestTimings {
  double queue_s = 0;
  double prefill_s = 0;
  double decode_s = 0;
};

// What a request's stream receives, in order: tokens, then exactly one finish.
struct StreamEvent {
  enum class Kind { kToken, kFinish } kind = Kind::kToken;
  int64_t token = -1;  // kToken
  std::string text;    // the text released with it (may be empty); kFinish: what was held back
  // kToken, when the request asked for logprobs: the token's entry (sampler.h); on the first token,
  // when it asked for prompt_logprobs, the entries of prompt tokens 1.. (the first has none).
  std::optional<LogprobEntry> logprobs;
  std::vector<LogprobEntry> prompt_logprobs;
  // kFinish:
  FinishReason finish = FinishReason::kNone;  // kStop, kLength, kCancelled or kRejected
  std::string message;                        // why, for kRejected
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  EndedBy ended_by = EndedBy::kRequest;
  RequestTimings timings;
};

// Thread-safe: one producer, any number of consumers (each event goes to one of them).
class RequestStream {
 public:
  explicit RequestStream(RequestId id) : id_(id) {}
  RequestId id() const { return id_; }
  // Waits up to `timeout` for the next event; false on timeout.
  bool next(StreamEvent& event, std::chrono::milliseconds timeout);
  // Blocks until the finish event; returns it, with every event's text joined into `text` and the
  // tokens into `tokens` when given.
  StreamEvent wait(std::string* text = nullptr, std::vector<int64_t>* tokens = nullptr);
  void push(StreamEvent event);  // engine side
  bool finished() const;         // the finish event was pushed (it may not be consumed yet)

 private:
  RequestId id_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<StreamEvent> events_;
  bool finished_ = false;
};

}  // namespace lowrank::serve
