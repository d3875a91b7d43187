// The multi-vector encoder and MaxSim (nn/multivector.h) and the exact index
// (nn/multivector_index.h). Oracles: MaxSim summed by brute-force loops in float64; the batched
// scores equal per-pair MaxSim on the unpadded vectors; the index ranks as a brute-force sort of
// those scores; files round-trip.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <fstream>
#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/nn/multivector.h"
#include "lowrank/nn/multivector_index.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

double brute_maxsim(const at::Tensor& q, const at::Tensor& d) {
  double total = 0;
  for (int64_t i = 0; i < q.size(0); ++i) {
    double best = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < d.size(0); ++j) {
      double dot = 0;
      for (int64_t k = 0; k < q.size(1); ++k) dot += q[i][k].item<double>() * d[j][k].item<double>();
      best = std::max(best, dot);
    }
    total += best;
  }
  return total;
}

TEST(MaxSim, EqualsTheBruteForceSum) {
  at::Generator gen = at::detail::createCPUGenerator(1);
  const at::Tensor q = at::randn({5, 4}, gen, at::kDouble), d = at::randn({7, 4}, gen, at::kDouble);
  EXPECT_NEAR(maxsim(q, d).item<double>(), brute_maxsim(q, d), 1e-12);
  EXPECT_THROW(maxsim(q, at::randn({3, 5}, gen, at::kDouble)), InvalidArgument);
  EXPECT_THROW(maxsim(q, at::zeros({0, 4}, at::kDouble)), InvalidArgument);
}

TEST(MaxSim, BatchedScoresWithMasksEqualEveryPairUnpadded) {
  at::Generator gen = at::detail::createCPUGenerator(2);
  const at::Tensor Q = at::randn({3, 5, 4}, gen, at::kDouble), D = at::randn({4, 6, 4}, gen, at::kDouble);
  const std::vector<int64_t> qlen{5, 2, 4}, dlen{6, 1, 3, 5};
  at::Tensor qm = at::zeros({3, 5}, at::kBool), dm = at::zeros({4, 6}, at::kBool);
  for (int64_t b = 0; b < 3; ++b) qm[b].narrow(0, 0, qlen[static_cast<std::size_t>(b)]).fill_(true);
  for (int64_t c = 0; c < 4; ++c) dm[c].narrow(0, 0, dlen[static_cast<std::size_t>(c)]).fill_(true);
  const at::Tensor s = maxsim_scores(Q, qm, D, dm);
  ASSERT_EQ(s.sizes(), at::IntArrayRef({3, 4}));
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t c = 0; c < 4; ++c)
      EXPECT_NEAR(s[b][c].item<double>(),
                  brute_maxsim(Q[b].narrow(0, 0, qlen[static_cast<std::size_t>(b)]),
                               D[c].narrow(0, 0, dlen[static_cast<std::size_t>(c)])),
                  1e-12)
          << b << "," << c;
  dm[1].fill_(false);
  EXPECT_THROW(maxsim_scores(Q, qm, D, dm), InvalidArgument);
}

MultiVectorEncoder tiny_encoder() {
  return MultiVectorEncoder::random(multivector_config(30, 16, 1, 2, 32, 12, 8), 4);
}

