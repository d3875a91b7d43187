// gkcl: the task head against scikit-learn's KernelRidge on one-hot targets (fixture); λ = 0
// interpolating the support; the low-rank generator against scikit-learn's probabilistic PCA
// (fixture) and its draws against its moments (Monte Carlo, 4 standard errors); the per-class
// coreset; the estimator routing rows by their task column, keeping earlier heads unchanged when a
// task is added, surviving save/load and reporting its memory; bad input refused.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <set>

#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/gkcl.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::expect_error;
using kernel_testing::normal;

TEST(GkclTest, HeadMatchesKernelRidgeOnOneHotTargets) {
  const SafetensorsFile f = kernel_testing::fixture("gkcl.safetensors");
  const KernelSpec rbf{"rbf", 0.9};
  const KrrHead head = krr_head(rbf, f.load("x"), f.load("labels"), 0.05);
  EXPECT_TRUE(at::equal(head.classes, at::tensor({3.0, 5.0, 8.0}, at::kDouble)));
  EXPECT_EQ(head.jitter, 0.0);
  EXPECT_LE(testing::rel_max_error(head.alpha, f.load("dual_coef")), 1e-8);
  const at::Tensor scores = f.load("scores");
  EXPECT_LE(testing::rel_max_error(krr_head_scores(rbf, head, f.load("x_test")), scores), 1e-8);
  EXPECT_TRUE(at::equal(krr_head_predict(rbf, head, f.load("x_test")),
                        head.classes.index_select(0, scores.argmax(1))));
}

TEST(GkclTest, ZeroRidgeInterpolatesTheSupport) {
  const at::Tensor support = normal({12, 3}, 1);
  const at::Tensor labels = at::tensor({0., 1., 2., 0., 1., 2., 0., 1., 2., 0., 1., 7.}, at::kDouble);
  const KernelSpec rbf{"rbf", 0.7};
  const KrrHead head = krr_head(rbf, support, labels, 0.0);
  ASSERT_EQ(head.jitter, 0.0);
  // f(S) = K(S, S) K(S, S)⁻¹ Y = Y: the one-hot labels, in the columns of classes 0, 1, 2, 7.
  const at::Tensor one_hot =
      labels.unsqueeze(1).eq(at::tensor({0., 1., 2., 7.}, at::kDouble)).to(at::kDouble);
  EXPECT_LE(testing::max_abs_diff(krr_head_scores(rbf, head, support), one_hot), 1e-8);
  EXPECT_TRUE(at::equal(krr_head_predict(rbf, head, support), labels));
}

TEST(GkclTest, LowRankGeneratorIsProbabilisticPcaAndDiagonalIsTheSampleVariance) {
  const SafetensorsFile f = kernel_testing::fixture("gkcl.safetensors");
  const at::Tensor x = f.load("class_x");
  const ClassGaussian low_rank = fit_class_gaussian(x, Covariance::kLowRank, 2);
  EXPECT_LE(testing::rel_max_error(low_rank.mean, f.load("ppca_mean")), 1e-12);
  EXPECT_LE(testing::rel_max_error(class_gaussian_covariance(low_rank), f.load("ppca_covariance")), 1e-8);
  EXPECT_EQ(stored_floats(low_rank), 5 + 5 * 2 + 1);
  const ClassGaussian diagonal = fit_class_gaussian(x, Covariance::kDiagonal, 2);
  EXPECT_LE(testing::rel_max_error(diagonal.noise.square(), f.load("diagonal_variance")), 1e-12);
  EXPECT_EQ(stored_floats(diagonal), 10);
}

