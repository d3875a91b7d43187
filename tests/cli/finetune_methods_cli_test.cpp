// `lowrank finetune` end to end for the methods whose training differs from a plain adapter run:
// LoRAM with each pruning criterion (and its alignment stage) saves a full-size plain LoRA that
// loads on the original model; PETAL trains with its loss-based quality weights and saves an
// adapter that loads; the removed loram_keep option on lora is refused with a pointer to loram.
#include <gtest/gtest.h>

#include <filesystem>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "tests/testing.h"

namespace lowrank {
namespace {
namespace fs = std::filesystem;
using testing::run_command;

std::string finetune_cmd(const fs::path& model, const fs::path& corpus, const fs::path& out,
                         const std::string& method, const std::string& more) {
  return testing::lowrank_binary().string() + " --threads 2 --quiet finetune --model " + model.string() +
         " --method " + method + " --r 4 --data " + corpus.string() +
         " --batch 2 --seq-len 16 --seed 1 --out " + out.string() + " " + more;
}

TEST(FinetuneMethodsCliTest, LoramTrainsOnEachCriterionAndSavesAFullSizeLora) {
  testing::TempDir dir;
  const fs::path model = testing::tiny_hf_model(dir.path());
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", 40);
  struct Run {
    const char* criterion;
    const char* options;  // more lowrank_options
    int64_t intermediate, kv_heads;
  };
  for (const Run& run :
       {Run{"random", "", 88, 1}, Run{"structured", R"(, "mlp_keep": 0.25, "attn_keep": 1)", 44, 2},
        Run{"semi", "", 176, 2}, Run{"unstructured", R"(, "sparsity": 0.6)", 176, 2}}) {
    const fs::path out = dir / run.criterion;
    const std::string config =
        std::string(R"('{"lowrank_options": {"criterion": ")") + run.criterion + "\"" + run.options + "}}'";
    const auto r = run_command(
        finetune_cmd(model, corpus, out, "loram", "--max-documents 20 --steps 2 --config " + config));
    ASSERT_EQ(r.exit_code, 0) << run.criterion << "\n" << r.out;
    const Json summary = read_json_file(out / "finetune.json");
    EXPECT_EQ(summary["details"]["loram"]["criterion"], run.criterion);
    EXPECT_EQ(summary["details"]["loram"]["intermediate_size"], run.intermediate) << run.criterion;
    EXPECT_EQ(summary["details"]["loram"]["num_key_value_heads"], run.kv_heads) << run.criterion;
    const Json written = read_json_file(out / "adapter_config.json");
    EXPECT_EQ(written["peft_type"], "LORA");
    EXPECT_FALSE(written.contains("lowrank_options") && written["lowrank_options"].contains("criterion"));
    // It loads on the original model: every tensor has the full shapes.
    nn::Model original = nn::Model::load(model);
    const adapt::AttachedAdapter loaded = adapt::load_adapter(original, out);
    EXPECT_EQ(loaded.layers.size(), 14u);  // all-linear over 2 layers
  }
  // The alignment stage on a corpus of its own: its losses reach the summary.
  const fs::path align_corpus = testing::write_word_corpus(dir / "align.txt", 30);
  const std::string config =
      R"('{"lowrank_options": {"criterion": "random", "align_steps": 3, "align_lr": 0.01, )"
      R"("align_data": ")" +
      align_corpus.string() + R"("}}')";
  const auto r = run_command(finetune_cmd(model, corpus, dir / "aligned", "loram",
                                          "--max-documents 20 --steps 2 --config " + config));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json summary = read_json_file(dir / "aligned/finetune.json");
  EXPECT_EQ(summary["details"]["loram"]["align_steps"], 3);
  EXPECT_TRUE(summary["details"]["loram"].contains("align_final_loss"));
  EXPECT_TRUE(fs::exists(dir / "aligned/align"));

  // Bad options fail before any output, naming the option; lora no longer reads loram_keep.
  for (const auto& [method, cfg, named] :
       {std::tuple{"loram", R"('{"lowrank_options": {"criterion": "magnitude"}}')", "criterion"},
        std::tuple{"loram", R"('{"lowrank_options": {"keep": 2}}')", "mlp_keep"},
        std::tuple{"lora", R"('{"lowrank_options": {"loram_keep": 0.5}}')", "--method loram"}}) {
    const fs::path out = dir / "bad";
    const auto bad =
        run_command(finetune_cmd(model, corpus, out, method, std::string("--steps 2 --config ") + cfg));
    EXPECT_EQ(bad.exit_code, 1) << cfg << "\n" << bad.out;
    EXPECT_NE(bad.out.find(named), std::string::npos) << cfg << "\n" << bad.out;
    EXPECT_FALSE(fs::exists(out)) << cfg;
  }
}

TEST(FinetuneMethodsCliTest, PetalTrainsWithLossBasedQualityAndSavesAnAdapterThatLoads) {
  testing::TempDir dir;
  const fs::path model = testing::tiny_hf_model(dir.path());
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", 120);  // with a validation split
  const auto r = run_command(finetune_cmd(model, corpus, dir / "petal", "petal", "--steps 3 --lr 0.01"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json summary = read_json_file(dir / "petal/finetune.json");
  EXPECT_EQ(summary["steps"], 3);
  EXPECT_TRUE(summary["finished"].get<bool>());
  EXPECT_LT(summary["details"]["petal"]["loss_min"].get<double>(),
            summary["details"]["petal"]["loss_max"].get<double>());
  EXPECT_EQ(summary["details"]["petal"]["threshold"], 0.5);
  EXPECT_GT(summary["validation"]["perplexity"].get<double>(), 0);
  EXPECT_EQ(summary["validation"]["ci_unit"], "window");
  nn::Model original = nn::Model::load(model);
  const adapt::AttachedAdapter loaded = adapt::load_adapter(original, dir / "petal");
  EXPECT_EQ(loaded.config.peft_type, "LOWRANK_PETAL");
  // Training moved both LoRAs' B away from their zero initialisation.
  double b_hi = 0, b_lo = 0;
  for (const auto& [module, layer] : loaded.layers)
    for (const auto& [name, t] : layer->tensors()) {
      if (name == "lora_B_hi.weight") b_hi += t.abs().sum().item<double>();
      if (name == "lora_B_lo.weight") b_lo += t.abs().sum().item<double>();
    }
  EXPECT_GT(b_hi, 0);
  EXPECT_GT(b_lo, 0);
  const auto bad =
      run_command(finetune_cmd(model, corpus, dir / "bad", "petal",
                               R"(--steps 2 --config '{"lowrank_options": {"quality_threshold": 2}}')"));
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_NE(bad.out.find("quality_threshold"), std::string::npos) << bad.out;
  EXPECT_FALSE(fs::exists(dir / "bad"));
}

}  // namespace
}  // namespace lowrank
