// End-to-end tests of the `lowrank` binary: exit codes, --json output, files written.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

using testing::run_command;

std::string lowrank_cmd(const std::string& args) {
  return testing::lowrank_binary().string() + " " + args;
}
std::string model_dir() {
  return testing::fixture("hf/llama-tiny/model").string();
}

TEST(CliTest, VersionAndHelp) {
  auto r = run_command(lowrank_cmd("--version"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("lowrank "), std::string::npos);
  r = run_command(lowrank_cmd("--version --verbose"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("intra-op threads"), std::string::npos) << r.out;
  for (const char* verb : {"", "inspect", "analyze", "methods"}) {
    r = run_command(lowrank_cmd(std::string(verb) + " --help"));
    EXPECT_EQ(r.exit_code, 0) << verb;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << verb;
  }
}

TEST(CliTest, UsageErrorsExitOne) {
  EXPECT_EQ(run_command(lowrank_cmd("no-such-verb")).exit_code, 1);
  EXPECT_EQ(run_command(lowrank_cmd("inspect")).exit_code, 1);                 // missing PATH
  EXPECT_EQ(run_command(lowrank_cmd("analyze " + model_dir())).exit_code, 1);  // missing --out
  auto r = run_command(lowrank_cmd("inspect /nonexistent/model"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("/nonexistent/model"), std::string::npos) << r.out;
}

TEST(CliTest, InspectModelDirectoryJson) {
  auto r = run_command(lowrank_cmd("inspect --json " + model_dir()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  Json j = parse_json(r.out, "inspect output");
  EXPECT_EQ(j["totals"]["tensors"], 21);
  // Independent count from the config: embed + lm_head + per layer (q, k, v, o, gate, up, down, 2 norms) +
  // norm.
  const int64_t h = 64, kv = 32, ff = 176, vocab = 512, layers = 2;
  const int64_t per_layer = 2 * h * h + 2 * kv * h + 3 * h * ff + 2 * h;
  EXPECT_EQ(j["totals"]["params"], 2 * vocab * h + layers * per_layer + h);
  EXPECT_EQ(j["totals"]["bytes"], 4 * j["totals"]["params"].get<int64_t>());
  EXPECT_EQ(j["config"]["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(j["metadata"]["format"], "pt");
  // And the text form names every tensor.
  r = run_command(lowrank_cmd("inspect " + model_dir()));
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("model.layers.1.mlp.down_proj.weight"), std::string::npos);
}

TEST(CliTest, TruncatedOrCorruptFileExitsOneWithMessage) {
  testing::TempDir dir;
  std::ifstream in(testing::fixture("hf/llama-tiny/model/model.safetensors"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  {
    std::ofstream out(dir / "truncated.safetensors", std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  }
  {
    std::string bad = bytes;
    bad[8] = '[';  // header no longer a JSON object
    std::ofstream out(dir / "corrupt.safetensors", std::ios::binary);
    out.write(bad.data(), static_cast<std::streamsize>(bad.size()));
  }
  for (const char* name : {"truncated.safetensors", "corrupt.safetensors"}) {
    auto r = run_command(lowrank_cmd("inspect " + (dir / name).string()));
    EXPECT_EQ(r.exit_code, 1) << name << ": " << r.out;
    EXPECT_NE(r.out.find(name), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("internal error"), std::string::npos) << r.out;
  }
}

TEST(CliTest, AnalyzeWritesSpectraAndSvg) {
  testing::TempDir dir;
  auto out = dir / "report";
  auto r = run_command(lowrank_cmd("analyze " + model_dir() + " --out " + out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  Json j = read_json_file(out / "spectra.json");
  ASSERT_EQ(j["matrices"].size(), 16u);  // 7 projections x 2 layers + embed_tokens + lm_head
  // Oracle: the singular values of each weight computed here, independently of the report.
  Checkpoint ckpt = Checkpoint::open(model_dir());
  for (const auto& m : j["matrices"]) {
    auto s = at::linalg_svdvals(ckpt.load(m["name"].get<std::string>(), at::kDouble));
    auto reported = at::tensor(m["singular_values"].get<std::vector<double>>(), at::kDouble);
    EXPECT_LT(testing::max_abs_diff(reported, s), 1e-9) << m["name"];
    EXPECT_LE(m["rank_90"].get<int64_t>(), m["rank_99"].get<int64_t>());
    EXPECT_LE(m["rank_99"].get<int64_t>(), m["full_rank"].get<int64_t>());
  }
  std::string svg = read_text_file(out / "spectra.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  for (const char* panel : {"q_proj", "k_proj", "down_proj", "lm_head", "embed_tokens"})
    EXPECT_NE(svg.find(panel), std::string::npos) << panel;
}

// A Mamba model through the verbs: pretrain --preset mamba-tiny (one step), finetune a LoRA on
// in_proj and x_proj under bf16 autocast (the MPFT + PEFT setting), and analyze --lyapunov, whose
// exponents are the closed form of mix/mamba_lyapunov.h (tested there); here the verbs' files,
// refusals and the data plumbing.
TEST(CliTest, MambaPretrainFinetuneAndLyapunov) {
  testing::TempDir dir;
  const auto corpus = testing::write_word_corpus(dir / "corpus.txt", 60);
  auto r = run_command(lowrank_cmd("--quiet pretrain --preset mamba-tiny --corpus " + corpus.string() +
                                   " --max-documents 40 --steps 1 --seed 3 --out " + (dir / "run").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string model = (dir / "run/model").string();
  r = run_command(lowrank_cmd("--quiet finetune --model " + model +
                              " --method lora --r 4 --target in_proj --target "
                              "x_proj --data " +
                              corpus.string() +
                              " --max-documents 20 --steps 2 --batch 2 "
                              "--seq-len 16 --autocast bf16 --out " +
                              (dir / "lora").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json adapter = read_json_file(dir / "lora/adapter_config.json");
  std::vector<std::string> targets = adapter["target_modules"].get<std::vector<std::string>>();
  std::sort(targets.begin(), targets.end());
  EXPECT_EQ(targets, (std::vector<std::string>{"in_proj", "x_proj"}));
  EXPECT_EQ(read_json_file(dir / "lora/finetune.json")["trainer"]["autocast"], "bf16");
  r = run_command(lowrank_cmd("--json analyze " + model + " --lyapunov --data " + corpus.string() +
                              " --seq-len 32 --sequences 2 --out " + (dir / "report").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json j = read_json_file(dir / "report/lyapunov.json");
  EXPECT_EQ(j["sequences"].get<int64_t>(), 2);
  EXPECT_EQ(j["positions"].get<int64_t>(), 32);
  EXPECT_EQ(j["layers"].size(), 4u);
  EXPECT_TRUE(j["all_negative"].get<bool>());
  EXPECT_EQ(j["layers"][0]["exponents"].size(), 256u);  // expand 2 x hidden 128 channels
  EXPECT_EQ(j["layers"][0]["exponents"][0].size(), 16u);
  EXPECT_EQ(read_text_file(dir / "report/lyapunov.svg").rfind("<svg", 0), 0u);
  // Refused before any work: no --data; a model without Mamba layers, named.
  r = run_command(lowrank_cmd("analyze " + model + " --lyapunov --out " + (dir / "x").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--data"), std::string::npos) << r.out;
  const auto llama = testing::tiny_hf_model(dir / "llama");
  r = run_command(lowrank_cmd("analyze " + llama.string() + " --lyapunov --data " + corpus.string() +
                              " --out " + (dir / "y").string()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("no Mamba layer"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir / "y/lyapunov.json"));
}

TEST(CliTest, MethodsListsFamilies) {
  auto r = run_command(lowrank_cmd("methods --json"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  Json j = parse_json(r.out, "methods output");
  for (const char* family : {"adapt", "optim", "compress", "mix"}) EXPECT_TRUE(j.contains(family)) << family;
  // Every family in one shape: each method with a summary and its options' help.
  for (const auto& [family, f] : j.items()) {
    EXPECT_TRUE(f.contains("description")) << family;
    for (const Json& m : f["methods"]) {
      EXPECT_FALSE(m["summary"].get<std::string>().empty()) << family << " " << m["name"];
      EXPECT_TRUE(m["options"].is_object()) << family << " " << m["name"];
    }
  }
  auto options_of = [&](const std::string& family, const std::string& method) {
    for (const Json& m : j[family]["methods"])
      if (m["name"] == method) return m["options"];
    ADD_FAILURE() << family << " lists no " << method;
    return Json::object();
  };
  EXPECT_TRUE(options_of("adapt", "loram").contains("criterion"));
  EXPECT_TRUE(options_of("compress", "svdquant").contains("rank"));
  EXPECT_TRUE(options_of("compress", "svd_llm").contains("calib-data"));
  EXPECT_EQ(run_command(lowrank_cmd("methods --family nope")).exit_code, 1);
}

}  // namespace
}  // namespace lowrank
