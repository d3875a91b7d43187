// End-to-end tests of `lowrank retrieve`: train (colbert, crisp) on a corpus file, index (every
// token vector, k-means, a document file), eval, and the errors a user sees.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "lowrank/core/json.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

using testing::run_command;

std::string retrieve(const std::string& args) {
  return testing::lowrank_binary().string() + " retrieve " + args;
}

// Paragraph-per-entry text: each entry names its number in three sentences.
std::string write_corpus(const std::filesystem::path& path) {
  std::ofstream out(path);
  for (int i = 0; i < 90; ++i)
    out << "Word" << i << ", n. The head sentence of entry " << i << " today. Another sentence about entry "
        << i << " and thing " << i % 7 << " here. A third sentence naming entry " << i << " again.\n\n";
  return path.string();
}

const char* kSmall =
    " --train-pairs 40 --test-queries 8 --test-documents 20 --min-query-words 4 --vocab-size 300 --hidden 16"
    " --layers 1 --heads 2 --dim 8 --steps 3 --batch-size 8 --warmup 0 --quiet";

TEST(RetrieveCliTest, TrainsIndexesAndEvaluates) {
  testing::TempDir tmp;
  const std::string corpus = write_corpus(tmp / "corpus.txt");
  const std::string model = (tmp / "crisp" / "model").string();
  auto r = run_command(retrieve("train --method crisp --clusters fixed:2x3 --corpus " + corpus + " --out " +
                                (tmp / "crisp").string() + kSmall));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "retrieval_data.json"})
    EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(model) / f)) << f;
  const Json train = read_json_file(tmp / "crisp" / "train.json");
  EXPECT_EQ(train.at("steps"), 3);
  EXPECT_EQ(train.at("clusters"), "fixed:2x3");

  const std::string index = (tmp / "idx").string();
  r = run_command(
      retrieve("index --model " + model + " --out " + index + " --reduce kmeans:fixed:2x3 --quiet"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json config = read_json_file(tmp / "idx" / "index_config.json");
  EXPECT_EQ(config.at("documents"), 20);
  EXPECT_LE(config.at("vectors").get<int64_t>(), 60);  // at most 3 centroids per document
  r = run_command(retrieve("eval --json --model " + model + " --index " + index));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json m = Json::parse(r.out);
  EXPECT_EQ(m.at("queries"), 8);
  EXPECT_EQ(m.at("reduction"), "kmeans:fixed:2x3");
  EXPECT_LE(m.at("vectors_per_query").get<double>(), 2.0);
  EXPECT_GE(m.at("recall").get<double>(), m.at("mrr").get<double>());

  // --init continues an encoder on the same pairs only, keeping its tokenizer and shape.
  const std::string same =
      " --train-pairs 40 --test-queries 8 --test-documents 20 --min-query-words 4 --steps 2 --batch-size 8 "
      "--quiet";
  const std::string more = " --init " + model + " --method colbert --corpus " + corpus + " --out " +
                           (tmp / "more").string() + same;
  r = run_command(retrieve("train" + more + " --data-seed 5"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("was trained on the pairs of"), std::string::npos) << r.out;
  r = run_command(retrieve("train" + more + " --hidden 8"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("keeps its own tokenizer and shape"), std::string::npos) << r.out;
  r = run_command(retrieve("train" + more));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(read_json_file(tmp / "more" / "train.json").at("steps"), 2);
  // --epochs sets the length: train.json's trainer config holds the steps the run resolved (40 pairs,
  // batches of 8: 5 a pass), not 0.
  r = run_command(retrieve("train --init " + model + " --method colbert --corpus " + corpus + " --out " +
                           (tmp / "epochs").string() +
                           " --train-pairs 40 --test-queries 8 --test-documents 20 --min-query-words 4 "
                           "--epochs 1 --batch-size 8 --quiet"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json epochs = read_json_file(tmp / "epochs" / "train.json");
  EXPECT_EQ(epochs.at("steps"), 5);
  EXPECT_EQ(epochs.at("config").at("trainer").at("steps"), 5);

  // A document file indexes, but eval refuses it: its queries are not that file's.
  std::ofstream(tmp / "docs.txt") << "first document here\nsecond one\n";
  const std::string other = (tmp / "other").string();
  ASSERT_EQ(run_command(retrieve("index --model " + model + " --documents " + (tmp / "docs.txt").string() +
                                 " --out " + other + " --quiet"))
                .exit_code,
            0);
  EXPECT_EQ(read_json_file(tmp / "other" / "index_config.json").at("documents"), 2);
  r = run_command(retrieve("eval --model " + model + " --index " + other));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("not from the model's test split"), std::string::npos) << r.out;
}

TEST(RetrieveCliTest, ReportsBadInput) {
  testing::TempDir tmp;
  const std::string corpus = write_corpus(tmp / "corpus.txt");
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    const auto r = run_command(retrieve(args));
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  };
  const std::string out = " --out " + (tmp / "m").string() + " --corpus " + corpus;
  expect_error("train --method crisp" + out + kSmall, "crisp needs clusters");
  expect_error("train --method crisp --clusters fixed:8" + out + kSmall, "fixed:CqxCd");
  expect_error("train --method bm25" + out + kSmall, "\"bm25\" is not colbert or crisp");
  expect_error("train --train-pairs 500 --corpus " + corpus + " --out " + (tmp / "m").string(),
               "has 90 entries");
  expect_error("index --model " + (tmp / "nothing").string() + " --out " + (tmp / "i").string(), "nothing");
  EXPECT_FALSE(std::filesystem::exists(tmp / "m" / "model"));
  EXPECT_FALSE(std::filesystem::exists(tmp / "i"));
}

}  // namespace
}  // namespace lowrank
