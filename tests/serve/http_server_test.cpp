// HttpServer end to end in process: an Engine over the bundled tiny Llama with its fixture LoRA
// adapter, the server on a free loopback port, and httplib's client. Checks the OpenAI shapes
// (completions, chat, streaming, models), greedy output against the engine and nn::generate,
// logprobs and echo against log_softmax of a fresh model's logits, /tokenize, /detokenize, /version,
// runtime adapter load/unload, the error statuses (400, 401, 404, 413, 429), path traversal,
// disconnect cancellation, the chunked path of a slow non-streaming response, /metrics and /health.
#include "lowrank/serve/http_server.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include "lowrank/compress/format.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/generate.h"
#include "lowrank/serve/engine.h"
#include "lowrank/version.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kKey = "test-key";
const std::vector<int64_t> kPrompt{1, 17, 240, 33, 5, 99};

std::shared_ptr<const data::Tokenizer> load_tokenizer(const fs::path& model_dir) {
  return std::make_shared<const data::Tokenizer>(data::Tokenizer::load(model_dir / "tokenizer.json"));
}

EngineConfig small_engine() {
  EngineConfig config;
  config.pool_bytes = int64_t{8} << 20;
  config.scheduler.max_batch_tokens = 256;
  config.scheduler.max_running = 8;
  return config;
}

std::unique_ptr<httplib::Client> client(int port, const char* key = kKey) {
  auto c = std::make_unique<httplib::Client>("127.0.0.1", port);
  if (key) c->set_bearer_token_auth(key);
  c->set_read_timeout(60, 0);
  return c;
}

struct Reply {
  int status = 0;
  Json body;
  std::string text;
  std::string retry_after;
};

Reply post(httplib::Client& c, const std::string& path, const std::string& body) {
  auto res = c.Post(path.c_str(), body, "application/json");
  EXPECT_TRUE(res) << path << ": " << httplib::to_string(res.error());
  if (!res) return {};
  Reply r{res->status, Json(), res->body, res->get_header_value("Retry-After")};
  r.body = Json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  return r;
}
Reply post(httplib::Client& c, const std::string& path, const Json& body) {
  return post(c, path, body.dump());
}

// The JSON objects of a server-sent event stream, and whether it ended with [DONE].
std::vector<Json> sse_events(const std::string& text, bool* done) {
  std::vector<Json> events;
  *done = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) end = text.size();
    const std::string event = text.substr(pos, end - pos);
    pos = end + 2;
    if (!event.starts_with("data: ")) continue;  // comments (": keep-alive")
    const std::string data = event.substr(6);
    if (data == "[DONE]")
      *done = true;
    else
      events.push_back(Json::parse(data));
  }
  return events;
}

// One engine + server for the suite: loading is cheap, but starting threads per test is not
// needed. Adapter root: lora (registered at start), lora2 (loaded by a test), escape (a symlink
// to an adapter outside the root).
class HttpServerTest : public ::testing::Test {
 protected:
  struct Env {
    testing::TempDir dir;
    fs::path model_dir, root;
    std::shared_ptr<nn::Model> model;
    std::shared_ptr<const data::Tokenizer> tokenizer;
    std::unique_ptr<Engine> engine;
    std::unique_ptr<HttpServer> server;

    Env() {
      model_dir = testing::tiny_hf_model(dir.path());
      root = dir / "adapters";
      const fs::path adapter = testing::fixture("hf/llama-tiny/adapter-lora");
      fs::create_directories(root);
      fs::create_directories(dir / "outside");
      for (const char* name : {"lora", "lora2"}) fs::copy(adapter, root / name, fs::copy_options::recursive);
      fs::copy(adapter, dir / "outside" / "evil", fs::copy_options::recursive);
      fs::create_directory_symlink(dir / "outside" / "evil", root / "escape");
      model = std::make_shared<nn::Model>(compress::load_model(model_dir));
      tokenizer = load_tokenizer(model_dir);
      engine = std::make_unique<Engine>(
          model, tokenizer, nn::default_stop_token_ids(model_dir, model->config()), small_engine());
      engine->load_adapter("lora", root / "lora");
      engine->start();
      ServerConfig config;
      config.port = 0;
      config.api_key = kKey;
      config.model_name = "tiny";
      config.adapter_root = root;
      config.max_body_bytes = 16 << 10;
      config.max_prompt_tokens = 64;
      config.threads = 4;
      server = std::make_unique<HttpServer>(*engine, *tokenizer, config);
      server->start();
    }
    ~Env() {
      server->stop(/*drain=*/true);
      server.reset();
      engine.reset();
    }
  };

