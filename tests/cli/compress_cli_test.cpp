// `lowrank compress` and `lowrank export --dense` end to end on the bundled tiny Llama: SVD-LLM
// with calibration from a text file, the compressed directory read by `logits` and `generate`,
// the dense export computing the same logits, and bad requests refused before any output.
#include <gtest/gtest.h>

#include <filesystem>

#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "tests/testing.h"

namespace lowrank {
namespace {
namespace fs = std::filesystem;
using testing::run_command;

std::string lowrank() {
  return testing::lowrank_binary().string() + " --threads 2 --quiet ";
}

TEST(CompressCliTest, SvdLlmWritesADirectoryEveryVerbReadsAndExportsDense) {
  testing::TempDir dir;
  const fs::path model = testing::tiny_hf_model(dir.path());
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", 40);
  auto r = run_command(lowrank() + "--json compress --model " + model.string() +
                       " --method svd_llm --ratio 0.3 --calib-data " + corpus.string() +
                       " --calib-samples 4 --seq-len 32 --eval-data " + corpus.string() + " --out " +
                       (dir / "c").string() + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json out = parse_json(r.out, "compress output");
  const Json& report = out["report"];
  EXPECT_EQ(report["method"], "svd_llm");
  EXPECT_EQ(report["slots"].size(), 14u);  // 2 layers × 7 decoder slots
  EXPECT_NEAR(report["param_reduction"].get<double>(), 0.3, 0.02);
  EXPECT_GT(out["perplexity_after"].get<double>(), 0);
  for (const Json& s : report["slots"]) {
    EXPECT_EQ(s["kind"], "lowrank");
    EXPECT_TRUE(s["output_error"].is_number());
  }
  for (const char* f :
       {"lowrank_config.json", "compress_report.json", "compress_report.svg", "tokenizer.json"})
    EXPECT_TRUE(fs::exists(dir / "c" / f)) << f;

  // logits of the compressed directory == logits of its dense export.
  const fs::path ids = dir / "ids.safetensors";
  save_safetensors(ids,
                   std::vector<NamedTensor>{{"input_ids", at::arange(10, at::kLong).reshape({1, 10}) + 3}});
  r = run_command(lowrank() + "logits --model " + (dir / "c").string() + " --input " + ids.string() +
                  " --out " + (dir / "a.safetensors").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_command(lowrank() + "export --dense --model " + (dir / "c").string() + " --out " +
                  (dir / "d").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_FALSE(fs::exists(dir / "d/lowrank_config.json"));
  r = run_command(lowrank() + "logits --model " + (dir / "d").string() + " --input " + ids.string() +
                  " --out " + (dir / "b.safetensors").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const at::Tensor a = SafetensorsFile::open(dir / "a.safetensors").load("logits");
  const at::Tensor b = SafetensorsFile::open(dir / "b.safetensors").load("logits");
  EXPECT_LT(testing::max_abs_diff(a, b), 1e-4);

  r = run_command(lowrank() + "generate --model " + (dir / "c").string() +
                  " --prompt-ids 1,5,9 --max-new-tokens 4 --greedy --json");
  EXPECT_EQ(r.exit_code, 0) << r.out;
}

TEST(CompressCliTest, BadRequestsFailBeforeAnyOutput) {
  testing::TempDir dir;
  const fs::path model = testing::tiny_hf_model(dir.path());
  struct Bad {
    std::string flags;
    const char* named;
  };
  for (const Bad& bad :
       {Bad{"--method svd_llm --ratio 0.2", "--calib-data"}, Bad{"--method svd --ratio 1.2", "--ratio 1.2"},
        Bad{"--method svd --rank 100", "exceeds min"},
        Bad{"--method rtn", "176 input channels"},  // down_proj: 176 is not a multiple of 64
        Bad{"--method magic", "unknown compression method"},
        Bad{"--method rtn --group-size 16 --compensate eora --compensation-rank 2", "--calib-data"}}) {
    const fs::path out = dir / "bad";
    auto r = run_command(lowrank() + "compress --model " + model.string() + " " + bad.flags + " --out " +
                         out.string());
    EXPECT_EQ(r.exit_code, 1) << bad.flags << "\n" << r.out;
    EXPECT_NE(r.out.find(bad.named), std::string::npos) << bad.flags << "\n" << r.out;
    EXPECT_FALSE(fs::exists(out)) << bad.flags;
  }
}

}  // namespace
}  // namespace lowrank
