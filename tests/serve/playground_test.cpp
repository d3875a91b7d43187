// The playground page and the run pages as the HTTP server serves them (playground.h): the assets
// at their paths with their types, the Content-Security-Policy and the other page headers, no
// inline script in the page and no innerHTML in its script, pages open without the API key,
// no CORS header unless --cors-origin (then the preflight is answered before authentication),
// and /runs listing run directories and serving their reports, refusing names outside the root.
#include "lowrank/serve/playground.h"

#include <filesystem>
#include <memory>
#include <regex>

#include <gtest/gtest.h>
#include <httplib.h>

#include "lowrank/compress/format.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/generate.h"
#include "lowrank/serve/engine.h"
#include "lowrank/serve/http_server.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

namespace fs = std::filesystem;

// A tiny engine and a server over it with `config` (port, model name and key filled in).
struct Served {
  testing::TempDir dir;
  std::shared_ptr<nn::Model> model;
  std::shared_ptr<const data::Tokenizer> tokenizer;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<HttpServer> server;

  explicit Served(ServerConfig config) {
    const fs::path model_dir = testing::tiny_hf_model(dir.path());
    model = std::make_shared<nn::Model>(compress::load_model(model_dir));
    tokenizer = std::make_shared<const data::Tokenizer>(data::Tokenizer::load(model_dir / "tokenizer.json"));
    EngineConfig engine_config;
    engine_config.pool_bytes = int64_t{4} << 20;
    engine = std::make_unique<Engine>(model, tokenizer,
                                      nn::default_stop_token_ids(model_dir, model->config()), engine_config);
    engine->start();
    config.port = 0;
    config.model_name = "tiny";
    config.api_key = "page-key";
    config.threads = 2;
    server = std::make_unique<HttpServer>(*engine, *tokenizer, config);
    server->start();
  }
  ~Served() {
    server->stop(/*drain=*/false);
    server.reset();
    engine.reset();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", server->port());
    c.set_read_timeout(30, 0);
    return c;
  }
};

TEST(PlaygroundTest, PageAndAssetsWithStrictHeadersAndNoKeyNeeded) {
  Served s({});
  auto c = s.client();
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"/", "text/html"}, {"/playground/app.js", "text/javascript"}, {"/playground/style.css", "text/css"}};
  for (const auto& [path, type] : expected) {
    auto res = c.Get(path.c_str());
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, 200) << path;  // no Authorization header sent
    EXPECT_TRUE(res->get_header_value("Content-Type").starts_with(type)) << path;
    const std::string csp = res->get_header_value("Content-Security-Policy");
    EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
    EXPECT_NE(csp.find("script-src 'self';"), std::string::npos) << csp;
    EXPECT_EQ(csp.find("unsafe-inline"), std::string::npos) << csp;
    EXPECT_EQ(res->get_header_value("X-Content-Type-Options"), "nosniff");
    EXPECT_EQ(res->get_header_value("X-Frame-Options"), "DENY");
    EXPECT_FALSE(res->has_header("Access-Control-Allow-Origin"));
  }
  // The page: every script is an external one (the CSP would block an inline script anyway),
  // every asset it names is served.
  const std::string page = c.Get("/")->body;
  const std::regex script(R"(<script([^>]*)>)");
  int scripts = 0;
  for (std::sregex_iterator it(page.begin(), page.end(), script), end; it != end; ++it, ++scripts)
    EXPECT_NE((*it)[1].str().find("src=\"/playground/"), std::string::npos) << (*it)[0];
  EXPECT_EQ(scripts, 1);
  EXPECT_EQ(page.find("style=\""), std::string::npos);
  // Model text reaches the page through textContent only: the script never writes HTML.
  const std::string app = c.Get("/playground/app.js")->body;
  for (const char* sink : {"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("})
    EXPECT_EQ(app.find(sink), std::string::npos) << sink;
  EXPECT_NE(app.find("textContent"), std::string::npos);
  // The key goes into the Authorization header, never into a URL.
  EXPECT_NE(app.find("'Bearer ' + state.apiKey"), std::string::npos);
  EXPECT_EQ(app.find("?key="), std::string::npos);
  // The API itself still needs the key.
  EXPECT_EQ(c.Get("/v1/models")->status, 401);
}

