// A bounded load test of `lowrank serve` from a second process on loopback: no request lost or
// corrupted, only intended 429s and 404s, memory bounded (the "load and faults" evidence of the
// serving issue; the request mix follows S-LoRA's generator in spirit — many clients, several
// adapters, greedy requests — Sheng et al., 2023, arXiv:2311.03285 — but is closed-loop).
//
// Setup, in a temporary directory: a random Llama (hidden 128, 2 layers, vocab 512) with the
// byte-level BPE tokenizer of the test fixtures, --static-adapters LoRA adapters under the adapter
// root (registered at start) and --dynamic-adapters more written there after the server started.
// The server is spawned as a child process (`lowrank serve --model DIR --adapters ROOT --port P
// --max-queue Q --max-running R`) and is ready when it prints "serving"; more clients than
// R + Q make it answer 429 at times.
//
// Load: --clients threads, each with its own keep-alive httplib::Client, send POST
// /v1/completions in a closed loop for --duration seconds: model = the base, a static adapter or a
// dynamic one; one of a few prompts; greedy, max_tokens --max-tokens; every 4th request streamed
// (server-sent events). A loader thread loads and unloads the dynamic adapters meanwhile (POST
// /v1/load_lora_adapter, /v1/unload_lora_adapter). The server's resident memory (VmRSS of
// /proc/<pid>/status) is sampled every 250 ms.
// Verdict, per response:
//   ok        200 with a well-formed completion whose text equals every other greedy completion of
//             the same model and prompt (a mismatch is a corrupted request)
//   429       intended back-pressure; must carry Retry-After
//   unloaded  intended only for a dynamic adapter that was unloaded meanwhile: 404, or the error
//             code "rejected" (the adapter went while the request waited)
//   error     anything else: a connection error, another status, a malformed body
// At the end: GET /metrics must answer, SIGTERM must stop the server cleanly within 20 s, and the
// peak RSS must stay under --rss-limit-mb. Exits 1 on any error or mismatch.
//
//   build/bin/bench_serve_load [--lowrank build/bin/lowrank] [--duration 60] [--clients 12]
//       [--max-running 4] [--max-queue 4] [--max-tokens 16] [--static-adapters 3] [--dynamic-adapters 2]
//       [--rss-limit-mb 2048] [--port 0] [--fixture tests/fixtures/hf/bpe-gpt2style/tokenizer.json]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/json.h"
#include "lowrank/core/net.h"
#include "lowrank/nn/model.h"
#include "timing.h"

extern char** environ;

namespace {

using namespace lowrank;
using bench::percentile;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct Options {
  fs::path lowrank = "build/bin/lowrank";
  fs::path tokenizer = "tests/fixtures/hf/bpe-gpt2style/tokenizer.json";
  double duration = 60;
  int clients = 12;
  int64_t max_queue = 4;
  int64_t max_running = 4;
  int64_t max_tokens = 16;
  int static_adapters = 3;
  int dynamic_adapters = 2;
  int64_t rss_limit_mb = 2048;
  int port = 0;
};

const char* const kPrompts[] = {"Hello, world", "The quick brown fox", "Once upon a time there was",
                                "A B C D E F G"};

// ---- the child process -------------------------------------------------------------------------

// The server, spawned with its stdout and stderr on a pipe that a thread drains into a log. The
// destructor kills it if it is still running.
class Server {
 public:
  Server(const std::vector<std::string>& argv) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(fds[0]);
      throw std::runtime_error("cannot spawn " + argv[0] + ": " + std::strerror(rc));
    }
    reader_ = std::thread([this, fd = fds[0]] {
      char buf[4096];
      for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) {
        std::lock_guard lock(mutex_);
        log_.append(buf, static_cast<size_t>(n));
      }
      ::close(fd);
    });
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      wait(std::chrono::seconds(5));
    }
    if (reader_.joinable()) reader_.join();
  }

  pid_t pid() const { return pid_; }
  std::string log() const {
    std::lock_guard lock(mutex_);
    return log_;
  }
  bool running() const { return !status_.has_value(); }
  // Waits up to `timeout` for the child to exit; its wait status, or nullopt.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const Clock::time_point end = Clock::now() + timeout;
    while (!status_) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        status_ = status;
        break;
      }
      if (Clock::now() > end) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return status_;
  }
  // Waits until the log contains `text` or the child exits.
  bool wait_for_output(const std::string& text, std::chrono::seconds timeout) {
    const Clock::time_point end = Clock::now() + timeout;
    while (Clock::now() < end) {
      if (log().find(text) != std::string::npos) return true;
      if (wait(std::chrono::milliseconds(0))) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  mutable std::mutex mutex_;
  std::string log_;
  std::thread reader_;
};

int64_t rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  return -1;
}

