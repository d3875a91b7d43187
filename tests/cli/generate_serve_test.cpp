// `lowrank generate` and `lowrank serve` agree byte for byte: the same greedy request (a text prompt
// with multi-byte characters, stop strings that span tokens, max_tokens, with and without eos) gives
// the same text and the same finish reason from the CLI verb as from the server's
// /v1/completions. Both binaries run on the bundled tiny Llama with the byte-level BPE tokenizer.
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "tests/cli/serve_process.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

namespace fs = std::filesystem;

// A greedy prompt whose continuation on the fixture model holds multi-byte characters: whole ones
// ("ʹ") and U+FFFD, which the tokenizer decodes from bytes that form no character.
constexpr const char* kPrompt = "über";

std::string quote(const std::string& arg) {
  std::string out = "'";
  for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

using testing::ServerProcess;

// At least `n` bytes of `text` from `pos`, both ends moved forward to character boundaries.
std::string whole_characters(const std::string& text, size_t pos, size_t n) {
  auto boundary = [&](size_t i) {
    while (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) ++i;
    return i;
  };
  const size_t begin = boundary(pos);
  return text.substr(begin, boundary(std::min(text.size(), begin + n)) - begin);
}

struct Result {
  std::string text;
  std::string finish;
};

struct Request {
  int64_t max_tokens = 24;
  std::vector<std::string> stop;
  bool ignore_eos = true;
};

Result from_cli(const fs::path& model_dir, const Request& request) {
  std::string args = "generate --model " + quote(model_dir.string()) + " --prompt " + quote(kPrompt) +
                     " --greedy --json --max-new-tokens " + std::to_string(request.max_tokens);
  for (const std::string& s : request.stop) args += " --stop " + quote(s);
  if (request.ignore_eos) args += " --ignore-eos";
  const auto r = testing::run_command(testing::lowrank_binary().string() + " " + args);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  if (r.exit_code != 0) return {};
  const Json g = parse_json(r.out, "generate output")["generations"][0];
  return {g["text"].get<std::string>(), g["finish_reason"].get<std::string>()};
}

Result from_server(httplib::Client& client, const Request& request) {
  Json body{{"model", "tiny"},
            {"prompt", kPrompt},
            {"max_tokens", request.max_tokens},
            {"temperature", 0},
            {"ignore_eos", request.ignore_eos}};
  if (!request.stop.empty()) body["stop"] = request.stop;
  auto res = client.Post("/v1/completions", body.dump(), "application/json");
  EXPECT_TRUE(res) << httplib::to_string(res.error());
  if (!res) return {};
  EXPECT_EQ(res->status, 200) << res->body;
  const Json choice = Json::parse(res->body)["choices"][0];
  return {choice["text"].get<std::string>(), choice["finish_reason"].get<std::string>()};
}

TEST(GenerateServeTest, SameGreedyRequestSameBytesAndFinishReason) {
  testing::TempDir dir;
  const fs::path model_dir = testing::tiny_hf_model(dir.path());
  ServerProcess server(model_dir, dir / "serve.log");
  ASSERT_GT(server.port(), 0) << "the server did not start; see its log";
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(120, 0);

  // The whole continuation, to the token limit.
  const Result whole = from_cli(model_dir, {});
  EXPECT_EQ(whole.finish, "length");
  ASSERT_GE(whole.text.size(), 12u) << whole.text;
  // A multi-byte character other than U+FFFD (EF BF BD): its lead byte.
  int multibyte = 0;
  for (size_t i = 0; i < whole.text.size(); ++i)
    multibyte +=
        static_cast<unsigned char>(whole.text[i]) >= 0xC0 && whole.text.compare(i, 3, "\xEF\xBF\xBD") != 0;
  EXPECT_GT(multibyte, 0) << "the continuation has no multi-byte character: " << whole.text;
  const Result served = from_server(client, {});
  EXPECT_EQ(served.text, whole.text);
  EXPECT_EQ(served.finish, whole.finish);

  // Stop strings from the middle of that text (the first to appear wins, and is left out) and one
  // that never appears.
  const std::string stop = whole_characters(whole.text, whole.text.size() / 2, 4);
  ASSERT_FALSE(stop.empty());
  const Request stopped{.stop = {"never \x01 appears", stop}};
  const Result cli_stopped = from_cli(model_dir, stopped);
  EXPECT_EQ(cli_stopped.finish, "stop");
  EXPECT_EQ(cli_stopped.text, whole.text.substr(0, whole.text.find(stop)));
  const Result served_stopped = from_server(client, stopped);
  EXPECT_EQ(served_stopped.text, cli_stopped.text);
  EXPECT_EQ(served_stopped.finish, cli_stopped.finish);

  // The same with the model's eos honoured.
  const Request with_eos{.stop = {stop}, .ignore_eos = false};
  const Result cli_eos = from_cli(model_dir, with_eos);
  const Result served_eos = from_server(client, with_eos);
  EXPECT_EQ(served_eos.text, cli_eos.text);
  EXPECT_EQ(served_eos.finish, cli_eos.finish);

  // A token limit that comes before the stop string.
  const Request short_request{.max_tokens = 3, .stop = {stop}};
  const Result cli_short = from_cli(model_dir, short_request);
  EXPECT_EQ(cli_short.finish, "length");
  const Result served_short = from_server(client, short_request);
  EXPECT_EQ(served_short.text, cli_short.text);
  EXPECT_EQ(served_short.finish, cli_short.finish);
}

}  // namespace
}  // namespace lowrank