  static void SetUpTestSuite() { env_ = new Env(); }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }
  static int port() { return env_->server->port(); }

  static Env* env_;
};
HttpServerTest::Env* HttpServerTest::env_ = nullptr;

Json greedy_completion(const std::string& model, bool stream) {
  return {{"model", model},   {"prompt", kPrompt},  {"max_tokens", 8},
          {"temperature", 0}, {"ignore_eos", true}, {"stream", stream}};
}

TEST_F(HttpServerTest, GreedyCompletionMatchesEngineAndGenerate) {
  auto c = client(port());
  const Reply r = post(*c, "/v1/completions", greedy_completion("tiny", false));
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["object"], "text_completion");
  EXPECT_EQ(r.body["model"], "tiny");
  EXPECT_TRUE(r.body["id"].get<std::string>().starts_with("cmpl-"));
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], kPrompt.size());
  EXPECT_EQ(r.body["usage"]["completion_tokens"], 8);
  const std::string text = r.body["choices"][0]["text"];

  // The same request straight to the engine.
  GenerationRequest request;
  request.prompt = kPrompt;
  request.sampling.max_new_tokens = 8;
  request.sampling.temperature = 0;
  request.sampling.ignore_eos = true;
  std::string engine_text;
  std::vector<int64_t> engine_tokens;
  const SubmitResult submitted = env_->engine->submit(request);
  ASSERT_TRUE(submitted.stream);
  submitted.stream->wait(&engine_text, &engine_tokens);
  EXPECT_EQ(text, engine_text);

  // And nn::generate on a separately loaded copy of the model (the engine's has adapters attached).
  const nn::Model reference = compress::load_model(env_->model_dir);
  nn::GenerateOptions options;
  options.max_new_tokens = 8;
  const std::vector<nn::Generation> out = nn::generate(reference, {kPrompt}, options);
  EXPECT_EQ(engine_tokens, out[0].tokens);
  // The engine's text leaves special tokens out (as vLLM's default skip_special_tokens).
  const std::vector<int32_t> ids(out[0].tokens.begin(), out[0].tokens.end());
  EXPECT_EQ(text, env_->tokenizer->decode(ids, /*skip_special_tokens=*/true));
}

TEST_F(HttpServerTest, StreamedTextEqualsNonStreamedText) {
  auto c = client(port());
  const Reply whole = post(*c, "/v1/completions", greedy_completion("lora", false));
  ASSERT_EQ(whole.status, 200) << whole.text;
  auto res = c->Post("/v1/completions", greedy_completion("lora", true).dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_TRUE(res->get_header_value("Content-Type").starts_with("text/event-stream"));
  bool done = false;
  const std::vector<Json> events = sse_events(res->body, &done);
  EXPECT_TRUE(done);
  ASSERT_FALSE(events.empty());
  std::string text;
  for (const Json& e : events) text += e["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(text, whole.body["choices"][0]["text"]);
  EXPECT_EQ(events.back()["choices"][0]["finish_reason"], "length");
  for (size_t i = 0; i + 1 < events.size(); ++i)
    EXPECT_TRUE(events[i]["choices"][0]["finish_reason"].is_null());
}

TEST_F(HttpServerTest, AdapterChangesTheOutput) {
  auto c = client(port());
  const Reply base = post(*c, "/v1/completions", greedy_completion("tiny", false));
  const Reply lora = post(*c, "/v1/completions", greedy_completion("lora", false));
  ASSERT_EQ(base.status, 200);
  ASSERT_EQ(lora.status, 200);
  EXPECT_EQ(lora.body["model"], "lora");
  EXPECT_NE(base.body["choices"][0]["text"], lora.body["choices"][0]["text"]);
}

TEST_F(HttpServerTest, ChatCompletionStreamingAndNot) {
  auto c = client(port());
  const Json body{{"model", "tiny"},
                  {"messages", {{{"role", "user"}, {"content", "hello there"}}}},
                  {"max_tokens", 6},
                  {"temperature", 0},
                  {"ignore_eos", true}};
  const Reply r = post(*c, "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["object"], "chat.completion");
  EXPECT_EQ(r.body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], "length");
  const std::vector<int32_t> prompt = env_->tokenizer->encode("user: hello there\nassistant:", true);
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], prompt.size());

  Json streamed = body;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  auto res = c->Post("/v1/chat/completions", streamed.dump(), "application/json");
  ASSERT_TRUE(res);
  bool done = false;
  const std::vector<Json> events = sse_events(res->body, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front()["object"], "chat.completion.chunk");
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (const Json& e : events)
    if (!e["choices"].empty() && e["choices"][0]["delta"].contains("content"))
      text += e["choices"][0]["delta"]["content"].get<std::string>();
  EXPECT_EQ(text, r.body["choices"][0]["message"]["content"]);
  EXPECT_TRUE(events.back()["choices"].empty());  // the usage chunk
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 6);
}