// ---- fixtures ----------------------------------------------------------------------------------

nn::ModelConfig model_config() {
  const Json config = {{"architectures", {"LlamaForCausalLM"}},
                       {"model_type", "llama"},
                       {"vocab_size", 512},
                       {"hidden_size", 128},
                       {"intermediate_size", 344},
                       {"num_hidden_layers", 2},
                       {"num_attention_heads", 4},
                       {"num_key_value_heads", 4},
                       {"max_position_embeddings", 256},
                       {"rms_norm_eps", 1e-5},
                       {"bos_token_id", 1},
                       {"eos_token_id", 2},
                       {"tie_word_embeddings", false}};
  return nn::ModelConfig::from_json(config, "load-test model");
}

void write_adapter(nn::Model& model, int index, const fs::path& dir) {
  adapt::AdapterConfig c;
  c.r = index % 2 == 0 ? 8 : 16;
  c.lora_alpha = 2.0 * static_cast<double>(c.r);
  c.target_modules = {"q_proj", "v_proj"};
  c.init_lora_weights = false;  // a non-zero Δ, so every adapter answers differently
  adapt::AttachedAdapter a = adapt::create_adapter(model, "load", c, 100 + static_cast<uint64_t>(index));
  adapt::save_adapter(a, dir);
  adapt::detach_adapter(model, a);
}

// ---- results -----------------------------------------------------------------------------------

struct Tally {
  std::mutex mutex;
  int64_t ok = 0, too_many = 0, not_found = 0, errors = 0, mismatches = 0, streamed = 0;
  int64_t loads = 0, unloads = 0, admin_refused = 0;
  std::vector<double> latency;                  // seconds, ok responses
  std::map<std::string, std::string> expected;  // model + '\n' + prompt -> text
  std::vector<std::string> examples;            // the first few errors

  void error(std::string what) {
    std::lock_guard lock(mutex);
    ++errors;
    if (examples.size() < 8) examples.push_back(std::move(what));
  }
};

// What a 200 body holds: the completion's text, or the OpenAI error object the server sends in a
// 200 body (a non-streaming response already under way, or mid-stream) when a request could not
// finish; `why` says what is malformed otherwise.
struct Completion {
  std::optional<std::string> text;
  std::string error_code;  // the error object's code, when there was one
  std::string why;
};

Completion parse_completion(const std::string& body, bool streamed) {
  Completion c;
  try {
    if (!streamed) {
      const Json j = Json::parse(body);
      if (j.contains("error")) {
        c.error_code = j["error"].value("code", std::string("(none)"));
        c.why = "error object: " + j["error"].dump();
        return c;
      }
      const Json& choice = j.at("choices").at(0);
      const std::string reason = choice.at("finish_reason").get<std::string>();
      if (reason != "length" && reason != "stop") {
        c.why = "finish_reason " + reason;
        return c;
      }
      c.text = choice.at("text").get<std::string>();
      return c;
    }
    std::string text;
    bool done = false, finished = false;
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.rfind("data: ", 0) != 0) continue;
      const std::string data = line.substr(6);
      if (data == "[DONE]") {
        done = true;
        break;
      }
      const Json j = Json::parse(data);
      if (j.contains("error")) {
        c.error_code = j["error"].value("code", std::string("(none)"));
        c.why = "error event: " + j["error"].dump();
        return c;
      }
      const Json& choice = j.at("choices").at(0);
      text += choice.at("text").get<std::string>();
      if (choice.contains("finish_reason") && !choice["finish_reason"].is_null()) finished = true;
    }
    if (!done || !finished) {
      c.why = done ? "stream without finish_reason" : "stream without [DONE]";
      return c;
    }
    c.text = std::move(text);
  } catch (const std::exception& e) {
    c.why = std::string("malformed body: ") + e.what();
  }
  return c;
}

// The error code of a JSON error body, or "".
std::string error_code(const std::string& body) {
  try {
    const Json j = Json::parse(body);
    return j.at("error").value("code", std::string());
  } catch (const std::exception&) {
    return {};
  }
}

