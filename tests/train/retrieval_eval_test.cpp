// Retrieval evaluation (train/retrieval_eval.h): the metrics on hand-ranked lists, the reductions'
// vector counts, and an end-to-end evaluation equal to the hand computation from the index's scores.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "lowrank/core/error.h"
#include "lowrank/train/retrieval_eval.h"

namespace lowrank::train {
namespace {

TEST(RetrievalMetrics, MrrAndRecallOfHandRankings) {
  // Positives at ranks 1, 3, absent, 10 (k = 10) -> MRR (1 + 1/3 + 0 + 1/10) / 4, recall 3/4.
  std::vector<std::vector<nn::SearchHit>> hits(4);
  const std::vector<int64_t> positives{5, 6, 7, 8};
  for (int64_t q = 0; q < 4; ++q)
    for (int64_t r = 0; r < 10; ++r) hits[static_cast<std::size_t>(q)].push_back({100 + r, 0.0});
  hits[0][0].document = 5;
  hits[1][2].document = 6;
  hits[3][9].document = 8;
  const RetrievalMetrics m = rank_metrics(hits, positives, 10);
  EXPECT_NEAR(m.mrr, (1.0 + 1.0 / 3 + 0.1) / 4, 1e-15);
  EXPECT_NEAR(m.recall, 0.75, 1e-15);
  EXPECT_NEAR(rank_metrics(hits, positives, 3).recall, 0.5, 1e-15);  // rank 10 falls outside k = 3
  EXPECT_THROW(rank_metrics(hits, {1}, 10), InvalidArgument);
}

TEST(VectorReduction, KeepsTheCountsItNames) {
  const at::Tensor x = at::arange(20, at::kFloat).view({10, 2});
  const VectorReduction tail = VectorReduction::parse("tail:3");
  EXPECT_TRUE(at::equal(tail.apply(x, false), x.narrow(0, 0, 4)));  // ⌈10/3⌉ first vectors
  EXPECT_TRUE(at::equal(tail.apply(x, true), x));                   // queries keep theirs
  const at::Tensor spaced = VectorReduction::parse("spacing:3").apply(x, false);
  ASSERT_EQ(spaced.size(0), 4);  // rows 0, 3, 6, 9
  EXPECT_EQ(spaced[3][0].item<float>(), 18.0f);
  const VectorReduction km = VectorReduction::parse("kmeans:fixed:2x3");
  EXPECT_EQ(km.apply(x, true).size(0), 2);
  EXPECT_EQ(km.apply(x, false).size(0), 3);
  EXPECT_EQ(km.to_string(), "kmeans:fixed:2x3");
  for (const char* bad : {"tail", "tail:0", "spacing:x", "kmeans:none", "kmeans:", "prune:3"})
    EXPECT_THROW(VectorReduction::parse(bad), InvalidArgument) << bad;
}

TEST(RetrievalEval, EqualsTheHandRankingOfTheEncoderScores) {
  const nn::MultiVectorEncoder e =
      nn::MultiVectorEncoder::random(nn::multivector_config(30, 16, 1, 2, 32, 12, 8), 2);
  at::Generator gen = at::detail::createCPUGenerator(4);
  TokenizedTexts docs{at::randint(1, 30, {12, 6}, gen, at::kLong), at::full({12}, 6, at::kLong)};
  docs.lengths[3] = 2;
  TokenizedTexts queries{at::randint(1, 30, {5, 4}, gen, at::kLong), at::full({5}, 4, at::kLong)};
  const std::vector<int64_t> positives{0, 3, 5, 7, 11};
  const VectorReduction none;
  const nn::MultiVectorIndex index = build_index(e, docs, none, 5);
  EXPECT_EQ(index.vectors(), 11 * 6 + 2);
  const RetrievalMetrics m = evaluate_retrieval(e, index, queries, positives, none, 3, 2);
  // By hand: each query's MaxSim against each document, unpadded, and the rank of its positive.
  double mrr = 0, recall = 0;
  for (int64_t q = 0; q < 5; ++q) {
    const at::Tensor qv = e.encode(queries.ids.narrow(0, q, 1))[0].detach();
    std::vector<double> s;
    for (int64_t d = 0; d < 12; ++d)
      s.push_back(
          nn::maxsim(qv, e.encode(docs.ids[d].narrow(0, 0, docs.lengths[d].item<int64_t>()).unsqueeze(0))[0])
              .item<double>());
    int64_t rank = 1;
    const double mine = s[static_cast<std::size_t>(positives[static_cast<std::size_t>(q)])];
    for (int64_t d = 0; d < 12; ++d)
      rank += (s[static_cast<std::size_t>(d)] > mine ||
               (s[static_cast<std::size_t>(d)] == mine && d < positives[static_cast<std::size_t>(q)]))
                  ? 1
                  : 0;
    if (rank <= 3) {
      mrr += 1.0 / static_cast<double>(rank);
      recall += 1;
    }
  }
  EXPECT_NEAR(m.mrr, mrr / 5, 1e-12);
  EXPECT_NEAR(m.recall, recall / 5, 1e-12);
  EXPECT_NEAR(m.vectors_per_document, 68.0 / 12, 1e-12);
  EXPECT_THROW(evaluate_retrieval(e, index, queries, {0, 1, 2, 3, 12}, none), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::train
