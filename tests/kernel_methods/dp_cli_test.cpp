// `lowrank kernel dp build|query` end to end: a built model answers queries from its saved noisy
// aggregates, and ε ≤ 0, NaN or a request to keep the raw data is refused with exit code 1.
#include <gtest/gtest.h>

#include <filesystem>

#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

std::string cli(const std::string& args) {
  return testing::lowrank_binary().string() + " " + args + " 2>&1";
}

// Two clusters in [0, 1]², label last.
std::string two_clusters() {
  std::string csv = "x1,x2,label\n";
  for (int i = 0; i < 20; ++i) {
    const double t = 0.01 * i;
    csv += std::to_string(0.1 + t) + "," + std::to_string(0.2 + t / 2) + ",0\n";
    csv += std::to_string(0.8 - t) + "," + std::to_string(0.9 - t / 2) + ",1\n";
  }
  return csv;
}

TEST(DpCliTest, BuildThenQuery) {
  testing::TempDir dir;
  testing::write_text_file(dir / "train.csv", two_clusters());
  const std::string data = " --data " + (dir / "train.csv").string();
  auto built = testing::run_command(cli("--json kernel dp build" + data +
                                        " --epsilon inf --metric l2 --options '{\"levels\": 8}' --out " +
                                        (dir / "exact").string()));
  ASSERT_EQ(built.exit_code, 0) << built.out;
  EXPECT_EQ(parse_json(built.out, "build output")["report"]["classes"], 2);
  auto query = testing::run_command(cli("--json kernel dp query --model " + (dir / "exact").string() + data));
  ASSERT_EQ(query.exit_code, 0) << query.out;
  const Json answer = parse_json(query.out, "query output");
  EXPECT_EQ(answer["accuracy"].get<double>(), 1.0);  // separated clusters, no noise
  EXPECT_EQ(answer["prediction"].size(), 40u);
  // A private model: the same verbs, the answers written to a file.
  built = testing::run_command(
      cli("kernel dp build" + data + " --epsilon 0.5 --seed 4 --out " + (dir / "private").string()));
  ASSERT_EQ(built.exit_code, 0) << built.out;
  query = testing::run_command(cli("kernel dp query --model " + (dir / "private").string() + data +
                                   " --out " + (dir / "answers.safetensors").string()));
  ASSERT_EQ(query.exit_code, 0) << query.out;
  const SafetensorsFile answers = SafetensorsFile::open(dir / "answers.safetensors");
  EXPECT_EQ(answers.load("prediction").sizes(), (at::IntArrayRef{40}));
  EXPECT_EQ(answers.load("scores").sizes(), (at::IntArrayRef{40, 2}));
}

TEST(DpCliTest, RefusesBadEpsilonAndKeepingRawData) {
  testing::TempDir dir;
  testing::write_text_file(dir / "train.csv", two_clusters());
  const std::string build =
      "kernel dp build --data " + (dir / "train.csv").string() + " --out " + (dir / "m").string();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {" --epsilon 0", "--epsilon must be a number > 0 or \"inf\", got \"0\""},
      {" --epsilon -1", "--epsilon must be a number > 0 or \"inf\", got \"-1\""},
      {" --epsilon nan", "--epsilon must be a number > 0 or \"inf\", got \"nan\""},
      {" --epsilon 1 --keep-data", "\"keep_data\" is refused"},
      {" --epsilon 1 --options '{\"keep_data\": true}'", "\"keep_data\" is refused"},
      {" --epsilon 1 --metric cosine", "\"metric\" must be l1, l2 or gaussian"}};
  for (const auto& [args, message] : bad) {
    const auto r = testing::run_command(cli(build + args));
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_NE(r.out.find(message), std::string::npos) << args << "\n" << r.out;
    EXPECT_FALSE(std::filesystem::exists(dir / "m")) << args;
  }
}

}  // namespace
}  // namespace lowrank::kernel_methods