void client_loop(int id, const Options& o, int port, Clock::time_point end,
                 const std::vector<std::string>& models, const std::vector<bool>& dynamic, Tally& tally) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_keep_alive(true);
  cli.set_read_timeout(120, 0);
  cli.set_connection_timeout(10, 0);
  std::mt19937 rng(static_cast<unsigned>(id) + 1);
  for (int64_t n = 0; Clock::now() < end; ++n) {
    const size_t m = rng() % models.size();
    const std::string prompt = kPrompts[rng() % std::size(kPrompts)];
    const bool stream = (n + id) % 4 == 0;
    const Json body = {{"model", models[m]},
                       {"prompt", prompt},
                       {"max_tokens", o.max_tokens},
                       {"temperature", 0},
                       {"stream", stream}};
    const Clock::time_point t0 = Clock::now();
    const httplib::Result res = cli.Post("/v1/completions", body.dump(), "application/json");
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!res) {
      tally.error("connection error: " + httplib::to_string(res.error()));
      continue;
    }
    if (res->status == 429) {
      if (!res->has_header("Retry-After")) {
        tally.error("429 without Retry-After");
        continue;
      }
      {
        std::lock_guard lock(tally.mutex);
        ++tally.too_many;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    // An adapter unloaded meanwhile: 404 at submission, or "rejected" when it went while the
    // request waited (400, or an error object in a 200 body once the response was under way).
    const bool unloaded_status =
        res->status == 404 || (res->status == 400 && error_code(res->body) == "rejected");
    if (unloaded_status && dynamic[m]) {
      std::lock_guard lock(tally.mutex);
      ++tally.not_found;
      continue;
    }
    if (res->status != 200) {
      tally.error("status " + std::to_string(res->status) + " for " + models[m] + ": " +
                  res->body.substr(0, 200));
      continue;
    }
    const Completion c = parse_completion(res->body, stream);
    if (!c.text) {
      if (dynamic[m] && (c.error_code == "rejected" || c.error_code == "model_not_found")) {
        std::lock_guard lock(tally.mutex);
        ++tally.not_found;
      } else {
        tally.error(c.why + " (" + models[m] + (stream ? ", streamed)" : ")"));
      }
      continue;
    }
    const std::string& text = *c.text;
    std::lock_guard lock(tally.mutex);
    ++tally.ok;
    tally.streamed += stream ? 1 : 0;
    tally.latency.push_back(seconds);
    const auto [it, inserted] = tally.expected.emplace(models[m] + "\n" + prompt, text);
    if (!inserted && it->second != text) {
      ++tally.mismatches;
      if (tally.examples.size() < 8)
        tally.examples.push_back("mismatch for " + models[m] + " / \"" + prompt + "\": \"" + it->second +
                                 "\" vs \"" + text + "\"");
    }
  }
}