TEST(GkclTest, DrawsHaveTheGeneratorsMeanAndCovariance) {
  const ClassGaussian g{at::tensor({1.0, -2.0, 0.5, 3.0}, at::kDouble), normal({4, 2}, 2),
                        at::full({1}, 0.4, at::kDouble)};
  const int64_t n = 20000;
  at::Generator generator = at::detail::createCPUGenerator(3);
  const at::Tensor draws = sample_class_gaussian(g, n, generator);
  const at::Tensor sigma = at::matmul(g.factor, g.factor.t()) + 0.16 * at::eye(4, at::kDouble);
  // Mean: standard error √(Σ_ii / n); covariance entry (i, j): √((Σ_ii Σ_jj + Σ_ij²) / n).
  const at::Tensor mean_error = (draws.mean(0) - g.mean).abs() / (sigma.diagonal() / n).sqrt();
  EXPECT_LE(mean_error.max().item<double>(), 4.0);
  const at::Tensor centred = draws - g.mean;
  const at::Tensor empirical = at::matmul(centred.t(), centred) / static_cast<double>(n);
  const at::Tensor se =
      ((sigma.diagonal().unsqueeze(1) * sigma.diagonal().unsqueeze(0) + sigma.square()) / n).sqrt();
  EXPECT_LE(((empirical - sigma).abs() / se).max().item<double>(), 4.0);
  EXPECT_LE(testing::rel_max_error(class_gaussian_covariance(g), sigma), 1e-12);
}

TEST(GkclTest, CoresetKeepsARandomSubsetOfEachClass) {
  const at::Tensor labels = at::tensor({4., 1., 4., 9., 4., 1., 4., 4., 9., 9., 9., 9., 9., 9., 9.},
                                       at::kDouble);  // 1: 2, 4: 5, 9: 8
  at::Generator a = task_generator(5, 0), b = task_generator(5, 0);
  const at::Tensor keep = coreset_indices(labels, 3, a);
  EXPECT_TRUE(at::equal(keep, coreset_indices(labels, 3, b)));  // same seed, same task: same subset
  const at::Tensor kept = labels.index_select(0, keep);
  EXPECT_EQ(kept.eq(1).sum().item<int64_t>(), 2);
  EXPECT_EQ(kept.eq(4).sum().item<int64_t>(), 3);
  EXPECT_EQ(kept.eq(9).sum().item<int64_t>(), 3);
  const auto* k = keep.data_ptr<int64_t>();
  EXPECT_EQ(std::set<int64_t>(k, k + keep.numel()).size(), 8u);
  // Over seeds every member of class 9 gets picked: the subset is random, not the first rows.
  std::set<int64_t> picked;
  for (int64_t task = 0; task < 30; ++task) {
    at::Generator g = task_generator(5, task);
    const at::Tensor t = coreset_indices(labels, 3, g);
    for (int64_t i = 0; i < t.numel(); ++i)
      if (labels[t[i].item<int64_t>()].item<double>() == 9) picked.insert(t[i].item<int64_t>());
  }
  EXPECT_EQ(picked.size(), 8u);
}

// Two tasks on the same inputs: task 0 separates blob A (label 0) from blob B (label 1), task 1 gives
// the same blobs the labels 3 and 2, so only the task column tells which head answers.
Dataset two_tasks(int64_t tasks) {
  const at::Tensor a = normal({10, 2}, 4) * 0.3 + 2, b = normal({10, 2}, 5) * 0.3 - 2;
  const at::Tensor inputs = at::cat({a, b});
  std::vector<at::Tensor> xs, ys;
  for (int64_t t = 0; t < tasks; ++t) {
    xs.push_back(at::cat({at::full({20, 1}, static_cast<double>(t), at::kDouble), inputs}, 1));
    ys.push_back(t == 0 ? at::cat({at::zeros({10}, at::kDouble), at::ones({10}, at::kDouble)})
                        : at::cat({at::full({10}, 3.0, at::kDouble), at::full({10}, 2.0, at::kDouble)}));
  }
  return make_dataset(at::cat(xs), at::cat(ys), "two tasks");
}

at::Tensor queries(double task) {
  const at::Tensor points = at::tensor({2.1, 1.9, -1.8, -2.2, 1.7, 2.3}, at::kDouble).reshape({3, 2});
  return at::cat({at::full({3, 1}, task, at::kDouble), points}, 1);
}

