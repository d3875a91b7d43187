// `lowrank compress` and `lowrank export --dense` end to end on the bundled tiny Llama: SVD-LLM
// with calibration from a text file, its report checked against recomputations (perplexities by
// `lowrank eval` of the dense and the written model, output errors from the written factors and a
// Gram calibrated here, parameter counts from the files), the compressed directory read by
// `logits` and `generate`, the dense export computing the same logits, and bad requests refused
// before any output.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "lowrank/compress/calibration.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/eval/perplexity.h"
#include "lowrank/nn/model.h"
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
  // Perplexities: `lowrank eval` of the dense model and of the written directory, same data.
  auto perplexity_of = [&](const fs::path& m) {
    auto e = run_command(lowrank() + "--json eval --model " + m.string() + " --data " + corpus.string() +
                         " 2>/dev/null");
    EXPECT_EQ(e.exit_code, 0) << e.out;
    return parse_json(e.out, "eval output")["perplexity"].get<double>();
  };
  const double ppl_before = perplexity_of(model), ppl_after = perplexity_of(dir / "c");
  EXPECT_NEAR(out["perplexity_before"].get<double>(), ppl_before, 1e-6 * ppl_before);
  EXPECT_NEAR(out["perplexity_after"].get<double>(), ppl_after, 1e-6 * ppl_after);
  // Output errors sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)) from the written factors against the dense
  // weights, H calibrated here on the same windows (4 × 32 tokens of the corpus's tokens);
  // parameters counted from the two files.
  nn::Model dense = nn::Model::load(model);
  const at::Tensor calib_tokens = eval::load_eval_tokens(corpus, model, "train", 4 * 33 * 4).tokens;
  compress::CalibrationOptions calib;
  calib.samples = 4;
  calib.seq_len = 32;
  calib.progress = false;
  const compress::CalibrationStatistics stats = compress::calibrate(dense, calib_tokens, calib);
  const SafetensorsFile written = SafetensorsFile::open(dir / "c" / "model.safetensors");
  int64_t params_before = 0, params_after = 0;
  for (const Json& s : report["slots"]) {
    const std::string name = s["name"].get<std::string>();
    EXPECT_EQ(s["kind"], "lowrank") << name;
    const at::Tensor W = dense.slot(name).base().dense_weight().to(at::kDouble);
    const at::Tensor U = written.load(name + ".lowrank_u"), V = written.load(name + ".lowrank_v");
    const at::Tensor H = stats.at(name).gram.to(at::kDouble);
    const at::Tensor delta = W - at::matmul(U.to(at::kDouble), V.to(at::kDouble));
    const double error = std::sqrt((at::matmul(delta, H) * delta).sum().item<double>() /
                                   (at::matmul(W, H) * W).sum().item<double>());
    ASSERT_TRUE(s["output_error"].is_number()) << name;
    EXPECT_NEAR(s["output_error"].get<double>(), error, 1e-5 * error + 1e-9) << name;
    EXPECT_EQ(s["rank"].get<int64_t>(), U.size(1)) << name;
    params_before += W.numel();
    params_after += U.numel() + V.numel();
  }
  EXPECT_EQ(report["params_before"].get<int64_t>(), params_before);
  EXPECT_EQ(report["params_after"].get<int64_t>(), params_after);
  EXPECT_NEAR(report["param_reduction"].get<double>(),
              1.0 - static_cast<double>(params_after) / static_cast<double>(params_before), 1e-12);
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
