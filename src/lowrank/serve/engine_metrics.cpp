// The serving engine's throughput, TTFT, queue-time, per-adapter and adapter-copy bookkeeping;
// see engine_metrics.h.
#include "lowrank/serve/engine_metrics.h"

#include <algorithm>

namespace lowrank::serve {
namespace {

constexpr std::array<double, 12> kTtftBuckets = {0.005, 0.01, 0.025, 0.05, 0.1,  0.25,
                                                 0.5,   1.0,  2.5,   5.0,  10.0, 30.0};
// vLLM's request_latency_buckets (vllm/v1/metrics/loggers.py), which its
// vllm:request_queue_time_seconds uses.
constexpr std::array<double, 21> kQueueTimeBuckets = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                                      5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                                      60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
// Tokens per second are averaged over this much recent history.
constexpr auto kRateWindow = std::chrono::seconds(10);

// Counts `seconds` in the first bucket whose upper bound holds it (Prometheus' `le`), else +Inf.
void count_in_bucket(std::span<const double> bounds, std::vector<int64_t>& counts, double seconds) {
  const auto bucket = std::lower_bound(bounds.begin(), bounds.end(), seconds) - bounds.begin();
  ++counts[static_cast<size_t>(bucket)];
}

std::vector<int64_t> cumulative(const std::vector<int64_t>& counts) {
  std::vector<int64_t> out;
  int64_t total = 0;
  for (int64_t n : counts) out.push_back(total += n);
  return out;
}

}  // namespace

std::span<const double> ttft_buckets() {
  return kTtftBuckets;
}

std::span<const double> queue_time_buckets() {
  return kQueueTimeBuckets;
}

EngineMetrics::EngineMetrics()
    : ttft_counts_(kTtftBuckets.size() + 1, 0), queue_counts_(kQueueTimeBuckets.size() + 1, 0) {}

void EngineMetrics::record_first_token(std::chrono::duration<double> ttft) {
  count_in_bucket(kTtftBuckets, ttft_counts_, ttft.count());
  ttft_sum_ += ttft.count();
  ++ttft_count_;
}

void EngineMetrics::record_request(const std::string& adapter) {
  ++adapter_requests_[adapter];
}

void EngineMetrics::record_queue_time(std::chrono::duration<double> waited) {
  count_in_bucket(kQueueTimeBuckets, queue_counts_, waited.count());
  queue_sum_ += waited.count();
  ++queue_count_;
}

void EngineMetrics::record_step(int64_t prompt_tokens, int64_t generated, Clock::time_point now) {
  prompt_tokens_ += prompt_tokens;
  recent_tokens_.emplace_back(now, generated);
  while (!recent_tokens_.empty() && now - recent_tokens_.front().first > kRateWindow)
    recent_tokens_.pop_front();
}

void EngineMetrics::record_adapter_copies(int64_t copies, int64_t bytes) {
  adapter_copies_ += copies;
  adapter_bytes_copied_ += bytes;
}

void EngineMetrics::fill(EngineStats& stats, Clock::time_point now) const {
  stats.prompt_tokens = prompt_tokens_;
  int64_t recent = 0;
  for (const auto& [time, n] : recent_tokens_) recent += n;
  if (!recent_tokens_.empty()) {
    const double span =
        std::max(1.0, std::chrono::duration<double>(now - recent_tokens_.front().first).count());
    stats.tokens_per_second = static_cast<double>(recent) / span;
  }
  stats.ttft_bounds.assign(kTtftBuckets.begin(), kTtftBuckets.end());
  stats.ttft_counts = cumulative(ttft_counts_);
  stats.ttft_sum = ttft_sum_;
  stats.ttft_count = ttft_count_;
  stats.adapter_copies = adapter_copies_;
  stats.adapter_bytes_copied = adapter_bytes_copied_;
  stats.queue_time = {.bounds = std::vector<double>(kQueueTimeBuckets.begin(), kQueueTimeBuckets.end()),
                      .cumulative = cumulative(queue_counts_),
                      .sum = queue_sum_,
                      .count = queue_count_};
  stats.adapter_requests = adapter_requests_;
}

}  // namespace lowrank::serve