// The float64 log_softmax of the served model's logits at every position of `ids`, computed on a
// fresh load of the model directory (the oracle of the reported logprobs: vLLM's raw distribution).
at::Tensor model_logprobs(const fs::path& model_dir, const std::vector<int64_t>& ids) {
  c10::InferenceMode guard;
  const nn::Model model = compress::load_model(model_dir);
  return model.forward(at::tensor(ids, at::kLong).reshape({1, -1})).to(at::kDouble)[0].log_softmax(-1);
}

TEST_F(HttpServerTest, CompletionLogprobsAndEchoStreamedAndNot) {
  auto c = client(port());
  // Sampled with penalties and a bias: the reported values are still the raw distribution's.
  Json body{{"model", "tiny"}, {"prompt", kPrompt},       {"max_tokens", 5},          {"temperature", 0.8},
            {"seed", 3},       {"presence_penalty", 0.5}, {"logit_bias", {{"9", 2}}}, {"logprobs", 2},
            {"echo", true},    {"ignore_eos", true}};
  const Reply r = post(*c, "/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.text;
  const Json& choice = r.body["choices"][0];
  const Json& lp = choice["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), kPrompt.size() + 5);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  const std::vector<int32_t> prompt32(kPrompt.begin(), kPrompt.end());
  const std::string prompt_text = env_->tokenizer->decode(prompt32);
  ASSERT_TRUE(choice["text"].get<std::string>().starts_with(prompt_text));
  // The generated ids: the tokens' texts are not ids, so re-run the same seeded request on the
  // engine directly (its output does not depend on the batch).
  const GenerationRequest request{.adapter = "",
                                  .prompt = kPrompt,
                                  .sampling = {.max_new_tokens = 5,
                                               .temperature = 0.8,
                                               .seed = 3,
                                               .ignore_eos = true,
                                               .logit_bias = {{9, 2.0}},
                                               .presence_penalty = 0.5}};
  std::vector<int64_t> generated;
  env_->engine->submit(request).stream->wait(nullptr, &generated);
  ASSERT_EQ(generated.size(), 5u);
  std::vector<int64_t> ids = kPrompt;
  ids.insert(ids.end(), generated.begin(), generated.end());
  const at::Tensor expected = model_logprobs(env_->model_dir, ids);
  for (size_t j = 1; j < ids.size(); ++j) {
    const auto row = expected[static_cast<int64_t>(j) - 1];
    EXPECT_NEAR(lp["token_logprobs"][j].get<double>(), row[ids[j]].item<double>(), 1e-4) << "token " << j;
    const int32_t one[] = {static_cast<int32_t>(ids[j])};
    EXPECT_EQ(lp["tokens"][j], env_->tokenizer->decode(one)) << "token " << j;
    // The chosen token, then the top 2: the largest value is the row's largest, and every value is
    // the chosen token's or one of the row's two largest (two tokens with the same text, e.g. two
    // halves of a character, share one key).
    const at::Tensor top = std::get<0>(at::topk(row, 2));
    double largest = -1e9;
    for (const auto& [token, value] : lp["top_logprobs"][j].items()) {
      const double v = value.get<double>();
      largest = std::max(largest, v);
      if (token != lp["tokens"][j]) EXPECT_GE(v, top[1].item<double>() - 1e-4) << "token " << j;
    }
    const bool chosen_in_top = row[ids[j]].item<double>() >= top[1].item<double>();
    if (lp["top_logprobs"][j].size() == (chosen_in_top ? 2u : 3u))  // no two texts collided
      EXPECT_NEAR(largest, top[0].item<double>(), 1e-4) << "token " << j;
  }

  // Streamed: the same text, tokens, logprobs and offsets, the prompt in the first chunk.
  body["stream"] = true;
  auto res = c->Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  bool done = false;
  const std::vector<Json> events = sse_events(res->body, &done);
  EXPECT_TRUE(done);
  ASSERT_FALSE(events.empty());
  EXPECT_TRUE(events.front()["choices"][0]["text"].get<std::string>().starts_with(prompt_text));
  std::string text;
  Json tokens = Json::array(), logprobs = Json::array(), offsets = Json::array();
  for (const Json& e : events) {
    text += e["choices"][0]["text"].get<std::string>();
    const Json& l = e["choices"][0]["logprobs"];
    if (l.is_null()) continue;
    for (size_t k = 0; k < l["tokens"].size(); ++k) {
      tokens.push_back(l["tokens"][k]);
      logprobs.push_back(l["token_logprobs"][k]);
      offsets.push_back(l["text_offset"][k]);
    }
  }
  EXPECT_EQ(text, choice["text"]);
  EXPECT_EQ(tokens, lp["tokens"]);
  EXPECT_EQ(logprobs, lp["token_logprobs"]);
  EXPECT_EQ(offsets, lp["text_offset"]);
}

TEST_F(HttpServerTest, ChatLogprobsStreamedAndNot) {
  auto c = client(port());
  Json body{{"model", "lora"},
            {"messages", {{{"role", "user"}, {"content", "hello there"}}}},
            {"max_completion_tokens", 4},
            {"temperature", 0},
            {"logprobs", true},
            {"top_logprobs", 3},
            {"ignore_eos", true}};
  const Reply r = post(*c, "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.text;
  const Json& content = r.body["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 4u);
  for (const Json& entry : content) {
    ASSERT_EQ(entry["top_logprobs"].size(), 3u);
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(entry["top_logprobs"][0]["token"], entry["token"]);
    EXPECT_EQ(entry["top_logprobs"][0]["logprob"], entry["logprob"]);
    EXPECT_GE(entry["top_logprobs"][1]["logprob"].get<double>(),
              entry["top_logprobs"][2]["logprob"].get<double>());
    std::string bytes;
    for (const Json& b : entry["bytes"]) bytes += static_cast<char>(b.get<int>());
    EXPECT_EQ(bytes, entry["token"].get<std::string>());
  }
  body["stream"] = true;
  auto res = c->Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  bool done = false;
  Json streamed = Json::array();
  for (const Json& e : sse_events(res->body, &done))
    if (!e["choices"].empty() && !e["choices"][0]["logprobs"].is_null())
      for (const Json& entry : e["choices"][0]["logprobs"]["content"]) streamed.push_back(entry);
  EXPECT_EQ(streamed, content);
}

TEST_F(HttpServerTest, TokenizeDetokenizeAndVersion) {
  auto c = client(port(), nullptr);  // no API key needed, as vLLM (not under /v1)
  const Reply t = post(*c, "/tokenize", Json{{"prompt", "hello world"}, {"return_token_strs", true}});
  ASSERT_EQ(t.status, 200) << t.text;
  const std::vector<int32_t> ids = env_->tokenizer->encode("hello world", true);
  EXPECT_EQ(t.body["tokens"], Json(std::vector<int64_t>(ids.begin(), ids.end())));
  EXPECT_EQ(t.body["count"], ids.size());
  EXPECT_EQ(t.body["max_model_len"], env_->model->config().max_position_embeddings);
  const Reply d = post(*c, "/detokenize", Json{{"tokens", t.body["tokens"]}});
  ASSERT_EQ(d.status, 200) << d.text;
  EXPECT_EQ(d.body["prompt"], env_->tokenizer->decode(ids));
  const Reply bad = post(*c, "/detokenize", Json{{"tokens", {1, 1 << 30}}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.body["error"]["param"], "tokens");
  auto version = c->Get("/version");
  ASSERT_TRUE(version);
  EXPECT_EQ(Json::parse(version->body)["version"], std::string(LOWRANK_VERSION));
}

TEST_F(HttpServerTest, SeededTextIsTheSameAloneAndInAMixedBatch) {
  const Json seeded{{"model", "lora"},          {"prompt", kPrompt}, {"max_tokens", 10},
                    {"temperature", 1.0},       {"seed", 21},        {"frequency_penalty", 0.5},
                    {"logit_bias", {{"3", 1}}}, {"ignore_eos", true}};
  auto c = client(port());
  const Reply alone = post(*c, "/v1/completions", seeded);
  ASSERT_EQ(alone.status, 200) << alone.text;
  // The same request among unseeded sampled neighbours of both models, sent together.
  std::vector<std::thread> neighbours;
  for (int i = 0; i < 3; ++i)
    neighbours.emplace_back([i] {
      auto n = client(port());
      post(*n, "/v1/completions",
           Json{{"model", i == 0 ? "tiny" : "lora"},
                {"prompt", std::vector<int64_t>{5, 6, 7, static_cast<int64_t>(8 + i)}},
                {"max_tokens", 12},
                {"presence_penalty", 1.0},
                {"ignore_eos", true}});
    });
  const Reply crowded = post(*c, "/v1/completions", seeded);
  for (std::thread& t : neighbours) t.join();
  ASSERT_EQ(crowded.status, 200) << crowded.text;
  EXPECT_EQ(crowded.body["choices"][0]["text"], alone.body["choices"][0]["text"]);
}

TEST_F(HttpServerTest, NSamplesWithSeedsAreReproducible) {
  auto c = client(port());
  const Json body{{"prompt", kPrompt}, {"max_tokens", 6}, {"n", 2}, {"seed", 11}, {"ignore_eos", true}};
  const Reply a = post(*c, "/v1/completions", body);
  const Reply b = post(*c, "/v1/completions", body);
  ASSERT_EQ(a.status, 200) << a.text;
  ASSERT_EQ(a.body["choices"].size(), 2u);
  EXPECT_EQ(a.body["choices"][1]["index"], 1);
  EXPECT_EQ(a.body["choices"], b.body["choices"]);
  EXPECT_EQ(a.body["usage"]["prompt_tokens"], kPrompt.size());  // counted once for n choices
}

TEST_F(HttpServerTest, ModelsListAdaptersWithTheirParent) {
  auto c = client(port());
  auto res = c->Get("/v1/models");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  const Json body = Json::parse(res->body);
  EXPECT_EQ(body["object"], "list");
  EXPECT_EQ(body["data"][0]["id"], "tiny");
  EXPECT_TRUE(body["data"][0]["parent"].is_null());
  bool found = false;
  for (const Json& m : body["data"])
    if (m["id"] == "lora") found = m["parent"] == "tiny" && m["object"] == "model";
  EXPECT_TRUE(found) << res->body;
  auto one = c->Get("/v1/models/lora");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  EXPECT_EQ(c->Get("/v1/models/nope")->status, 404);
}

TEST_F(HttpServerTest, LoadAndUnloadAdapters) {
  auto c = client(port());
  Reply r = post(*c, "/v1/load_lora_adapter", Json{{"lora_name", "lora2"}});
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_TRUE(env_->engine->has_adapter("lora2"));
  EXPECT_EQ(post(*c, "/v1/load_lora_adapter", Json{{"lora_name", "lora2"}}).status, 400);  // already loaded
  r = post(*c, "/v1/completions", greedy_completion("lora2", false));
  EXPECT_EQ(r.status, 200) << r.text;
  r = post(*c, "/v1/unload_lora_adapter", Json{{"lora_name", "lora2"}});
  EXPECT_EQ(r.status, 200) << r.text;
  r = post(*c, "/v1/completions", greedy_completion("lora2", false));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body["error"]["code"], "model_not_found");
  EXPECT_EQ(post(*c, "/v1/unload_lora_adapter", Json{{"lora_name", "lora2"}}).status, 404);
  // Loaded under another name through lora_path (relative to the root).
  r = post(*c, "/v1/load_lora_adapter", Json{{"lora_name", "other"}, {"lora_path", "lora2"}});
  EXPECT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(post(*c, "/v1/unload_lora_adapter", Json{{"lora_name", "other"}}).status, 200);
}

TEST_F(HttpServerTest, AdapterPathsCannotEscapeTheRoot) {
  auto c = client(port());
  for (const Json& body :
       {Json{{"lora_name", "../outside"}}, Json{{"lora_name", ".."}},
        Json{{"lora_name", "escape"}},  // a symlink to a directory outside
        Json{{"lora_name", "x"}, {"lora_path", "../outside/evil"}},
        Json{{"lora_name", "x"}, {"lora_path", (env_->dir / "outside" / "evil").string()}}}) {
    const Reply r = post(*c, "/v1/load_lora_adapter", body);
    EXPECT_EQ(r.status, 400) << body.dump() << " -> " << r.text;
    EXPECT_EQ(r.body["error"]["type"], "invalid_request_error");
  }
  EXPECT_FALSE(env_->engine->has_adapter("escape"));
  EXPECT_FALSE(env_->engine->has_adapter("x"));
  EXPECT_EQ(post(*c, "/v1/load_lora_adapter", Json{{"lora_name", "missing"}}).status, 404);
}

TEST_F(HttpServerTest, ErrorStatusesUseTheOpenAiShape) {
  auto c = client(port());
  Reply r = post(*c, "/v1/completions", Json{{"model", "gpt-4"}, {"prompt", "hi"}});
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body["error"]["code"], "model_not_found");
  EXPECT_EQ(r.body["error"]["param"], "model");
  r = post(*c, "/v1/completions", Json{{"prompt", "hi"}, {"temperature", -1}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body["error"]["param"], "temperature");
  EXPECT_EQ(r.body["error"]["type"], "invalid_request_error");
  r = post(*c, "/v1/completions", Json{{"prompt", std::vector<int64_t>(65, 7)}});  // over max_prompt_tokens
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body["error"]["param"], "prompt");
  r = post(*c, "/v1/completions", std::string("{not json"));
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(r.body["error"].is_object());
  r = post(*c, "/v1/completions", std::string(20 << 10, ' '));  // over max_body_bytes
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.body["error"]["code"], "request_too_large");
  r = post(*c, "/v1/nothing", Json::object());
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(r.body["error"].is_object());
}

TEST_F(HttpServerTest, ApiKeyIsRequiredOnV1Only) {
  for (const char* key : {static_cast<const char*>(nullptr), "wrong-key", "test-ke", "test-key-"}) {
    auto c = client(port(), key);
    const Reply r = post(*c, "/v1/completions", greedy_completion("tiny", false));
    EXPECT_EQ(r.status, 401) << (key ? key : "(none)");
    EXPECT_EQ(r.body["error"]["code"], "invalid_api_key");
    EXPECT_EQ(c->Get("/v1/models")->status, 401);
    EXPECT_EQ(c->Get("/health")->status, 200);
  }
}

TEST_F(HttpServerTest, HealthAndMetrics) {
  auto c = client(port(), nullptr);
  auto health = c->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(Json::parse(health->body)["status"], "ok");
  // At least one request has run, so the histogram has a count.
  auto a = client(port());
  ASSERT_EQ(post(*a, "/v1/completions", greedy_completion("tiny", false)).status, 200);
  auto metrics = c->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_TRUE(metrics->get_header_value("Content-Type").starts_with("text/plain"));
  for (const char* family :
       {"lowrank_queue_length ", "lowrank_running_requests ", "lowrank_tokens_per_second ",
        "lowrank_time_to_first_token_seconds_bucket{le=\"+Inf\"} ",
        "lowrank_time_to_first_token_seconds_sum ", "lowrank_time_to_first_token_seconds_count ",
        "lowrank_adapters_resident ", "lowrank_adapters_loaded ", "lowrank_pool_pages{state=\"used\"} ",
        "lowrank_requests_total ", "lowrank_requests_queue_full_total ", "lowrank_requests_cancelled_total ",
        "lowrank_http_responses_total{code=\"200\"} "})
    EXPECT_NE(metrics->body.find(family), std::string::npos) << family;
  EXPECT_EQ(metrics->body.find("lowrank_time_to_first_token_seconds_count 0\n"), std::string::npos);

  // One more request for the adapter "lora" moves its counter by one, and the queue-time
  // histogram's count by one.
  auto value_of = [&](const std::string& sample) {
    const std::string body = c->Get("/metrics")->body;
    const size_t at = body.find(sample + " ");
    return at == std::string::npos ? int64_t{0} : std::stoll(body.substr(at + sample.size() + 1));
  };
  const std::string lora_requests = "lowrank_adapter_requests_total{adapter=\"lora\"}";
  const int64_t lora_before = value_of(lora_requests);
  const int64_t queued_before = value_of("lowrank_request_queue_time_seconds_count");
  ASSERT_EQ(post(*a, "/v1/completions", greedy_completion("lora", false)).status, 200);
  EXPECT_EQ(value_of(lora_requests), lora_before + 1);
  EXPECT_EQ(value_of("lowrank_request_queue_time_seconds_count"), queued_before + 1);
  EXPECT_EQ(value_of("lowrank_request_queue_time_seconds_bucket{le=\"+Inf\"}"), queued_before + 1);
}

// An engine that is never started: requests stay queued, so a full queue and a client leaving
// while its request waits are deterministic.
TEST(HttpServerQueueTest, FullQueueGets429AndADisconnectCancels) {
  testing::TempDir dir;
  const fs::path model_dir = testing::tiny_hf_model(dir.path());
  auto model = std::make_shared<nn::Model>(compress::load_model(model_dir));
  auto tokenizer = load_tokenizer(model_dir);
  EngineConfig engine_config = small_engine();
  engine_config.scheduler.max_queue = 1;
  Engine engine(model, tokenizer, {2}, engine_config);
  ServerConfig config;
  config.port = 0;
  config.model_name = "tiny";
  config.threads = 4;
  config.heartbeat = 100ms;
  HttpServer server(engine, *tokenizer, config);
  server.start();

  // The first request fills the queue; its client reads keep-alive comments until told to leave.
  std::atomic<bool> leave{false}, got_data{false};
  std::thread first([&] {
    httplib::Client c("127.0.0.1", server.port());
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = Json{{"prompt", kPrompt}, {"max_tokens", 4}, {"stream", true}}.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      got_data = true;
      return !leave.load();
    };
    c.send(req);
  });
  for (int i = 0; i < 2000 && engine.stats().scheduler.waiting < 1; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(engine.stats().scheduler.waiting, 1);

  auto c = client(server.port(), nullptr);
  const Reply r = post(*c, "/v1/completions", Json{{"prompt", kPrompt}, {"max_tokens", 4}});
  EXPECT_EQ(r.status, 429);
  EXPECT_FALSE(r.retry_after.empty());
  EXPECT_GE(std::stoi(r.retry_after.empty() ? "0" : r.retry_after), 1);
  EXPECT_EQ(r.body["error"]["type"], "rate_limit_error");

  // The first client goes away: the server's next keep-alive write fails and cancels its request.
  for (int i = 0; i < 2000 && !got_data; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_TRUE(got_data);
  leave = true;
  first.join();
  for (int i = 0; i < 2000 && engine.stats().scheduler.cancelled < 1; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(engine.stats().scheduler.cancelled, 1);
  EXPECT_EQ(engine.stats().scheduler.waiting, 0);
  auto metrics = c->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("lowrank_client_disconnects_total 1\n"), std::string::npos);
  EXPECT_NE(metrics->body.find("lowrank_requests_queue_full_total 1\n"), std::string::npos);

  // A non-streaming request that outlasts the heartbeat is sent chunked, whitespace first; the
  // engine is stepped on this thread once the response has switched to that path.
  Reply slow;
  std::thread waiter([&] {
    auto w = client(server.port(), nullptr);
    slow = post(*w, "/v1/completions", Json{{"prompt", kPrompt}, {"max_tokens", 3}, {"ignore_eos", true}});
  });
  for (int i = 0; i < 2000 && engine.stats().scheduler.waiting < 1; ++i) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(config.heartbeat * 3);
  engine.run_until_idle();
  waiter.join();
  EXPECT_EQ(slow.status, 200);
  EXPECT_TRUE(slow.text.starts_with(" ")) << slow.text;
  EXPECT_EQ(slow.body["usage"]["completion_tokens"], 3) << slow.text;

  server.stop(/*drain=*/false);
  EXPECT_EQ(c->Get("/health").error(), httplib::Error::Connection);
}

}  // namespace
}  // namespace lowrank::serve

namespace lowrank::serve {
namespace {

// A drain that runs out of time (drain_timeout 0, vLLM's --shutdown-timeout 0): requests in flight
// end with their text so far and finish_reason "abort" (vLLM's name), a stream with that chunk and
// [DONE], a non-streamed request with a 200 body; none gets an error or a cut-off response. The
// engine is stepped on this thread, so each request has exactly one token when the stop comes.
TEST(HttpServerDrainTest, DrainOutOfTimeAbortsWithTheTextSoFar) {
  testing::TempDir dir;
  const fs::path model_dir = testing::tiny_hf_model(dir.path());
  auto model = std::make_shared<nn::Model>(compress::load_model(model_dir));
  auto tokenizer = load_tokenizer(model_dir);
  Engine engine(model, tokenizer, {2}, small_engine());
  ServerConfig config;
  config.port = 0;
  config.model_name = "tiny";
  config.threads = 4;
  config.heartbeat = 50ms;
  config.drain_timeout = 0ms;
  HttpServer server(engine, *tokenizer, config);
  server.start();

  const Json request{{"prompt", kPrompt}, {"max_tokens", 8}, {"ignore_eos", true}, {"temperature", 0}};
  Reply plain, streamed;
  std::thread plain_client([&] {
    auto c = client(server.port(), nullptr);
    plain = post(*c, "/v1/completions", request);
  });
  std::thread stream_client([&] {
    auto c = client(server.port(), nullptr);
    Json body = request;
    body["stream"] = true;
    streamed = post(*c, "/v1/completions", body);
  });
  for (int i = 0; i < 2000 && engine.stats().scheduler.waiting < 2; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(engine.stats().scheduler.waiting, 2);
  engine.step();  // both prefilled, one token each
  server.stop(/*drain=*/true);
  plain_client.join();
  stream_client.join();

  EXPECT_EQ(plain.status, 200) << plain.text;
  ASSERT_TRUE(plain.body.contains("choices")) << plain.text;
  EXPECT_EQ(plain.body["choices"][0]["finish_reason"], "abort") << plain.text;
  EXPECT_EQ(plain.body["usage"]["completion_tokens"], 1) << plain.text;

  EXPECT_EQ(streamed.status, 200);
  bool done = false;
  const std::vector<Json> events = sse_events(streamed.text, &done);
  EXPECT_TRUE(done) << streamed.text;
  ASSERT_FALSE(events.empty()) << streamed.text;
  for (const Json& e : events) EXPECT_FALSE(e.contains("error")) << e.dump();
  EXPECT_EQ(events.back()["choices"][0]["finish_reason"], "abort") << streamed.text;
}

}  // namespace
}  // namespace lowrank::serve
