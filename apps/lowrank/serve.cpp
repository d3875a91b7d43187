// `lowrank serve --model DIR [--adapters ROOT] [--host 127.0.0.1] [--port 8080] [--api-key KEY]`:
// serves one base model and every adapter under ROOT behind the OpenAI-compatible HTTP API
// (serve/http_server.h; docs/serving.md), with the playground page at / (serve/playground.h) and,
// with --runs DIR, the run reports at /runs. Prints "serving MODEL (+N adapters) on http://HOST:PORT"
// once it listens. SIGINT or SIGTERM stops it gracefully: new requests get 503, in-flight ones get
// --drain-seconds to finish (then end with finish_reason "abort"), exit 0; a second signal exits
// at once (status 128 + the signal).
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include <pthread.h>

#include "apps/lowrank/model_flags.h"
#include "apps/lowrank/verbs.h"
#include "lowrank/core/log.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/generate.h"
#include "lowrank/serve/adapter_root.h"
#include "lowrank/serve/engine.h"
#include "lowrank/serve/http_server.h"
#include "lowrank/serve/request_log.h"

namespace lowrank::cli {

VerbRunner add_serve(CLI::App& app, const GlobalOptions&) {
  auto* cmd =
      app.add_subcommand("serve", "Serve a model and its adapters over an OpenAI-compatible HTTP API");
  struct Args {
    ModelFlags model;
    std::string adapters, model_name, api_key, chat_template = "auto", runs;
    serve::ServerConfig server;
    serve::EngineConfig engine;
    int64_t pool_mb = 256;
    int64_t body_kb = 1024;
    std::string prefix_caching = "on";
    double drain_seconds = 30;
    double request_timeout = 0;
    std::string log_format = "text";
  };
  auto args = std::make_shared<Args>();
  args->model.add_model(*cmd, "HF model directory (dense or compressed), with tokenizer.json",
                        /*adapters=*/false);
  cmd->add_option("--adapters", args->adapters,
                  "Adapter root: every subdirectory holding adapter_config.json is served under its name, "
                  "and /v1/load_lora_adapter loads only from here");
  cmd->add_option("--host", args->server.host, "Address to bind (loopback by default)")
      ->capture_default_str();
  cmd->add_option("--port", args->server.port, "Port (0: any free port)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", args->api_key,
                  "Require 'Authorization: Bearer KEY' on /v1/* (default: $LOWRANK_API_KEY; none if unset)");
  cmd->add_option("--model-name", args->model_name,
                  "The base model's id in the API (default: the directory name)");
  cmd->add_option(
         "--chat-template", args->chat_template,
         "auto (chatml or llama3 when tokenizer_config.json uses one, else plain), plain, chatml, llama3")
      ->capture_default_str();
  cmd->add_option("--max-batch-tokens", args->engine.scheduler.max_batch_tokens, "Tokens processed per step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-running", args->engine.scheduler.max_running, "Requests in the running batch")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-queue", args->engine.scheduler.max_queue, "Waiting requests before 429")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--pool-mb", args->pool_mb, "Memory pool for KV pages and adapter pages, MiB")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--page-tokens", args->engine.page_tokens, "Tokens per KV page")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-prompt-tokens", args->server.max_prompt_tokens,
                  "Longest prompt accepted (0: the context)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-body-kb", args->body_kb, "Largest request body, KiB (larger: 413)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--http-threads", args->server.threads, "HTTP worker threads (concurrent connections)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--cors-origin", args->server.cors_origin,
                  "Let pages from this origin (e.g. https://app.example, or *) call the API from a browser "
                  "(default: none, same-origin only)");
  cmd->add_option("--runs", args->runs,
                  "Directory of run directories shown as report pages at /runs (lowrank report)");
  cmd->add_option("--seed", args->engine.seed, "Seeds requests that bring none")->capture_default_str();
  cmd->add_option(
         "--prefix-caching", args->prefix_caching,
         "on: requests of the same adapter share the cached KV pages of a common prompt prefix and "
         "prefill only the rest (vLLM's automatic prefix caching); off: every prompt is computed whole")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off"}));
  cmd->add_option("--drain-seconds", args->drain_seconds,
                  "On SIGTERM/SIGINT: seconds in-flight requests get to finish before they end with "
                  "finish_reason 'abort' (new requests get 503 meanwhile; 0: end them at once)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--request-timeout", args->request_timeout,
                  "Seconds a request may run from arrival; then it ends with its text so far and "
                  "finish_reason 'length', as llama.cpp's time limit (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--log-format", args->log_format,
                  "Request log on stderr, one line per generation call: text, or json (one JSON object "
                  "per line: id, adapter, tokens, queue/prefill/decode/total ms, status, finish reasons)")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
  args->model.add_compute(*cmd, "Compute dtype: float32, bfloat16, float16");

  return [args] {
    namespace fs = std::filesystem;
    const fs::path dir = args->model.model;
    LR_CHECK(fs::is_regular_file(dir / "tokenizer.json"), NotFound, dir.string(),
             ": serving needs tokenizer.json in the model directory");
    auto model = std::make_shared<nn::Model>(args->model.load());
    auto tokenizer = std::make_shared<const data::Tokenizer>(data::Tokenizer::load(dir / "tokenizer.json"));
    std::vector<int64_t> eos = nn::default_stop_token_ids(dir, model->config());

    const serve::LogFormat log_format = serve::parse_log_format(args->log_format);
    const auto milliseconds = [](double seconds) {
      return std::chrono::milliseconds(static_cast<int64_t>(std::llround(seconds * 1000)));
    };
    serve::EngineConfig engine_config = args->engine;
    engine_config.request_timeout = milliseconds(args->request_timeout);
    engine_config.pool_bytes = args->pool_mb << 20;
    engine_config.max_prompt_tokens = args->server.max_prompt_tokens;
    engine_config.scheduler.prefix_caching = args->prefix_caching == "on";
    serve::Engine engine(model, tokenizer, std::move(eos), engine_config);
    std::vector<serve::AdapterInfo> adapters;
    if (!args->adapters.empty()) adapters = serve::register_adapter_root(engine, args->adapters);

    serve::ServerConfig config = args->server;
    config.api_key = args->api_key;
    if (config.api_key.empty())
      if (const char* env = std::getenv("LOWRANK_API_KEY")) config.api_key = env;
    config.model_name = args->model_name;
    if (config.model_name.empty()) config.model_name = fs::weakly_canonical(dir).filename().string();
    config.adapter_root = args->adapters;
    config.runs_dir = args->runs;
    LR_CHECK(args->runs.empty() || fs::is_directory(args->runs), NotFound, "--runs ", args->runs,
             ": no such directory");
    config.max_body_bytes = static_cast<size_t>(args->body_kb) << 10;
    config.drain_timeout = milliseconds(args->drain_seconds);
    config.log_format = log_format;
    config.chat_template = args->chat_template == "auto" ? serve::detect_chat_template(dir)
                                                         : serve::parse_chat_template(args->chat_template);
    if (config.api_key.empty() && config.host != "127.0.0.1" && config.host != "localhost" &&
        config.host != "::1")
      log::warn("serving on ", config.host, " without an API key: anyone who can reach it can use it");

    // SIGINT/SIGTERM are blocked in every thread (the engine's and the server's inherit the mask)
    // and taken by sigwait below, so shutdown runs as ordinary code on this thread. Writes to a
    // vanished client must fail with EPIPE, not kill the process.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    engine.start();
    serve::HttpServer server(engine, *tokenizer, config);
    server.start();
    std::cout << "serving " << config.model_name << " (+" << adapters.size() << " adapters) on http://"
              << config.host << ":" << server.port() << std::endl;

    int received = 0;
    sigwait(&signals, &received);
    log::info("signal ", received, ": stopping (in-flight requests get ", args->drain_seconds,
              " s to finish; a second signal exits at once)");
    // The drain runs on its own thread, so that this one can still take a second signal.
    std::atomic<bool> stopped{false};
    std::thread stopper([&] {
      server.stop(/*drain=*/true);
      stopped = true;
    });
    const timespec poll{.tv_sec = 0, .tv_nsec = 50'000'000};
    while (!stopped) {
      const int second = sigtimedwait(&signals, nullptr, &poll);
      if (second > 0) {
        log::warn("signal ", second, " again: exiting without waiting for in-flight requests");
        std::_Exit(128 + second);
      }
    }
    stopper.join();
  };
}

}  // namespace lowrank::cli
