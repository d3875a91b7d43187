// `lowrank serve` shut down under load, as a process: SIGTERM while streamed and non-streamed
// requests run. The server must exit 0; every request it accepted must end with a finish reason
// (streams: a finish_reason chunk, then [DONE]; the others: their body's finish_reason), none cut
// off; requests that arrive during the drain get 503 with Retry-After, and /health answers 503.
// With --log-format json every request-log line on stderr parses and carries its fields. A second
// SIGTERM ends the process at once. CTest stops either test after 60 s (tests/cli/tests.cmake).
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>

#include "lowrank/core/json.h"
#include "tests/cli/serve_process.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::ServerProcess;

// Choices per request: with --max-running 1 the engine runs them one after another, so that a
// request's work (8 × 180 tokens) outlasts the drain even on a fast machine.
constexpr int kChoices = 8;

// One request's outcome as its client saw it.
struct Outcome {
  bool stream = false;
  int status = 0;                   // 0: no HTTP response at all
  std::vector<std::string> finish;  // per choice, its finish_reason ("" when none came)
  bool done = false;                // streams: "data: [DONE]" came
  bool error_chunk = false;         // streams: an error object came instead of a finish
  std::string retry_after;
};

Json completion_body(bool stream, int salt) {
  std::string prompt;
  for (int i = 0; i < 12; ++i) prompt += "word" + std::to_string((i * 7 + salt) % 10) + " ";
  return Json{{"model", "tiny"}, {"prompt", prompt},   {"max_tokens", 180},
              {"n", kChoices},   {"ignore_eos", true}, {"temperature", 0.5},
              {"seed", salt},    {"stream", stream},   {"user", "quote\" and\nnewline"}};
}

// Sends one completion; `first_text` is set once a streamed response has carried text.
Outcome run_request(int port, bool stream, int salt, std::atomic<bool>* first_text) {
  Outcome out;
  out.stream = stream;
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = completion_body(stream, salt).dump();
  req.set_header("Content-Type", "application/json");
  std::string body;
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    body.append(data, size);
    if (first_text && body.find("\"text\":\"") != std::string::npos) *first_text = true;
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  if (!client.send(req, res, error)) return out;
  out.status = res.status;
  out.retry_after = res.get_header_value("Retry-After");
  if (res.status != 200) return out;
  out.finish.assign(kChoices, "");
  auto note_finishes = [&](const Json& value) {
    if (!value.contains("choices")) return;
    for (const Json& choice : value["choices"])
      if (!choice["finish_reason"].is_null())
        out.finish.at(choice["index"].get<size_t>()) = choice["finish_reason"].get<std::string>();
  };
  if (!stream) {
    note_finishes(Json::parse(body));
    return out;
  }
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    const std::string data = body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (data == "[DONE]") {
      out.done = true;
      continue;
    }
    const Json chunk = Json::parse(data);
    if (chunk.contains("error")) out.error_chunk = true;
    note_finishes(chunk);
  }
  return out;
}