TEST(PlaygroundTest, NoCorsByDefault) {
  Served s({});
  auto c = s.client();
  httplib::Headers origin = {{"Origin", "https://elsewhere.example"}, {"Authorization", "Bearer page-key"}};
  auto models = c.Get("/v1/models", origin);
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  EXPECT_FALSE(models->has_header("Access-Control-Allow-Origin"));
  auto preflight = c.Options("/v1/completions", {{"Origin", "https://elsewhere.example"},
                                                 {"Access-Control-Request-Method", "POST"}});
  ASSERT_TRUE(preflight);
  EXPECT_NE(preflight->status, 204);
  EXPECT_FALSE(preflight->has_header("Access-Control-Allow-Origin"));
}

TEST(PlaygroundTest, CorsOriginOptsInOneOrigin) {
  ServerConfig config;
  config.cors_origin = "https://app.example";
  Served s(config);
  auto c = s.client();
  // The preflight carries no key and is answered before authentication.
  auto preflight = c.Options("/v1/chat/completions",
                             {{"Origin", "https://app.example"}, {"Access-Control-Request-Method", "POST"}});
  ASSERT_TRUE(preflight);
  EXPECT_EQ(preflight->status, 204);
  EXPECT_EQ(preflight->get_header_value("Access-Control-Allow-Origin"), "https://app.example");
  EXPECT_NE(preflight->get_header_value("Access-Control-Allow-Headers").find("Authorization"),
            std::string::npos);
  auto models =
      c.Get("/v1/models", {{"Origin", "https://app.example"}, {"Authorization", "Bearer page-key"}});
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  EXPECT_EQ(models->get_header_value("Access-Control-Allow-Origin"), "https://app.example");
  // Another origin gets nothing.
  auto other =
      c.Get("/v1/models", {{"Origin", "https://evil.example"}, {"Authorization", "Bearer page-key"}});
  ASSERT_TRUE(other);
  EXPECT_FALSE(other->has_header("Access-Control-Allow-Origin"));
  auto other_preflight =
      c.Options("/v1/models", {{"Origin", "https://evil.example"}, {"Access-Control-Request-Method", "GET"}});
  ASSERT_TRUE(other_preflight);
  EXPECT_FALSE(other_preflight->has_header("Access-Control-Allow-Origin"));
}

TEST(PlaygroundTest, RunsListedAndServedInsideTheirDirectoryOnly) {
  testing::TempDir runs;
  testing::write_text_file(runs / "alpha" / "run" / "metrics.jsonl",
                           "{\"step\":1,\"loss\":3.5}\n{\"step\":2,\"loss\":3.0}\n");
  testing::write_text_file(runs / "not a run" / "notes.txt", "nothing here");
  testing::write_text_file(
      runs.path().parent_path() / (runs.path().filename().string() + "-outside") / "metrics.jsonl",
      "{\"step\":1,\"loss\":1}\n");
  {
    Served without({});
    EXPECT_EQ(without.client().Get("/runs")->status, 404);
  }
  ServerConfig config;
  config.runs_dir = runs.path();
  Served s(config);
  auto c = s.client();
  auto index = c.Get("/runs");
  ASSERT_TRUE(index);
  EXPECT_EQ(index->status, 200);
  EXPECT_NE(index->body.find("<a href=\"/runs/alpha\">alpha</a>"), std::string::npos) << index->body;
  EXPECT_EQ(index->body.find("not a run"), std::string::npos);
  auto page = c.Get("/runs/alpha");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("data-series=\"alpha\""), std::string::npos);
  const std::string csp = page->get_header_value("Content-Security-Policy");
  EXPECT_NE(csp.find("default-src 'none'"), std::string::npos);
  EXPECT_EQ(csp.find("script-src"), std::string::npos);  // no script allowed at all
  for (const char* bad : {"/runs/missing", "/runs/..", "/runs/.hidden", "/runs/not%20a%20run"})
    EXPECT_EQ(c.Get(bad)->status, 404) << bad;
  EXPECT_THROW(run_page_html(runs.path(), "../" + runs.path().filename().string() + "-outside"), NotFound);
  fs::remove_all(runs.path().parent_path() / (runs.path().filename().string() + "-outside"));
}

}  // namespace
}  // namespace lowrank::serve
