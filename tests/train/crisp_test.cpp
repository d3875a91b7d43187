// CRISP's clustering inside the forward pass (train/crisp.h). Oracles: scikit-learn's KMeans from
// the same initial centres (fixture, 1e-10); the Lloyd objective never increases; every centroid
// is the mean of its members, summed by hand; the gradient through the centroids and MaxSim equals
// central finite differences in float64 with the assignment frozen; InfoNCE equals the hand
// log-softmax; training learns and resumes bit for bit.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/linalg/kmeans.h"
#include "lowrank/nn/multivector.h"
#include "lowrank/train/crisp.h"
#include "tests/testing.h"

namespace lowrank::train {
namespace {

TEST(CrispLloyd, MatchesScikitLearnFromTheSameInitialCentres) {
  const SafetensorsFile f = SafetensorsFile::open(testing::fixture("crisp/kmeans.safetensors"));
  for (int c = 0; c < 3; ++c) {
    const std::string p = str("case", c, ".");
    const at::Tensor x = f.load(p + "x"), init = f.load(p + "init");
    for (int iters : {5, 50}) {
      const LloydResult r = lloyd(x, init, iters);
      EXPECT_LT((r.centers - f.load(str(p, "centers", iters))).abs().max().item<double>(), 1e-10)
          << "case " << c << ", " << iters << " iterations";
      // scikit-learn's labels are the nearest final centres (its closing E-step).
      EXPECT_TRUE(
          at::equal(linalg::squared_distances_to(x, r.centers).argmin(1), f.load(str(p, "labels", iters))))
          << "case " << c;
    }
  }
}

TEST(CrispLloyd, ObjectiveNeverIncreases) {
  for (uint64_t seed = 0; seed < 5; ++seed) {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    const at::Tensor x = at::randn({50, 6}, gen, at::kDouble);
    const at::Tensor init = x.narrow(0, 0, 7);  // a poor start: Lloyd has work to do
    const LloydResult r = lloyd(x, init, 20);
    ASSERT_GE(r.objective.size(), 4u);
    for (std::size_t i = 1; i < r.objective.size(); ++i)
      EXPECT_LE(r.objective[i], r.objective[i - 1] + 1e-12) << "seed " << seed << ", half-step " << i;
    EXPECT_LT(r.objective.back(), r.objective.front());
  }
}

TEST(CrispCluster, EveryCentroidIsTheMeanOfItsMembers) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  const at::Tensor x = at::randn({30, 4}, gen, at::kDouble);
  const at::Tensor init = x.narrow(0, 0, 5);
  const LloydResult r = lloyd(x, init, 5);
  const at::Tensor means = cluster_means(x, r.assignments, 5);
  const auto a = r.assignments.accessor<int64_t, 1>();
  int64_t row = 0;
  for (int64_t j = 0; j < 5; ++j) {
    std::vector<double> sum(4, 0.0);
    int64_t n = 0;
    for (int64_t i = 0; i < 30; ++i)
      if (a[i] == j) {
        ++n;
        for (int64_t d = 0; d < 4; ++d) sum[static_cast<std::size_t>(d)] += x[i][d].item<double>();
      }
    if (n == 0) continue;
    for (int64_t d = 0; d < 4; ++d)
      EXPECT_NEAR(means[row][d].item<double>(), sum[static_cast<std::size_t>(d)] / static_cast<double>(n),
                  1e-12);
    ++row;
  }
  EXPECT_EQ(row, means.size(0));
  // The Lloyd result's centres are these means too (they come from the last assignment).
  EXPECT_LT(
      (r.centers.index_select(0, std::get<0>(at::_unique(r.assignments))) - means).abs().max().item<double>(),
      1e-12);
}

TEST(CrispCluster, EmptyClustersAreDroppedAndKIsClamped) {
  const at::Tensor x = at::tensor({0.0, 0.0, 1.0, 1.0, 5.0, 5.0}, at::kDouble).view({3, 2});
  const at::Tensor a = at::tensor({0, 0, 3}, at::kLong);
  const at::Tensor m = cluster_means(x, a, 4);  // clusters 1 and 2 are empty
  ASSERT_EQ(m.size(0), 2);
  EXPECT_NEAR(m[0][0].item<double>(), 0.5, 1e-15);
  EXPECT_NEAR(m[1][1].item<double>(), 5.0, 1e-15);
  EXPECT_EQ(cluster_vectors(x, 10, 0).size(0), 3);  // k clamped to n: every point its own centroid
}

TEST(CrispCluster, SeededPerSequenceWhateverTheBatch) {
  at::Generator gen = at::detail::createCPUGenerator(5);
  const at::Tensor x = at::randn({3, 12, 4}, gen);
  const at::Tensor mask = at::ones({3, 12}, at::kBool);
  const ClusterSpec spec = ClusterSpec::parse("fixed:2x4");
  const ClusteredBatch all = cluster_batch(x, mask, spec, false, 7);
  const ClusteredBatch one = cluster_batch(x.narrow(0, 2, 1), mask.narrow(0, 2, 1), spec, false, 7);
  EXPECT_TRUE(at::equal(all.vectors[2].narrow(0, 0, one.vectors.size(1)), one.vectors[0]));
}

TEST(CrispCluster, BatchPadsRowsAndMasksThem) {
  at::Generator gen = at::detail::createCPUGenerator(6);
  const at::Tensor x = at::randn({2, 9, 3}, gen);
  at::Tensor mask = at::ones({2, 9}, at::kBool);
  mask[1].narrow(0, 3, 6).fill_(false);  // row 1 has 3 tokens
  const ClusteredBatch r = cluster_batch(x, mask, ClusterSpec::parse("relative:2"), false, 0);
  ASSERT_EQ(r.vectors.size(1), 5);  // ⌈9/2⌉
  EXPECT_EQ(r.mask[0].sum().item<int64_t>(), 5);
  EXPECT_LE(r.mask[1].sum().item<int64_t>(), 2);  // ⌈3/2⌉, fewer if a cluster empties
  EXPECT_EQ(r.vectors[1].index({r.mask[1].logical_not()}).abs().sum().item<double>(), 0.0);
  const ClusteredBatch none = cluster_batch(x, mask, ClusterSpec{}, false, 0);
  EXPECT_TRUE(at::equal(none.vectors, x));
}

// With as many clusters as tokens every token is its own centroid: CRISP's scores are the
// unclustered ones (only the order of the vectors differs, which MaxSim ignores).
TEST(CrispCluster, OneClusterPerTokenGivesTheUnclusteredScores) {
  at::Generator gen = at::detail::createCPUGenerator(9);
  const at::Tensor q = at::randn({3, 5, 4}, gen, at::kDouble), d = at::randn({3, 7, 4}, gen, at::kDouble);
  at::Tensor qm = at::ones({3, 5}, at::kBool), dm = at::ones({3, 7}, at::kBool);
  qm[2].narrow(0, 3, 2).fill_(false);
  dm[1].narrow(0, 4, 3).fill_(false);
  const ClusterSpec one = ClusterSpec::parse("relative:1");
  const ClusteredBatch cq = cluster_batch(q, qm, one, true, 0), cd = cluster_batch(d, dm, one, false, 0);
  const at::Tensor clustered = nn::maxsim_scores(cq.vectors, cq.mask, cd.vectors, cd.mask);
  EXPECT_LT((clustered - nn::maxsim_scores(q, qm, d, dm)).abs().max().item<double>(), 1e-12);
}

// L(X) = InfoNCE over MaxSim of the clustered queries and documents, with both assignments fixed.
at::Tensor frozen_loss(const at::Tensor& q, const at::Tensor& d, const std::vector<at::Tensor>& qa,
                       const std::vector<at::Tensor>& da, int64_t kq, int64_t kd) {
  std::vector<at::Tensor> qc, dc;
  for (int64_t b = 0; b < q.size(0); ++b) {
    qc.push_back(cluster_means(q[b], qa[static_cast<std::size_t>(b)], kq));
    dc.push_back(cluster_means(d[b], da[static_cast<std::size_t>(b)], kd));
  }
  return in_batch_infonce(nn::maxsim_scores(at::stack(qc), {}, at::stack(dc), {}));
}

TEST(CrispGradient, MatchesFiniteDifferencesWithTheAssignmentFrozen) {
  at::Generator gen = at::detail::createCPUGenerator(11);
  const int64_t B = 3, Tq = 6, Td = 8, dim = 4, kq = 2, kd = 3;
  const at::Tensor q = at::randn({B, Tq, dim}, gen, at::kDouble),
                   d = at::randn({B, Td, dim}, gen, at::kDouble);
  // Assignments that leave no cluster empty: token i -> i mod k.
  std::vector<at::Tensor> qa, da;
  for (int64_t b = 0; b < B; ++b) {
    qa.push_back(at::arange(Tq, at::kLong).remainder(kq));
    da.push_back(at::arange(Td, at::kLong).remainder(kd));
  }
  const at::Tensor qv = q.clone().requires_grad_(true), dv = d.clone().requires_grad_(true);
  frozen_loss(qv, dv, qa, da, kq, kd).backward();
  const double h = 1e-6;
  double worst = 0;
  for (const auto& [x, grad] : {std::pair{q, qv.grad()}, std::pair{d, dv.grad()}}) {
    const at::Tensor flat = x.view({-1});
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double v = flat[i].item<double>();
      flat[i] = v + h;
      const double up = frozen_loss(q, d, qa, da, kq, kd).item<double>();
      flat[i] = v - h;
      const double down = frozen_loss(q, d, qa, da, kq, kd).item<double>();
      flat[i] = v;
      worst = std::max(worst, std::abs((up - down) / (2 * h) - grad.view({-1})[i].item<double>()));
    }
  }
  EXPECT_LT(worst, 1e-7);
}