TEST(GkclTest, EstimatorRoutesByTaskAndKeepsEarlierHeadsWhenATaskIsAdded) {
  const std::vector<Json> variants = {
      parse_json(R"({"per_class": 4})", "options"),
      parse_json(R"({"per_class": 6, "support": "generated"})", "options"),
      parse_json(R"({"per_class": 6, "support": "generated", "covariance": "low_rank", "rank": 1})",
                 "options")};
  // Stored floats: the coreset keeps 2 classes × 4 points × (2 inputs + label) per task; a diagonal
  // generator 2 means + 2 σ + label per class; the rank-1 one 2 + 2 + 1 + label.
  const std::vector<int64_t> floats = {2 * 2 * 4 * 3, 2 * 2 * 5, 2 * 2 * 6};
  for (size_t v = 0; v < variants.size(); ++v) {
    SCOPED_TRACE(variants[v].dump());
    auto one = create_estimator("gkcl", variants[v], 11), both = create_estimator("gkcl", variants[v], 11);
    one->fit(two_tasks(1));
    both->fit(two_tasks(2));
    EXPECT_TRUE(at::equal(both->predict(queries(0)), at::tensor({0.0, 1.0, 0.0}, at::kDouble)));
    EXPECT_TRUE(at::equal(both->predict(queries(1)), at::tensor({3.0, 2.0, 3.0}, at::kDouble)));
    // Adding task 1 leaves task 0's head as it was: the same scores, not just the same labels.
    EXPECT_TRUE(at::equal(one->predict(queries(0)), both->predict(queries(0))));
    EXPECT_EQ(both->report()["stored_floats"].get<int64_t>(), floats[v]);
    EXPECT_EQ(both->report()["tasks"].get<int64_t>(), 2);
    const at::Tensor mixed = at::cat({queries(1), queries(0)});
    testing::TempDir dir;
    both->save(dir / "model");
    EXPECT_TRUE(at::equal(load_estimator(dir / "model")->predict(mixed), both->predict(mixed)));
  }
}

TEST(GkclTest, BadInputIsRefusedNamingTheCulprit) {
  auto fitted = create_estimator("gkcl", {{"per_class", 3}}, 1);
  fitted->fit(two_tasks(1));
  expect_error([&] { fitted->predict(queries(4)); }, "task id 4 in x's first column was not fitted");
  expect_error([&] { fitted->predict(queries(0.5)); }, "task ids (x's first column) must be integers");
  Dataset bad_labels = two_tasks(1);
  bad_labels.y = bad_labels.y + 0.5;
  expect_error([&] { create_estimator("gkcl", Json::object(), 1)->fit(bad_labels); },
               "labels y must be integers");
  expect_error([&] { create_estimator("gkcl", {{"support", "vae"}}, 1); }, "option \"support\"");
  expect_error([&] { create_estimator("gkcl", {{"covariance", "full"}}, 1); }, "option \"covariance\"");
  expect_error([&] { create_estimator("gkcl", {{"per_class", 0}}, 1); }, "option \"per_class\" must be >= 1");
  expect_error([&] { create_estimator("gkcl", {{"ridge", -1.0}}, 1); }, "option \"ridge\" must be >= 0");
  expect_error([&] { create_estimator("gkcl", {{"bandwidth", 0.0}}, 1); }, "bandwidth");
  expect_error(
      [&] {
        create_estimator("gkcl", {{"support", "generated"}, {"covariance", "low_rank"}, {"rank", 2}}, 1)
            ->fit(two_tasks(1));
      },
      "option \"rank\" must be below the input width 2");
  const Dataset lonely = make_dataset(at::tensor({0.0, 1.0, 0.0, 2.0, 0.0, 3.0}, at::kDouble).reshape({3, 2}),
                                      at::tensor({0.0, 0.0, 1.0}, at::kDouble), "lonely");
  expect_error(
      [&] {
        create_estimator("gkcl", {{"support", "generated"}}, 1)->fit(lonely);
      },
      "class 1 of task 0 has 1 point(s); its generator needs at least 2");
  const Dataset no_inputs =
      make_dataset(at::zeros({3, 1}, at::kDouble), at::zeros({3}, at::kDouble), "narrow");
  expect_error([&] { create_estimator("gkcl", Json::object(), 1)->fit(no_inputs); },
               "x needs the task id in its first column");
}

}  // namespace
}  // namespace lowrank::kernel_methods
