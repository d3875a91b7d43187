// `lowrank finetune --optimizer ...` end to end on the bundled tiny Llama: a LoRA adapter trained
// with GaLore for a few steps (the optimizer and its projector state reach the summary and the
// checkpoint), and bad optimizer flags refused, naming the flag, before any output is written.
#include <gtest/gtest.h>

#include <filesystem>

#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "tests/testing.h"

namespace lowrank {
namespace {
namespace fs = std::filesystem;
using testing::run_command;

std::string finetune_cmd(const fs::path& model, const fs::path& corpus, const fs::path& out,
                         const std::string& more) {
  return testing::lowrank_binary().string() + " --threads 2 --quiet finetune --model " + model.string() +
         " --method lora --r 4 --data " + corpus.string() + " --max-documents 20 --steps 3 --batch 2" +
         " --seq-len 16 --seed 1 --out " + out.string() + " " + more;
}

TEST(FinetuneCliTest, GaLoreTrainsTheAdapterAndBadOptimizerFlagsFailEarly) {
  testing::TempDir dir;
  const fs::path model = testing::tiny_hf_model(dir.path());
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", 40);

  auto r = run_command(
      finetune_cmd(model, corpus, dir / "galore", "--optimizer galore --rank 2 --update-gap 2 --scale 0.5"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json summary = read_json_file(dir / "galore/finetune.json");
  EXPECT_EQ(summary["steps"], 3);
  EXPECT_EQ(summary["trainer"]["optimizer"], "galore");
  EXPECT_EQ(summary["trainer"]["optimizer_options"]["rank"], 2);
  EXPECT_EQ(summary["trainer"]["optimizer_options"]["update_gap"], 2);
  EXPECT_EQ(summary["trainer"]["optimizer_options"]["scale"], 0.5);
  // The run's memory accounting, as pretrain.json has it: GaLore's states and projectors.
  EXPECT_GT(summary["memory"]["optimizer_states"].get<int64_t>(), 0);
  EXPECT_GT(summary["memory"]["projectors"].get<int64_t>(), 0);
  EXPECT_EQ(summary["memory"]["total"].get<int64_t>(),
            summary["memory"]["weights"].get<int64_t>() + summary["memory"]["frozen"].get<int64_t>() +
                summary["memory"]["grads"].get<int64_t>() +
                summary["memory"]["optimizer_states"].get<int64_t>() +
                summary["memory"]["projectors"].get<int64_t>());
  EXPECT_TRUE(fs::exists(dir / "galore/adapter_model.safetensors"));
  // The checkpoint holds GaLore's state: rank-2 moments and a projector per LoRA factor.
  const std::string latest = read_text_file(dir / "galore/run/checkpoints/latest");
  const SafetensorsFile opt =
      SafetensorsFile::open(dir / "galore/run/checkpoints" /
                            latest.substr(0, latest.find_last_not_of("\n ") + 1) / "optimizer.safetensors");
  int projectors = 0;
  for (const TensorInfo& info : opt.tensors()) {
    if (info.name.find(".projector.") == std::string::npos) continue;
    ++projectors;
    const std::string param = info.name.substr(0, info.name.find(".projector."));
    const at::Tensor m = opt.load(param + ".exp_avg");
    EXPECT_TRUE(m.size(0) == 2 || m.size(1) == 2) << param << " " << m.sizes();
  }
  EXPECT_GT(projectors, 0);

  struct Bad {
    const char* flags;
    const char* named;  // what the message must name
  };
  for (const Bad& bad :
       {Bad{"--optimizer nope", "--optimizer"}, Bad{"--optimizer galore --rank 0", "--rank"},
        Bad{"--optimizer galore --update-gap 0", "--update-gap"},
        Bad{"--optimizer galore --scale -1", "--scale"}, Bad{"--rank 4", "--optimizer"},
        Bad{"--optimizer galore --optimizer-options '{\"projector\": \"bogus\"}'", "projector"},
        Bad{"--optimizer galore --optimizer-options '[1]'", "--optimizer-options"}}) {
    const fs::path out = dir / "bad";
    r = run_command(finetune_cmd(model, corpus, out, bad.flags));
    EXPECT_EQ(r.exit_code, 1) << bad.flags << "\n" << r.out;
    EXPECT_NE(r.out.find(bad.named), std::string::npos) << bad.flags << "\n" << r.out;
    EXPECT_FALSE(fs::exists(out)) << bad.flags;
  }
}

// Mixed precision through the verbs: finetune --autocast bf16|fp16 records the mode (and fp16 its
// loss scale per step); eval --autocast scores near, but not exactly at, the float32 perplexity;
// finetune --dtype bfloat16 trains in pure half precision, and is refused beside --autocast.
TEST(FinetuneCliTest, AutocastFinetuneAndEval) {
  testing::TempDir dir;
  const fs::path model = testing::tiny_hf_model(dir.path());
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", 40);
  for (const char* mode : {"bf16", "fp16"}) {
    const fs::path out = dir / mode;
    auto r = run_command(finetune_cmd(model, corpus, out, std::string("--autocast ") + mode));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_EQ(read_json_file(out / "finetune.json")["trainer"]["autocast"], mode);
    const auto lines = testing::read_jsonl(out / "run/metrics.jsonl");
    ASSERT_EQ(lines.size(), 3u);
    EXPECT_EQ(lines[0].contains("loss_scale"), std::string(mode) == "fp16") << lines[0].dump();
  }
  auto eval = [&](const std::string& more) {
    auto r = run_command(testing::lowrank_binary().string() + " --quiet --json eval --model " +
                         model.string() + " --data " + corpus.string() + " --seq-len 32 " + more);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return parse_json(r.out.substr(r.out.find('{')), "eval output")["perplexity"].get<double>();
  };
  const double fp32 = eval(""), bf16 = eval("--autocast bf16"), fp16 = eval("--autocast fp16");
  EXPECT_NE(bf16, fp32);
  EXPECT_NEAR(bf16, fp32, 0.03 * fp32);
  EXPECT_NE(fp16, fp32);
  EXPECT_NEAR(fp16, fp32, 0.01 * fp32);
  auto r = run_command(finetune_cmd(model, corpus, dir / "fp8", "--autocast fp8"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_FALSE(fs::exists(dir / "fp8"));
  // Pure half precision: the base, the adapter and the optimizer states in bfloat16.
  r = run_command(finetune_cmd(model, corpus, dir / "pure", "--dtype bfloat16"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(read_json_file(dir / "pure/finetune.json")["dtype"], "bfloat16");
  const SafetensorsFile adapter = SafetensorsFile::open(dir / "pure/adapter_model.safetensors");
  ASSERT_FALSE(adapter.tensors().empty());
  EXPECT_EQ(adapter.load(adapter.tensors().front().name).scalar_type(), at::kBFloat16);
  r = run_command(finetune_cmd(model, corpus, dir / "both", "--dtype bfloat16 --autocast bf16"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("choose one"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "both"));
}

}  // namespace
}  // namespace lowrank
