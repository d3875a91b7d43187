// End to end: `lowrank logits` and `lowrank generate` on the transformers fixture.
#include <gtest/gtest.h>

#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/data/tokenizer.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

using testing::fixture;
using testing::run_command;

std::string lowrank_cmd(const std::string& args) {
  return testing::lowrank_binary().string() + " " + args;
}
std::string model_dir() {
  return fixture("hf/llama-tiny/model").string();
}
SafetensorsFile expected() {
  return SafetensorsFile::open(fixture("hf/llama-tiny/expected.safetensors"));
}

TEST(VerbsTest, LogitsMatchTransformers) {
  testing::TempDir dir;
  const NamedTensor ids{"input_ids", expected().load("input_ids")};
  save_safetensors(dir / "in.safetensors", std::span<const NamedTensor>(&ids, 1));
  const auto r = run_command(lowrank_cmd("logits --model " + model_dir() + " --input " +
                                         (dir / "in.safetensors").string() + " --out " +
                                         (dir / "out.safetensors").string() + " --json"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(parse_json(r.out, "logits output")["shape"], Json({2, 24, 512}));
  const SafetensorsFile out = SafetensorsFile::open(dir / "out.safetensors");
  ASSERT_EQ(out.find("logits")->dtype, Dtype::kF32);
  EXPECT_LE(testing::max_abs_diff(out.load("logits"), expected().load("logits")), 1e-4);
}

TEST(VerbsTest, LogitsErrors) {
  testing::TempDir dir;
  const NamedTensor ids{"input_ids", expected().load("input_ids")};
  save_safetensors(dir / "in.safetensors", std::span<const NamedTensor>(&ids, 1));
  const std::string base = "logits --model " + model_dir() + " --input " + (dir / "in.safetensors").string() +
                           " --out " + (dir / "o").string();
  auto r = run_command(lowrank_cmd(base + " --adapter " + dir.path().string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("has no adapter_config.json"), std::string::npos) << r.out;

  const NamedTensor wrong{"input_ids", expected().load("input_ids").to(at::kInt)};
  save_safetensors(dir / "bad.safetensors", std::span<const NamedTensor>(&wrong, 1));
  r = run_command(lowrank_cmd("logits --model " + model_dir() + " --input " +
                              (dir / "bad.safetensors").string() + " --out " + (dir / "o").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("input_ids"), std::string::npos) << r.out;
  EXPECT_EQ(run_command(lowrank_cmd("logits --model " + model_dir())).exit_code, 1);  // missing flags
}

TEST(VerbsTest, GenerateGreedyIds) {
  const at::Tensor prompt = expected().load("greedy_prompt");
  const at::Tensor want = expected().load("greedy_output");
  std::string ids;
  for (int64_t i = 0; i < prompt.size(1); ++i)
    ids += (i ? "," : "") + std::to_string(prompt[0][i].item<int64_t>());
  auto r = run_command(lowrank_cmd("generate --model " + model_dir() + " --prompt-ids " + ids +
                                   " --max-new-tokens 16 --greedy --json"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json j = parse_json(r.out, "generate output");
  const Json& g = j["generations"][0];
  std::vector<int64_t> got = g["prompt_ids"].get<std::vector<int64_t>>();
  for (int64_t t : g["output_ids"].get<std::vector<int64_t>>()) got.push_back(t);
  ASSERT_EQ(static_cast<int64_t>(got.size()), want.size(1));
  for (int64_t i = 0; i < want.size(1); ++i) EXPECT_EQ(got[i], want[0][i].item<int64_t>()) << i;
  EXPECT_EQ(g["finish_reason"], "length");

  // Plain output: the ids, comma-separated; sampling with a seed is reproducible.
  r = run_command(lowrank_cmd("generate --model " + model_dir() + " --prompt-ids " + ids +
                              " --max-new-tokens 4 --temperature 0.8 --top-p 0.9 --top-k 20 --seed 5"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out,
            run_command(lowrank_cmd("generate --model " + model_dir() + " --prompt-ids " + ids +
                                    " --max-new-tokens 4 --temperature 0.8 --top-p 0.9 --top-k 20 --seed 5"))
                .out);
}

TEST(VerbsTest, GenerateFromTextWithATokenizer) {
  // The fixture model with the fixture byte-level BPE tokenizer (same vocabulary size, 512).
  testing::TempDir dir;
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors"})
    std::filesystem::copy_file(fixture("hf/llama-tiny/model") / f, dir / f);
  std::filesystem::copy_file(fixture("hf/bpe-gpt2style/tokenizer.json"), dir / "tokenizer.json");
  const data::Tokenizer tok = data::Tokenizer::load(dir / "tokenizer.json");
  const std::vector<int32_t> prompt = tok.encode("the quick brown fox", /*add_special_tokens=*/true);
  std::string ids;
  for (int32_t id : prompt) ids += (ids.empty() ? "" : ",") + std::to_string(id);

  const std::string base =
      "generate --model " + dir.path().string() + " --max-new-tokens 6 --ignore-eos --json";
  auto by_text = run_command(lowrank_cmd(base + " --prompt 'the quick brown fox'"));
  ASSERT_EQ(by_text.exit_code, 0) << by_text.out;
  auto by_ids = run_command(lowrank_cmd(base + " --prompt-ids " + ids));
  ASSERT_EQ(by_ids.exit_code, 0) << by_ids.out;
  const Json a = parse_json(by_text.out, "generate output")["generations"][0];
  const Json b = parse_json(by_ids.out, "generate output")["generations"][0];
  EXPECT_EQ(a["prompt_ids"], b["prompt_ids"]);
  EXPECT_EQ(a["output_ids"], b["output_ids"]);
  const std::vector<int32_t> out = a["output_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(a["text"], tok.decode(out));

  // Streaming (human mode) prints the same text.
  auto streamed =
      run_command(lowrank_cmd("generate --model " + dir.path().string() +
                              " --max-new-tokens 6 --ignore-eos --prompt 'the quick brown fox' 2>/dev/null"));
  ASSERT_EQ(streamed.exit_code, 0) << streamed.out;
  EXPECT_EQ(streamed.out, tok.decode(out) + "\n");

  // A stop string made of the first generated token's text ends generation right there.
  const std::string first = tok.decode(std::vector<int32_t>{out[0]});
  if (!first.empty() && first.find('\'') == std::string::npos) {
    auto stopped = run_command(lowrank_cmd(base + " --prompt-ids " + ids + " --stop '" + first + "'"));
    ASSERT_EQ(stopped.exit_code, 0) << stopped.out;
    const Json g = parse_json(stopped.out, "generate output")["generations"][0];
    EXPECT_EQ(g["output_ids"].size(), 1u);
    EXPECT_EQ(g["finish_reason"], "stop");
    EXPECT_EQ(g["text"], "");  // the stop string is not part of the text
  }
}

TEST(VerbsTest, GenerateErrors) {
  // No tokenizer.json in the fixture model: text prompts are refused clearly.
  auto r = run_command(lowrank_cmd("generate --model " + model_dir() + " --prompt hello --max-new-tokens 2"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("tokenizer.json"), std::string::npos) << r.out;
  r = run_command(lowrank_cmd("generate --model " + model_dir() + " --prompt-ids 1,x --max-new-tokens 2"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--prompt-ids"), std::string::npos) << r.out;
  r = run_command(
      lowrank_cmd("generate --model " + model_dir() + " --prompt-ids 1,2 --greedy --temperature 0.5"));
  EXPECT_EQ(r.exit_code, 1);
  r = run_command(lowrank_cmd("generate --model " + model_dir() + " --max-new-tokens 2"));
  EXPECT_EQ(r.exit_code, 1);
}

}  // namespace
}  // namespace lowrank
