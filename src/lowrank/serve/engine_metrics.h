// EngineStats and EngineMetrics — what the serving engine reports to /metrics (Prometheus, see
// openai_api.h): prompt tokens, generated tokens per second over a sliding window, the
// time-to-first-token and queue-time histograms, requests per adapter, and the adapter copies into
// the page pool (paged_lora.h). EngineMetrics
// keeps the running sums; it is not thread-safe (the engine updates and reads it under its own lock).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/serve/scheduler.h"

namespace lowrank::serve {

// One Prometheus histogram: cumulative counts per upper bound, the last for +Inf
// (bounds.size() + 1 of them), and the sum and count of the observations.
struct HistogramStats {
  std::vector<double> bounds;
  std::vector<int64_t> cumulative;
  double sum = 0;
  int64_t count = 0;
};

// Prometheus-ready numbers.
struct EngineStats {
  SchedulerStats scheduler;
  int64_t adapters_loaded = 0;  // in host memory (registered)
  // Adapter weights in the page pool: copies made (each a scheduler load, SchedulerStats'
  // adapters.loads, or a repair after a failed step), their bytes, the bytes the resident
  // adapters occupy now, and the pool's size (KV and adapters together).
  int64_t adapter_copies = 0;
  int64_t adapter_bytes_copied = 0;
  int64_t adapter_bytes_resident = 0;
  int64_t pool_bytes = 0;
  int64_t prompt_tokens = 0;     // prefilled
  double tokens_per_second = 0;  // generated tokens over the last ~10 s
  // Time to first token, seconds: cumulative counts per upper bound (Prometheus histogram).
  std::vector<double> ttft_bounds;
  std::vector<int64_t> ttft_counts;  // ttft_bounds.size() + 1 (the last is +Inf)
  double ttft_sum = 0;
  int64_t ttft_count = 0;
  // Seconds from submit() to a request's first step (vLLM's vllm:request_queue_time_seconds).
  HistogramStats queue_time;
  // Requests accepted per adapter name ("" = the base model), since start.
  std::map<std::string, int64_t> adapter_requests;
};

// The TTFT histogram's bucket bounds, seconds.
std::span<const double> ttft_buckets();
// The queue-time histogram's bucket bounds, seconds: vLLM's request latency buckets
// (vllm/v1/metrics/loggers.py, request_latency_buckets).
std::span<const double> queue_time_buckets();

class EngineMetrics {
 public:
  using Clock = std::chrono::steady_clock;

  EngineMetrics();
  // A request's first token came `ttft` after it was submitted.
  void record_first_token(std::chrono::duration<double> ttft);
  // A step at `now` prefilled `prompt_tokens` and generated `generated` tokens.
  void record_step(int64_t prompt_tokens, int64_t generated, Clock::time_point now);
  // A request for `adapter` ("" = the base model) was accepted.
  void record_request(const std::string& adapter);
  // A request's first step came `waited` after it was submitted.
  void record_queue_time(std::chrono::duration<double> waited);
  // `copies` adapters of `bytes` bytes in all were copied into the pool.
  void record_adapter_copies(int64_t copies, int64_t bytes);
  // Sets the fields of `stats` this class owns (prompt tokens, rate, TTFT, adapter copies), as of
  // `now`.
  void fill(EngineStats& stats, Clock::time_point now) const;

 private:
  int64_t prompt_tokens_ = 0;
  std::deque<std::pair<Clock::time_point, int64_t>> recent_tokens_;  // (step time, generated)
  std::vector<int64_t> ttft_counts_;  // per bucket (not cumulative); the last is +Inf
  double ttft_sum_ = 0;
  int64_t ttft_count_ = 0;
  int64_t adapter_copies_ = 0;
  int64_t adapter_bytes_copied_ = 0;
  std::vector<int64_t> queue_counts_;  // per bucket (not cumulative); the last is +Inf
  double queue_sum_ = 0;
  int64_t queue_count_ = 0;
  std::map<std::string, int64_t> adapter_requests_;
};

}  // namespace lowrank::serve
