// The serving engine's throughput, TTFT and adapter-copy bookkeeping; see engine_metrics.h.
#include "lowrank/serve/engine_metrics.h"

#include <algorithm>

namespace lowrank::serve {
namespace {

constexpr std::array<double, 12> kTtftBuckets = {0.005, 0.01, 0.025, 0.05, 0.1,  0.25,
                                                 0.5,   1.0,  2.5,   5.0,  10.0, 30.0};
// Tokens per second are averaged over this much recent history.
constexpr auto kRateWindow = std::chrono::seconds(10);

}  // namespace

std::span<const double> ttft_buckets() {
  return kTtftBuckets;
}

EngineMetrics::EngineMetrics() : ttft_counts_(kTtftBuckets.size() + 1, 0) {}

void EngineMetrics::record_first_token(std::chrono::duration<double> ttft) {
  const auto bucket =
      std::lower_bound(kTtftBuckets.begin(), kTtftBuckets.end(), ttft.count()) - kTtftBuckets.begin();
  ++ttft_counts_[static_cast<size_t>(bucket)];
  ttft_sum_ += ttft.count();
  ++ttft_count_;
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
  int64_t cumulative = 0;
  stats.ttft_counts.clear();
  for (int64_t n : ttft_counts_) stats.ttft_counts.push_back(cumulative += n);
  stats.ttft_sum = ttft_sum_;
  stats.ttft_count = ttft_count_;
  stats.adapter_copies = adapter_copies_;
  stats.adapter_bytes_copied = adapter_bytes_copied_;
}

}  // namespace lowrank::serve