TEST(ServeShutdownTest, SigtermDrainsInFlightRequestsAndRefusesNewOnes) {
  testing::TempDir dir;
  const fs::path model_dir = testing::tiny_hf_model(dir.path());
  const fs::path log = dir / "serve.log";
  ServerProcess server(
      model_dir, log,
      {"--max-running", "1", "--max-batch-tokens", "4", "--drain-seconds", "0.5", "--log-format", "json"});
  ASSERT_GT(server.port(), 0) << "the server did not start; see its log";

  // A request whose body is not UTF-8 is refused (400), and still logged as one valid JSON line.
  {
    httplib::Client c("127.0.0.1", server.port());
    auto r = c.Post("/v1/completions", "{\"prompt\": \"\xff\xfe\", \"max_tokens\": 2}", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
  }

  constexpr int kRequests = 6;
  std::atomic<bool> first_text{false};
  std::vector<Outcome> outcomes(kRequests);
  std::vector<std::thread> clients;
  for (int i = 0; i < kRequests; ++i)
    clients.emplace_back([&, i] {
      outcomes[static_cast<size_t>(i)] =
          run_request(server.port(), i % 2 == 0, i, i == 0 ? &first_text : nullptr);
    });
  // The first streamed text: usually within milliseconds, but a loaded 2-core machine (ctest -j2
  // beside a build) has been seen to take over 3 s, so the deadline is generous. On failure the
  // clients are joined before the test returns (a joinable std::thread must not be destroyed).
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!first_text && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  if (!first_text) {
    server.signal(SIGTERM);
    for (auto& t : clients) t.join();
    FAIL() << "no streamed text within 30 s";
  }
  std::this_thread::sleep_for(50ms);  // every client has sent its request by now
  server.signal(SIGTERM);

  // During the drain: /health says 503 (a proxy takes the replica out), a new request gets 503
  // with Retry-After and OpenAI's error shape.
  httplib::Client probe("127.0.0.1", server.port());
  int health = 0;
  for (int i = 0; i < 400 && health != 503; ++i) {
    if (auto r = probe.Get("/health")) health = r->status;
    if (health != 503) std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(health, 503);
  auto late = probe.Post("/v1/completions", completion_body(false, 9).dump(), "application/json");
  ASSERT_TRUE(late) << "the server closed before the drain ended: " << httplib::to_string(late.error());
  EXPECT_EQ(late->status, 503) << late->body;
  EXPECT_FALSE(late->get_header_value("Retry-After").empty());
  EXPECT_EQ(Json::parse(late->body)["error"]["code"], "server_shutting_down") << late->body;

  for (std::thread& t : clients) t.join();
  const int status = server.wait_exit(20);
  ASSERT_NE(status, -1) << "the server did not exit within 20 s of SIGTERM";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;

  int accepted = 0;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const Outcome& o = outcomes[i];
    ASSERT_NE(o.status, 0) << "request " << i << " got no response";
    if (o.status == 503) {  // arrived after the signal: refused, not cut
      EXPECT_FALSE(o.retry_after.empty()) << "request " << i;
      continue;
    }
    ASSERT_EQ(o.status, 200) << "request " << i;
    ++accepted;
    for (size_t c = 0; c < o.finish.size(); ++c) {
      EXPECT_TRUE(o.finish[c] == "length" || o.finish[c] == "stop" || o.finish[c] == "abort")
          << "request " << i << " choice " << c << " ended without a finish reason: '" << o.finish[c] << "'";
    }
    if (o.stream) {
      EXPECT_TRUE(o.done) << "stream " << i << " has no [DONE]";
      EXPECT_FALSE(o.error_chunk) << "stream " << i;
    }
  }
  EXPECT_GE(accepted, 1);
  // Whether the 0.5 s drain cuts a request here depends on the machine's speed and on when the
  // clients' requests arrived relative to the signal, so this process test does not require an
  // "abort"; it requires that every accepted choice ends with a finish reason. That a drain which
  // runs out of time ends what still runs with "abort" is checked deterministically in-process:
  // EngineTest.DrainLimitEndsWhatStillRuns and the HttpServerTest drain with no time left.

  // The request log: one JSON object per generation call, each with its fields.
  std::ifstream in(log);
  std::string line;
  int logged_ok = 0, logged_bad_request = 0, logged_refused = 0;
  while (std::getline(in, line)) {
    if (!line.starts_with("{")) continue;
    const Json record = Json::parse(line);  // throws (fails) unless valid
    for (const char* key : {"id", "adapter", "user", "status", "finish_reason", "prompt_tokens",
                            "completion_tokens", "queue_ms", "prefill_ms", "decode_ms", "total_ms"})
      EXPECT_TRUE(record.contains(key)) << key << " in " << line;
    const int code = record["status"];
    logged_ok += code == 200;
    logged_bad_request += code == 400;
    logged_refused += code == 503;
    if (code == 200) {
      EXPECT_EQ(record["user"], "quote\" and\nnewline");
      EXPECT_EQ(record["finish_reason"].size(), static_cast<size_t>(kChoices)) << line;
    }
  }
  EXPECT_EQ(logged_ok, accepted);
  EXPECT_EQ(logged_bad_request, 1);
  EXPECT_GE(logged_refused, 1);
}

TEST(ServeShutdownTest, SecondSigtermExitsAtOnce) {
  testing::TempDir dir;
  const fs::path model_dir = testing::tiny_hf_model(dir.path());
  ServerProcess server(model_dir, dir / "serve.log",
                       {"--max-running", "1", "--max-batch-tokens", "4", "--drain-seconds", "60"});
  ASSERT_GT(server.port(), 0) << "the server did not start; see its log";
  std::atomic<bool> first_text{false};
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i)
    clients.emplace_back([&, i] { run_request(server.port(), true, i, i == 0 ? &first_text : nullptr); });
  for (int i = 0; i < 3000 && !first_text; ++i) std::this_thread::sleep_for(1ms);
  server.signal(SIGTERM);
  std::this_thread::sleep_for(100ms);
  const auto sent = std::chrono::steady_clock::now();
  server.signal(SIGTERM);
  const int status = server.wait_exit(10);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  for (std::thread& t : clients) t.join();
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGTERM) << "wait status " << status;
  EXPECT_LT(seconds, 2.0);  // not the 60 s drain
}

}  // namespace
}  // namespace lowrank
