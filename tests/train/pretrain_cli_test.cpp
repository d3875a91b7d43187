// `lowrank pretrain` and `lowrank eval` end to end on a small generated text corpus: a run
// stopped mid-way (--stop-after, no checkpoint past step 4, as after a SIGKILL) and resumed
// writes the same metrics as an uninterrupted run; a rerun with the same arguments is cached;
// eval scores a text file with the exported model's tokenizer.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "lowrank/core/json.h"
#include "tests/testing.h"

namespace lowrank::train {
namespace {
namespace fs = std::filesystem;
using testing::run_command;

std::string lowrank(const std::string& args) {
  return testing::lowrank_binary().string() + " --threads 2 --quiet " + args + " 2>&1";
}

void write_corpus(const fs::path& path) {
  std::ofstream out(path);
  const char* words[] = {"the", "lord", "said", "unto", "moses", "and", "israel", "went", "into", "land"};
  for (int p = 0; p < 120; ++p) {
    for (int w = 0; w < 30; ++w) out << words[(p * 7 + w * 3 + w / 4) % 10] << (w % 9 == 8 ? ". " : " ");
    out << "\n\n";
  }
}

std::vector<Json> metrics(const fs::path& path) {
  std::vector<Json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(Json::parse(line));
  return out;
}

TEST(PretrainCliTest, StoppedAndResumedRunMatchesAStraightRun) {
  testing::TempDir dir;
  write_corpus(dir / "corpus.txt");
  const std::string common = "pretrain --preset tiny --corpus " + (dir / "corpus.txt").string() +
                             " --steps 6 --checkpoint-every 2 --seed 3";
  auto r = run_command(lowrank(common + " --out " + (dir / "straight").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_command(lowrank(common + " --out " + (dir / "resumed").string() + " --stop-after 5"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(metrics(dir / "resumed/run/metrics.jsonl").size(), 5u);
  EXPECT_FALSE(fs::exists(dir / "resumed/pretrain.json"));
  r = run_command(lowrank(common + " --out " + (dir / "resumed").string() + " --resume"));
  ASSERT_EQ(r.exit_code, 0) << r.out;

  const auto a = metrics(dir / "straight/run/metrics.jsonl"), b = metrics(dir / "resumed/run/metrics.jsonl");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (size_t i = 0; i < a.size(); ++i)
    for (const char* key : {"step", "loss", "lr", "grad_norm"})
      EXPECT_EQ(a[i][key], b[i][key]) << i << " " << key;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"})
    EXPECT_TRUE(fs::exists(dir / "straight/model" / f)) << f;

  // Same arguments again: served from the cache.
  r = run_command(lowrank(common + " --out " + (dir / "straight").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("(cached)"), std::string::npos) << r.out;

  r = run_command(lowrank("--json eval --model " + (dir / "straight/model").string() + " --data " +
                          (dir / "corpus.txt").string() + " --seq-len 64 --stride 32 --max-tokens 2000"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json e = Json::parse(r.out.substr(r.out.find('{')));
  EXPECT_GT(e["perplexity"].get<double>(), 1.0);
  EXPECT_LE(e["ci95"][0].get<double>(), e["ci95"][1].get<double>());
  r = run_command(lowrank("eval --model " + (dir / "straight/model").string() + " --data " +
                          (dir / "straight/dataset").string() + " --seq-len 64"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("perplexity"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace lowrank::train