TEST(CrispLoss, InfoNceIsTheHandLogSoftmax) {
  const at::Tensor s = at::tensor({1.0, 2.0, 0.5, -1.0}, at::kDouble).view({2, 2});
  const double l0 = -(1.0 - std::log(std::exp(1.0) + std::exp(2.0)));
  const double l1 = -(-1.0 - std::log(std::exp(0.5) + std::exp(-1.0)));
  EXPECT_NEAR(in_batch_infonce(s).item<double>(), (l0 + l1) / 2, 1e-14);
  EXPECT_THROW(in_batch_infonce(at::zeros({2, 3})), InvalidArgument);
}

TEST(CrispSpec, ParsesCountsAndRejectsBadText) {
  const ClusterSpec f = ClusterSpec::parse("fixed:8x32");
  EXPECT_EQ(f.count(true, 100), 8);
  EXPECT_EQ(f.count(false, 100), 32);
  EXPECT_EQ(f.count(false, 20), 20);
  const ClusterSpec r = ClusterSpec::parse("relative:4");
  EXPECT_EQ(r.count(false, 9), 3);
  EXPECT_EQ(r.count(true, 1), 1);
  EXPECT_EQ(r.to_string(), "relative:4");
  EXPECT_EQ(ClusterSpec::parse("none").count(false, 9), 0);
  for (const char* bad : {"fixed:8", "fixed:0x3", "relative:", "relative:-2", "kmeans", "fixed:8x32x"})
    EXPECT_THROW(ClusterSpec::parse(bad), InvalidArgument) << bad;
}