TEST(MultiVectorEncoder, UnitVectorsAtTokensZeroAtPaddingAndPaddingChangesNothing) {
  const MultiVectorEncoder e = tiny_encoder();
  at::Generator gen = at::detail::createCPUGenerator(3);
  const at::Tensor ids = at::randint(1, 30, {2, 7}, gen, at::kLong);
  at::Tensor mask = at::ones({2, 7}, at::kLong);
  mask[1].narrow(0, 4, 3).fill_(0);
  const at::Tensor v = e.encode(ids, mask);
  ASSERT_EQ(v.sizes(), at::IntArrayRef({2, 7, 8}));
  const at::Tensor norms = v.norm(2, -1);
  EXPECT_LT((norms[0] - 1).abs().max().item<double>(), 1e-5);
  EXPECT_LT((norms[1].narrow(0, 0, 4) - 1).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(norms[1].narrow(0, 4, 3).abs().max().item<double>(), 0.0);
  // Row 1 alone, without its padding: the same vectors (attention ignores padded keys).
  const at::Tensor alone = e.encode(ids[1].narrow(0, 0, 4).unsqueeze(0));
  EXPECT_LT((alone[0] - v[1].narrow(0, 0, 4)).abs().max().item<double>(), 1e-5);
  // Bidirectional: a later token changes an earlier token's vector.
  at::Tensor changed = ids.clone();
  changed[0][6] = (ids[0][6].item<int64_t>() % 29) + 1;
  EXPECT_GT((e.encode(changed)[0][0] - e.encode(ids)[0][0]).abs().max().item<double>(), 1e-6);
}

TEST(MultiVectorEncoder, SavesAndLoads) {
  const MultiVectorEncoder e = tiny_encoder();
  testing::TempDir dir;
  e.save(dir.path() / "m");
  const MultiVectorEncoder back = MultiVectorEncoder::load(dir.path() / "m");
  EXPECT_EQ(back.dim(), 8);
  const at::Tensor ids = at::arange(1, 9, at::kLong).view({1, 8});
  EXPECT_TRUE(at::equal(back.encode(ids), e.encode(ids)));
  EXPECT_THROW(MultiVectorEncoder::random(Json{{"vocab_size", 3}}, 0), InvalidArgument);
}

TEST(MultiVectorIndex, RanksAsABruteForceSortAndRoundTrips) {
  at::Generator gen = at::detail::createCPUGenerator(5);
  MultiVectorIndex index(4);
  std::vector<at::Tensor> docs;
  for (int64_t d = 0; d < 20; ++d) {
    docs.push_back(at::randn({1 + d % 5, 4}, gen));
    EXPECT_EQ(index.add(docs.back()), d);
  }
  const at::Tensor q = at::randn({3, 4}, gen);
  std::vector<std::pair<double, int64_t>> expected;
  for (int64_t d = 0; d < 20; ++d)
    expected.emplace_back(-brute_maxsim(q.to(at::kDouble), docs[static_cast<std::size_t>(d)].to(at::kDouble)),
                          d);
  std::sort(expected.begin(), expected.end());
  const auto hits = index.search({q}, 5);
  ASSERT_EQ(hits[0].size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(hits[0][i].document, expected[i].second);
    EXPECT_NEAR(hits[0][i].score, -expected[i].first, 1e-5);
  }
  testing::TempDir dir;
  index.save(dir.path() / "idx", false, Json{{"note", "test"}});
  const MultiVectorIndex back = MultiVectorIndex::load(dir.path() / "idx");
  EXPECT_EQ(back.documents(), 20);
  EXPECT_EQ(back.vectors(), index.vectors());
  EXPECT_TRUE(at::equal(back.document(7), docs[7]));
  EXPECT_EQ(MultiVectorIndex::read_config(dir.path() / "idx").at("info").at("note"), "test");
  index.save(dir.path() / "half", true);
  EXPECT_LT((MultiVectorIndex::load(dir.path() / "half").document(7) - docs[7]).abs().max().item<double>(),
            2e-3);
  EXPECT_THROW(index.add(at::zeros({0, 4})), InvalidArgument);
  EXPECT_THROW(index.search({q}, 0), InvalidArgument);
}

TEST(MultiVectorIndex, RejectsInconsistentFiles) {
  testing::TempDir dir;
  MultiVectorIndex index(2);
  index.add(at::ones({2, 2}));
  index.save(dir.path() / "idx");
  // Offsets that do not end at the number of vectors.
  const std::vector<NamedTensor> bad = {{"vectors", at::ones({2, 2})},
                                        {"doc_offsets", at::tensor({0L, 1L, 3L})}};
  save_safetensors(dir.path() / "idx" / "index.safetensors", bad);
  EXPECT_THROW(MultiVectorIndex::load(dir.path() / "idx"), Corruption);
  EXPECT_THROW(MultiVectorIndex::load(dir.path() / "none"), NotFound);
}

}  // namespace
}  // namespace lowrank::nn