// Loads and unloads the dynamic adapters in turn until `end`.
void loader_loop(int port, Clock::time_point end, const std::vector<std::pair<std::string, fs::path>>& dyn,
                 std::atomic<bool>& stop, Tally& tally) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(60, 0);
  std::vector<bool> loaded(dyn.size(), false);
  for (size_t k = 0; Clock::now() < end && !stop; ++k) {
    const size_t i = k % dyn.size();
    httplib::Result res =
        loaded[i] ? cli.Post("/v1/unload_lora_adapter", Json{{"lora_name", dyn[i].first}}.dump(),
                             "application/json")
                  : cli.Post("/v1/load_lora_adapter",
                             Json{{"lora_name", dyn[i].first}, {"lora_path", dyn[i].second.string()}}.dump(),
                             "application/json");
    if (!res) {
      tally.error("connection error on adapter load/unload: " + httplib::to_string(res.error()));
    } else if (res->status == 200) {
      std::lock_guard lock(tally.mutex);
      ++(loaded[i] ? tally.unloads : tally.loads);
      loaded[i] = !loaded[i];
    } else if (res->status == 400 && loaded[i]) {
      std::lock_guard lock(tally.mutex);  // unloading an adapter that running requests use: busy
      ++tally.admin_refused;
    } else {
      tally.error("adapter " + std::string(loaded[i] ? "unload" : "load") + " " + dyn[i].first + ": status " +
                  std::to_string(res->status) + " " + res->body.substr(0, 200));
    }
    for (int t = 0; t < 15 && Clock::now() < end && !stop; ++t)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

int usage(const char* arg) {
  std::fprintf(stderr,
               "bench_serve_load: bad argument %s\n"
               "usage: bench_serve_load [--lowrank PATH] [--duration S] [--clients N] [--max-queue Q]\n"
               "  [--max-running R] [--max-tokens T] [--static-adapters N] [--dynamic-adapters N] "
               "[--rss-limit-mb MB]\n"
               "  [--port P] [--fixture TOKENIZER_JSON]\n",
               arg);
  return 1;
}

int run(const Options& o) {
  const fs::path root = fs::temp_directory_path() / ("bench_serve_load_" + std::to_string(::getpid()));
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{root};
  const fs::path model_dir = root / "model", adapter_root = root / "adapters";
  nn::Model model = nn::Model::random(model_config(), 0);
  model.save(model_dir);
  fs::copy_file(o.tokenizer, model_dir / "tokenizer.json");
  fs::create_directories(adapter_root);
  std::vector<std::string> models = {"model"};
  std::vector<bool> dynamic = {false};
  for (int i = 0; i < o.static_adapters; ++i) {
    write_adapter(model, i, adapter_root / ("static" + std::to_string(i)));
    models.push_back("static" + std::to_string(i));
    dynamic.push_back(false);
  }

  const int port = o.port > 0 ? o.port : free_loopback_port();
  Server server({o.lowrank.string(), "serve", "--model", model_dir.string(), "--adapters",
                 adapter_root.string(), "--host", "127.0.0.1", "--port", std::to_string(port), "--max-queue",
                 std::to_string(o.max_queue)});
  if (!server.wait_for_output("serving", std::chrono::seconds(120))) {
    std::fprintf(stderr, "bench_serve_load: the server did not start; its output:\n%s\n",
                 server.log().c_str());
    return 1;
  }
  // The base model answers to its directory's name unless the server says otherwise.
  {
    httplib::Client cli("127.0.0.1", port);
    if (httplib::Result res = cli.Get("/v1/models"); res && res->status == 200) {
      try {
        for (const Json& m : Json::parse(res->body).at("data"))
          if (!m.contains("parent") || m["parent"].is_null()) models[0] = m.at("id").get<std::string>();
      } catch (const std::exception&) {
      }
    }
  }
  // Dynamic adapters appear under the root only now, so only the load endpoint registers them.
  std::vector<std::pair<std::string, fs::path>> dyn;
  for (int i = 0; i < o.dynamic_adapters; ++i) {
    const std::string name = "dynamic" + std::to_string(i);
    write_adapter(model, o.static_adapters + i, adapter_root / name);
    dyn.emplace_back(name, fs::absolute(adapter_root / name));
    models.push_back(name);
    dynamic.push_back(true);
  }

  Tally tally;
  std::atomic<bool> stop{false};
  const Clock::time_point start = Clock::now();
  const Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration));
  int64_t rss_start = rss_kib(server.pid()), rss_peak = rss_start, rss_last = rss_start, rss_quarter = -1;
  std::thread sampler([&] {
    while (!stop && Clock::now() < end) {
      const int64_t kib = rss_kib(server.pid());
      if (kib > 0) {
        rss_peak = std::max(rss_peak, kib);
        rss_last = kib;
        if (rss_quarter < 0 && Clock::now() > start + (end - start) / 4) rss_quarter = kib;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  });
  std::thread loader;
  if (!dyn.empty())
    loader = std::thread(loader_loop, port, end, std::cref(dyn), std::ref(stop), std::ref(tally));
  std::vector<std::thread> clients;
  for (int c = 0; c < o.clients; ++c)
    clients.emplace_back(client_loop, c, std::cref(o), port, end, std::cref(models), std::cref(dynamic),
                         std::ref(tally));
  for (std::thread& t : clients) t.join();
  stop = true;
  if (loader.joinable()) loader.join();
  sampler.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  // /metrics, then a graceful stop.
  std::string metrics_summary = "(no answer)";
  {
    httplib::Client cli("127.0.0.1", port);
    httplib::Result res = cli.Get("/metrics");
    if (!res || res->status != 200) {
      tally.error("/metrics: " +
                  (res ? "status " + std::to_string(res->status) : httplib::to_string(res.error())));
    } else {
      int64_t lines = 0;
      metrics_summary.clear();
      std::istringstream in(res->body);
      for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        ++lines;
        if (line.find("_bucket") == std::string::npos && metrics_summary.size() < 1500)
          metrics_summary += "  " + line + "\n";
      }
      if (lines == 0) tally.error("/metrics: no samples");
    }
  }
  ::kill(server.pid(), SIGTERM);
  const std::optional<int> status = server.wait(std::chrono::seconds(20));
  bool clean_exit = status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
  if (!clean_exit)
    tally.error(status ? "server exit status " + std::to_string(*status) : "server ignored SIGTERM");

  const int64_t total = tally.ok + tally.too_many + tally.not_found + tally.errors;
  std::printf(
      "load test: %d clients, %.0f s, max running %lld, max queue %lld, max_tokens %lld, %d static + %d "
      "dynamic "
      "adapters\n",
      o.clients, elapsed, static_cast<long long>(o.max_running), static_cast<long long>(o.max_queue),
      static_cast<long long>(o.max_tokens), o.static_adapters, o.dynamic_adapters);
  std::printf("requests    %lld (%.1f/s)\n", static_cast<long long>(total),
              static_cast<double>(total) / elapsed);
  std::printf("  ok        %lld (%lld streamed), %.1f/s; latency p50 %.3f s, p99 %.3f s\n",
              static_cast<long long>(tally.ok), static_cast<long long>(tally.streamed),
              static_cast<double>(tally.ok) / elapsed, percentile(tally.latency, 0.5),
              percentile(tally.latency, 0.99));
  std::printf("  429       %lld (all with Retry-After)\n", static_cast<long long>(tally.too_many));
  std::printf("  unloaded  %lld (404 or rejected: the dynamic adapter was unloaded meanwhile)\n",
              static_cast<long long>(tally.not_found));
  std::printf("  errors    %lld\n", static_cast<long long>(tally.errors));
  std::printf("  corrupted %lld (greedy text differing for the same model and prompt; %zu pairs seen)\n",
              static_cast<long long>(tally.mismatches), tally.expected.size());
  // Adapters must matter: for each prompt, count the distinct texts over the models.
  std::map<std::string, std::set<std::string>> texts_per_prompt;
  for (const auto& [key, text] : tally.expected)
    texts_per_prompt[key.substr(key.find('\n') + 1)].insert(text);
  std::string distinct;
  for (const auto& [prompt, texts] : texts_per_prompt) distinct += " " + std::to_string(texts.size());
  std::printf("  distinct  texts per prompt over the %zu models:%s\n", models.size(), distinct.c_str());
  std::printf("adapters    %lld loads, %lld unloads, %lld unloads refused while busy\n",
              static_cast<long long>(tally.loads), static_cast<long long>(tally.unloads),
              static_cast<long long>(tally.admin_refused));
  std::printf(
      "server RSS  start %.0f MiB, after 1/4 %.0f MiB, end %.0f MiB, peak %.0f MiB (limit %lld MiB)\n",
      static_cast<double>(rss_start) / 1024, static_cast<double>(rss_quarter) / 1024,
      static_cast<double>(rss_last) / 1024, static_cast<double>(rss_peak) / 1024,
      static_cast<long long>(o.rss_limit_mb));
  std::printf("shutdown    %s\n", clean_exit ? "clean (SIGTERM, exit 0)" : "NOT clean");
  std::printf("/metrics at the end:\n%s", metrics_summary.c_str());
  for (const std::string& e : tally.examples) std::printf("  ! %s\n", e.c_str());
  const bool rss_ok = rss_peak / 1024 <= o.rss_limit_mb;
  const bool pass = tally.errors == 0 && tally.mismatches == 0 && rss_ok && tally.ok > 0;
  std::printf("verdict     %s\n", pass ? "PASS" : "FAIL");
  if (!pass && !clean_exit)
    std::printf("server output (tail):\n%s\n",
                server.log().substr(server.log().size() > 4000 ? server.log().size() - 4000 : 0).c_str());
  return pass ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return usage(argv[i]);
    const std::string v = argv[++i];
    if (flag == "--lowrank")
      o.lowrank = v;
    else if (flag == "--fixture")
      o.tokenizer = v;
    else if (flag == "--duration")
      o.duration = std::atof(v.c_str());
    else if (flag == "--clients")
      o.clients = std::atoi(v.c_str());
    else if (flag == "--max-queue")
      o.max_queue = std::atoll(v.c_str());
    else if (flag == "--max-running")
      o.max_running = std::atoll(v.c_str());
    else if (flag == "--max-tokens")
      o.max_tokens = std::atoll(v.c_str());
    else if (flag == "--static-adapters")
      o.static_adapters = std::atoi(v.c_str());
    else if (flag == "--dynamic-adapters")
      o.dynamic_adapters = std::atoi(v.c_str());
    else if (flag == "--rss-limit-mb")
      o.rss_limit_mb = std::atoll(v.c_str());
    else if (flag == "--port")
      o.port = std::atoi(v.c_str());
    else
      return usage(flag.c_str());
  }
  if (o.duration <= 0 || o.clients < 1 || o.max_queue < 1 || o.max_running < 1 || o.max_tokens < 1 ||
      o.static_adapters < 0 || o.dynamic_adapters < 0)
    return usage("(a value out of range)");
  ::signal(SIGPIPE, SIG_IGN);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_serve_load: %s\n", e.what());
    return 2;
  }
}
