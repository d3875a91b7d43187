// End-to-end tests of `lowrank tokenize`: encode, decode and train through the binary, with the
// exit codes and messages a user sees for bad input.
#include <gtest/gtest.h>

#include "lowrank/core/json.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

using testing::fixture;
using testing::run_command;

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string tokenize(const std::string& args) {
  return testing::lowrank_binary().string() + " tokenize " + args;
}

const std::string kGpt2 = fixture("hf/bpe-gpt2style/tokenizer.json").string();

TEST(TokenizeCliTest, EncodesToJsonIdsAndTokens) {
  auto r = run_command(tokenize("--json --tokenizer " + quote(kGpt2) + " --text " + quote("Hello, world!")));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json out = parse_json(r.out, "stdout");
  EXPECT_EQ(out["ids"], Json::array({42, 477, 81, 14, 413, 331, 3}));
  EXPECT_EQ(out["tokens"].size(), 7u);
  EXPECT_EQ(out["tokens"][4], "\xC4\xA0wor");  // "Ġwor"
}

TEST(TokenizeCliTest, DecodesIdsAndSkipsSpecialTokens) {
  auto r = run_command(tokenize("--tokenizer " + quote(kGpt2) + " --ids 1,42,477,81,2"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, "<s>Hello</s>\n");
  r = run_command(tokenize("--tokenizer " + quote(kGpt2) + " --ids '1, 42,477,81,2' --skip-special --json"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(parse_json(r.out, "stdout")["text"], "Hello");
}

TEST(TokenizeCliTest, BatchAndInputFile) {
  testing::TempDir tmp;
  write_json_file(tmp / "batch.json", Json::array({"Hello, world!", Json::array({1, 42, 477, 81, 2}), ""}));
  auto r = run_command(tokenize("--tokenizer " + quote(kGpt2) + " --batch " +
                                quote((tmp / "batch.json").string()) + " --skip-special"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json out = parse_json(r.out, "stdout");
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0]["ids"], Json::array({42, 477, 81, 14, 413, 331, 3}));
  EXPECT_EQ(out[1]["text"], "Hello");
  EXPECT_EQ(out[2]["ids"], Json::array());

  write_json_file(tmp / "bad.json", Json::array({Json::array({1, -4})}));
  r = run_command(tokenize("--tokenizer " + quote(kGpt2) + " --batch " + quote((tmp / "bad.json").string())));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("-4"), std::string::npos) << r.out;

  testing::write_text_file(tmp / "text.txt", "line one\nline two\n\n\ttab");
  r = run_command(
      tokenize("--json --tokenizer " + quote(kGpt2) + " --input " + quote((tmp / "text.txt").string())));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(parse_json(r.out, "stdout")["ids"],
            Json::array({78, 490, 444, 201, 78, 490, 259, 89, 81, 201, 201, 200, 86, 67, 68}));
}

TEST(TokenizeCliTest, SpecialFlagAddsTemplateTokens) {
  const std::string llama = fixture("tokenizers/llama3-style").string();
  auto r = run_command(tokenize("--json --special --tokenizer " + quote(llama) + " --text hi"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(parse_json(r.out, "stdout")["tokens"][0], "<|begin_of_text|>");
}

TEST(TokenizeCliTest, ClearErrorsExitOne) {
  auto r = run_command(tokenize("--tokenizer /nonexistent/tokenizer.json --text hi"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("/nonexistent/tokenizer.json"), std::string::npos) << r.out;

  r = run_command(tokenize("--tokenizer " + quote(kGpt2) + " --ids 1,x,3"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("\"x\""), std::string::npos) << r.out;

  r = run_command(tokenize("--tokenizer " + quote(kGpt2) + " --ids 5,999999"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("999999"), std::string::npos) << r.out;

  r = run_command(tokenize("--tokenizer " + quote(kGpt2)));  // neither --text nor --ids
  EXPECT_EQ(r.exit_code, 1);

  testing::TempDir tmp;
  Json spec = read_json_file(kGpt2);
  spec["pre_tokenizer"] = Json{{"type", "Metaspace"}, {"replacement", "_"}};
  write_json_file(tmp / "tokenizer.json", spec);
  r = run_command(tokenize("--tokenizer " + quote((tmp / "tokenizer.json").string()) + " --text hi"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("Metaspace"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tokenizer.json"), std::string::npos) << r.out;
}

TEST(TokenizeCliTest, TrainsThenEncodes) {
  testing::TempDir tmp;
  const std::string out = (tmp / "trained.json").string();
  auto r =
      run_command(tokenize("--json --train " + quote(fixture("tokenizers/corpus.txt").string()) +
                           " --vocab-size 400 --min-frequency 2 --special-token '<s>' --special-token '</s>'"
                           " --pre-tokenizer qwen2 --output " +
                           quote(out)));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(parse_json(r.out, "stdout")["vocab_size"], 400);
  r = run_command(tokenize("--json --tokenizer " + quote(out) + " --text " + quote("<s>naïve 123</s>")));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json enc = parse_json(r.out, "stdout");
  EXPECT_EQ(enc["ids"][0], 0);
  EXPECT_EQ(enc["ids"].back(), 1);
  std::string ids;
  for (const auto& id : enc["ids"]) ids += (ids.empty() ? "" : ",") + id.dump();
  r = run_command(tokenize("--tokenizer " + quote(out) + " --ids " + ids));
  EXPECT_EQ(r.out, "<s>naïve 123</s>\n");
}

}  // namespace
}  // namespace lowrank