// Pairs whose document repeats its query's tokens among noise: learnable in a few steps.
std::pair<TokenizedTexts, TokenizedTexts> toy_pairs(int64_t n, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const at::Tensor q = at::randint(4, 40, {n, 5}, gen, at::kLong);
  const at::Tensor d = at::cat({q, at::randint(4, 40, {n, 7}, gen, at::kLong)}, 1);
  TokenizedTexts queries{q, at::full({n}, 5, at::kLong)}, documents{d, at::full({n}, 12, at::kLong)};
  documents.lengths[0] = 9;  // one shorter document: padding is exercised
  return {queries, documents};
}

nn::MultiVectorEncoder toy_encoder() {
  return nn::MultiVectorEncoder::random(nn::multivector_config(40, 16, 1, 2, 32, 16, 8), 3);
}

RetrievalTrainConfig toy_config(const std::string& method, int64_t steps) {
  RetrievalTrainConfig c;
  c.method = method;
  c.clusters = ClusterSpec::parse(method == "crisp" ? "fixed:3x4" : "none");
  c.trainer.steps = steps;
  c.trainer.batch_size = 8;
  c.trainer.lr = 1e-2;
  c.trainer.min_lr = 1e-3;
  c.trainer.warmup_steps = 0;
  c.trainer.seed = 1;
  return c;
}

TEST(CrispTrain, LearnsAndResumesBitForBit) {
  const auto [queries, documents] = toy_pairs(64, 2);
  testing::TempDir a, b;
  nn::MultiVectorEncoder straight = toy_encoder(), resumed = toy_encoder();
  RetrievalTrainConfig config = toy_config("crisp", 8);
  const RetrievalTrainResult r =
      train_retrieval(straight, queries, documents, config, a.path() / "run", false);
  ASSERT_TRUE(r.finished);
  EXPECT_LT(r.steps.back().loss, r.steps.front().loss);
  config.trainer.checkpoint_every = 3;
  config.trainer.stop_after = 5;  // killed after step 5: resumes from the step-3 checkpoint
  EXPECT_FALSE(train_retrieval(resumed, queries, documents, config, b.path() / "run", false).finished);
  config.trainer.stop_after = 0;
  EXPECT_TRUE(train_retrieval(resumed, queries, documents, config, b.path() / "run", true).finished);
  const nn::NamedTensors x = straight.named_tensors(), y = resumed.named_tensors();
  ASSERT_EQ(x.size(), y.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_TRUE(at::equal(x[i].second, y[i].second)) << x[i].first;
}

TEST(CrispTrain, RejectsAMethodWithoutItsClusters) {
  const auto [queries, documents] = toy_pairs(16, 2);
  testing::TempDir dir;
  nn::MultiVectorEncoder e = toy_encoder();
  RetrievalTrainConfig c = toy_config("crisp", 2);
  c.clusters = ClusterSpec{};
  EXPECT_THROW(train_retrieval(e, queries, documents, c, dir.path() / "run", false), InvalidArgument);
  c = toy_config("colbert", 2);
  c.trainer.batch_size = 1;
  EXPECT_THROW(train_retrieval(e, queries, documents, c, dir.path() / "run", false), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::train
