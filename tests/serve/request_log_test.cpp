// The request log's lines (request_log.h) and /metrics' queue-time histogram and per-adapter
// counts, held to what a parser and Prometheus' bucket rule (`le`: at most the bound) make of them.
#include "lowrank/serve/request_log.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "lowrank/core/json.h"
#include "lowrank/serve/engine_metrics.h"
#include "lowrank/serve/openai_api.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

using testing::error_of;

RequestRecord awkward_record() {
  RequestRecord r;
  r.id = "cmpl-0123";
  r.endpoint = "/v1/completions";
  // A client's strings: quotes, a backslash, newlines, a control byte, and bytes that are not UTF-8.
  r.adapter = "quo\"te\\d\nnew\rline\x01 \xff\xfe end";
  r.user = "tab\there \xc3\x28 \xe2\x82";
  r.status = 200;
  r.finish_reasons = {"stop", "abort"};
  r.prompt_tokens = 7;
  r.completion_tokens = 12;
  r.queue_ms = 1.25;
  r.prefill_ms = 3.5;
  r.decode_ms = 40.0;
  r.total_ms = 45.0;
  return r;
}

TEST(RequestLogTest, JsonLineParsesWithEveryField) {
  const RequestRecord r = awkward_record();
  const std::string line = request_log_json(r);
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  EXPECT_EQ(line.find('\r'), std::string::npos) << line;
  const Json parsed = Json::parse(line);  // throws (fails the test) unless valid JSON and UTF-8
  for (const char* key : {"id", "endpoint", "adapter", "user", "status", "finish_reason", "prompt_tokens",
                          "completion_tokens", "queue_ms", "prefill_ms", "decode_ms", "total_ms"})
    EXPECT_TRUE(parsed.contains(key)) << key;
  EXPECT_EQ(parsed["id"], "cmpl-0123");
  EXPECT_EQ(parsed["status"], 200);
  EXPECT_EQ(parsed["finish_reason"], Json::array({"stop", "abort"}));
  EXPECT_EQ(parsed["prompt_tokens"], 7);
  EXPECT_EQ(parsed["completion_tokens"], 12);
  EXPECT_DOUBLE_EQ(parsed["queue_ms"].get<double>(), 1.25);
  EXPECT_DOUBLE_EQ(parsed["total_ms"].get<double>(), 45.0);
  // The valid characters survive; each invalid byte became U+FFFD.
  const std::string adapter = parsed["adapter"];
  EXPECT_EQ(adapter, "quo\"te\\d\nnew\rline\x01 \xEF\xBF\xBD\xEF\xBF\xBD end");
  EXPECT_TRUE(parsed["user"].get<std::string>().starts_with("tab\there ")) << parsed["user"];
}

TEST(RequestLogTest, TextLineIsOneLine) {
  const std::string line = request_log_text(awkward_record());
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  EXPECT_NE(line.find("cmpl-0123"), std::string::npos) << line;
  EXPECT_NE(line.find("status 200"), std::string::npos) << line;
  EXPECT_NE(line.find("finish stop,abort"), std::string::npos) << line;
}

TEST(RequestLogTest, FormatNamesAreChecked) {
  EXPECT_EQ(parse_log_format("json"), LogFormat::kJson);
  EXPECT_EQ(parse_log_format("text"), LogFormat::kText);
  const std::string message = error_of([] { parse_log_format("xml"); });
  EXPECT_NE(message.find("--log-format"), std::string::npos) << message;
  EXPECT_NE(message.find("xml"), std::string::npos) << message;
}

// Prometheus counts an observation in every bucket whose bound is at least it: 0.5 s is in
// le="0.5" and above, not in le="0.3"; 0.31 s likewise; 9000 s only in +Inf.
TEST(QueueTimeMetricsTest, BucketsFollowPrometheusLeRule) {
  EngineMetrics metrics;
  for (double seconds : {0.5, 0.31, 9000.0})
    metrics.record_queue_time(std::chrono::duration<double>(seconds));
  metrics.record_request("a");
  metrics.record_request("");
  metrics.record_request("a");
  EngineStats stats;
  metrics.fill(stats, EngineMetrics::Clock::now());
  const HistogramStats& q = stats.queue_time;
  ASSERT_EQ(q.bounds.size(), 21u);  // vLLM's request_latency_buckets
  EXPECT_EQ(q.bounds.front(), 0.3);
  EXPECT_EQ(q.bounds.back(), 7680.0);
  EXPECT_EQ(q.cumulative[0], 0);                    // le 0.3
  EXPECT_EQ(q.cumulative[1], 2);                    // le 0.5
  EXPECT_EQ(q.cumulative[q.bounds.size() - 1], 2);  // le 7680
  EXPECT_EQ(q.cumulative.back(), 3);                // +Inf
  EXPECT_DOUBLE_EQ(q.sum, 9000.81);
  EXPECT_EQ(q.count, 3);

  const std::string text = prometheus_metrics(stats, HttpCounters{});
  for (const char* line :
       {"# TYPE lowrank_request_queue_time_seconds histogram\n",
        "lowrank_request_queue_time_seconds_bucket{le=\"0.3\"} 0\n",
        "lowrank_request_queue_time_seconds_bucket{le=\"0.5\"} 2\n",
        "lowrank_request_queue_time_seconds_bucket{le=\"+Inf\"} 3\n",
        "lowrank_request_queue_time_seconds_count 3\n", "# TYPE lowrank_adapter_requests_total counter\n",
        "lowrank_adapter_requests_total{adapter=\"a\"} 2\n",
        "lowrank_adapter_requests_total{adapter=\"\"} 1\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line << "\nin:\n" << text;
}

}  // namespace
}  // namespace lowrank::serve
