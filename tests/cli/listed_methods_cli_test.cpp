// Every method `lowrank methods` lists runs end to end from the verb that takes it: each adapter
// method through `finetune`, each low-rank optimizer and weight parameterisation through
// `pretrain`, one step each on a tiny model. The lists are read from `lowrank --json methods`, so
// a method registered without a working training path fails here.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "tests/testing.h"

namespace lowrank {
namespace {
namespace fs = std::filesystem;
using testing::run_command;

// The family's methods, each with " --rank 4" where it takes a rank.
std::vector<std::pair<std::string, std::string>> listed(const Json& methods, const std::string& family) {
  std::vector<std::pair<std::string, std::string>> names;
  for (const Json& m : methods.at(family).at("methods"))
    names.emplace_back(m.at("name").get<std::string>(), m.at("options").contains("rank") ? " --rank 4" : "");
  return names;
}

TEST(ListedMethodsCliTest, EveryListedMethodTrainsFromItsVerb) {
  testing::TempDir dir;
  const std::string lowrank = testing::lowrank_binary().string() + " --threads 2 --quiet ";
  auto r = run_command(lowrank + "--json methods");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json methods = Json::parse(r.out);

  const fs::path model = testing::tiny_hf_model(dir.path());
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", 30);
  const auto adapters = listed(methods, "adapt");
  ASSERT_GE(adapters.size(), 10u);
  for (const auto& entry : adapters) {
    const std::string& m = entry.first;
    const fs::path out = dir / ("finetune-" + m);
    r = run_command(lowrank + "finetune --model " + model.string() + " --method " + m + " --r 4 --data " +
                    corpus.string() + " --max-documents 20 --batch 2 --seq-len 16 --steps 1 --out " +
                    out.string());
    EXPECT_EQ(r.exit_code, 0) << "finetune --method " << m << "\n" << r.out;
    EXPECT_TRUE(fs::exists(out / "adapter_config.json")) << m;
  }

  // pretrain: the first run makes the tokenizer and token files, the others reuse them.
  const auto pretrain = [&](const std::string& name, const std::string& flags) {
    const fs::path out = dir / ("pretrain-" + name), first = dir / "pretrain-first";
    if (fs::exists(first / "dataset") && !fs::exists(out)) {
      fs::create_directories(out);
      fs::copy(first / "tokenizer", out / "tokenizer", fs::copy_options::recursive);
      fs::copy(first / "dataset", out / "dataset", fs::copy_options::recursive);
    }
    const auto result =
        run_command(lowrank + "pretrain --preset tiny --corpus " + corpus.string() +
                    " --max-documents 30 --batch-size 2 --steps 1 --out " + out.string() + " " + flags);
    EXPECT_EQ(result.exit_code, 0) << "pretrain " << flags << "\n" << result.out;
    EXPECT_TRUE(fs::exists(out / "pretrain.json")) << flags;
  };
  pretrain("first", "");
  const auto optimizers = listed(methods, "optim");
  ASSERT_GE(optimizers.size(), 5u);
  for (const auto& [m, rank] : optimizers) {
    // GradNormLoRP's optimizer trains the factors of its own weight form (the paper's pair).
    const std::string pair = m == "gradnormlorp" ? " --parameterization gradnormlorp" : "";
    pretrain("optimizer-" + m, "--optimizer " + m + rank + pair);
  }
  const auto parameterizations = listed(methods, "parameterization");
  ASSERT_GE(parameterizations.size(), 5u);
  for (const auto& [m, rank] : parameterizations)
    pretrain("parameterization-" + m, "--parameterization " + m + rank);
}

}  // namespace
}  // namespace lowrank
