// loki: the Fréchet-mean prediction against a brute force over every label; the 0/1 metric
// against argmax; shortest paths against hand-computed graphs; the Parzen probabilities against
// an explicit double loop; the estimator predicting labels it never saw.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/loki.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

at::Tensor random_probabilities(int64_t m, int64_t k, uint64_t seed) {
  return at::softmax(2 * normal({m, k}, seed), 1);
}

TEST(LokiTest, MatchesBruteForceOverAllLabels) {
  // A random connected graph on K = 9 labels: a path plus random chords, with random lengths.
  const int64_t num_labels = 9;
  std::vector<LabelEdge> edges;
  const at::Tensor lengths = normal({20}, 3).abs() + 0.1;
  for (int64_t i = 0; i + 1 < num_labels; ++i) edges.push_back({i, i + 1, lengths[i].item<double>()});
  edges.push_back({0, 5, lengths[10].item<double>()});
  edges.push_back({2, 8, lengths[11].item<double>()});
  const at::Tensor d = shortest_path_metric(num_labels, edges);
  const at::Tensor observed = at::tensor(std::vector<int64_t>{1, 4, 6, 8}, at::kLong);
  const at::Tensor probs = random_probabilities(40, 4, 5);
  const at::Tensor predicted = loki_predict(probs, observed, d);
  std::set<int64_t> distinct;
  for (int64_t row = 0; row < 40; ++row) {
    double best = std::numeric_limits<double>::infinity();
    int64_t best_label = -1;
    for (int64_t y = 0; y < num_labels; ++y) {
      double risk = 0;
      for (int64_t i = 0; i < 4; ++i) {
        const double dist = d[y][observed[i].item<int64_t>()].item<double>();
        risk += probs[row][i].item<double>() * dist * dist;
      }
      if (risk < best) best = risk, best_label = y;
    }
    EXPECT_EQ(predicted[row].item<int64_t>(), best_label) << "row " << row;
    distinct.insert(best_label);
  }
  // The check has teeth only if some predictions fall outside the observed labels.
  bool unseen = false;
  for (int64_t y : distinct) unseen |= (y != 1 && y != 4 && y != 6 && y != 8);
  EXPECT_TRUE(unseen);
}

TEST(LokiTest, ZeroOneMetricGivesArgmax) {
  const at::Tensor observed = at::tensor(std::vector<int64_t>{0, 3, 5, 6}, at::kLong);
  const at::Tensor probs = random_probabilities(50, 4, 7);
  const at::Tensor expected = observed.index_select(0, probs.argmax(1));
  EXPECT_TRUE(at::equal(loki_predict(probs, observed, zero_one_metric(8)), expected));
}

TEST(LokiTest, ShortestPathsOfHandGraphs) {
  // A path graph is the line metric; a triangle with a long edge takes the detour.
  std::vector<LabelEdge> path;
  for (int64_t i = 0; i + 1 < 6; ++i) path.push_back({i, i + 1, 1.0});
  EXPECT_TRUE(at::equal(shortest_path_metric(6, path), line_metric(6)));
  const at::Tensor triangle = shortest_path_metric(3, {{0, 1, 1.0}, {1, 2, 2.0}, {0, 2, 5.0}});
  EXPECT_DOUBLE_EQ(triangle[0][2].item<double>(), 3.0);
  EXPECT_DOUBLE_EQ(triangle[2][0].item<double>(), 3.0);
  kernel_testing::expect_error([] { shortest_path_metric(4, {{0, 1, 1.0}, {2, 3, 1.0}}); }, "disconnected");
  kernel_testing::expect_error([] { shortest_path_metric(3, {{0, 1, -1.0}}); }, "length -1");
}

TEST(LokiTest, ParzenProbabilitiesMatchExplicitSums) {
  const at::Tensor x = normal({12, 2}, 11), queries = normal({5, 2}, 12);
  const at::Tensor labels = at::tensor(std::vector<int64_t>{0, 2, 2, 0, 7, 7, 2, 0, 7, 2, 0, 7}, at::kLong);
  const at::Tensor classes = at::tensor(std::vector<int64_t>{0, 2, 7}, at::kLong);
  const double h = 0.8;
  const at::Tensor probs = parzen_probabilities(x, labels, classes, queries, h);
  for (int64_t q = 0; q < 5; ++q) {
    double mass[3] = {0, 0, 0}, total = 0;
    for (int64_t i = 0; i < 12; ++i) {
      double sq = 0;
      for (int64_t j = 0; j < 2; ++j)
        sq += std::pow(queries[q][j].item<double>() - x[i][j].item<double>(), 2);
      const double w = std::exp(-sq / (2 * h * h));
      total += w;
      const int64_t c = labels[i].item<int64_t>();
      mass[c == 0 ? 0 : (c == 2 ? 1 : 2)] += w;
    }
    for (int64_t c = 0; c < 3; ++c) EXPECT_NEAR(probs[q][c].item<double>(), mass[c] / total, 1e-13);
  }
}

TEST(LokiTest, EstimatorPredictsUnseenLabelsAndRoundTrips) {
  // 20 ordinal labels on a line, inputs x = label + noise, training only on labels 0, 5, 10, 15, 19.
  const std::vector<int64_t> seen = {0, 5, 10, 15, 19};
  std::vector<double> xs, ys;
  const at::Tensor noise = normal({50}, 21);
  for (int64_t i = 0; i < 50; ++i) {
    const int64_t label = seen[i % 5];
    xs.push_back(static_cast<double>(label) + 0.3 * noise[i].item<double>());
    ys.push_back(static_cast<double>(label));
  }
  auto loki = create_estimator("loki", {{"labels", 20}, {"metric", "line"}, {"bandwidth", 2.0}}, 0);
  loki->fit(make_dataset(at::tensor(xs, at::kDouble).unsqueeze(1), at::tensor(ys, at::kDouble), "line"));
  const at::Tensor queries = at::arange(0, 20, at::kDouble).unsqueeze(1);
  const at::Tensor predicted = loki->predict(queries);
  int64_t unseen = 0;
  double loki_sq = 0, argmax_sq = 0;
  for (int64_t y = 0; y < 20; ++y) {
    const int64_t p = static_cast<int64_t>(predicted[y].item<double>());
    unseen += std::find(seen.begin(), seen.end(), p) == seen.end();
    loki_sq += static_cast<double>((p - y) * (p - y));
    int64_t nearest_seen = seen[0];
    for (int64_t s : seen)
      if (std::abs(s - y) < std::abs(nearest_seen - y)) nearest_seen = s;
    argmax_sq += static_cast<double>((nearest_seen - y) * (nearest_seen - y));
  }
  EXPECT_GE(unseen, 5);
  EXPECT_LT(loki_sq, argmax_sq);
  testing::TempDir dir;
  loki->save(dir / "model");
  EXPECT_TRUE(at::equal(load_estimator(dir / "model")->predict(queries), predicted));
}

TEST(LokiTest, RefusesBadInput) {
  kernel_testing::expect_error([] { create_estimator("loki", {{"metric", "line"}}, 0); }, "\"labels\"");
  kernel_testing::expect_error(
      [] {
        create_estimator("loki", {{"labels", 4}, {"metric", "tree"}}, 0);
      },
      "\"tree\"");
  kernel_testing::expect_error(
      [] {
        create_estimator("loki", {{"labels", 4}, {"bandwidth", 0}}, 0);
      },
      "\"bandwidth\" must be > 0");
  auto loki = create_estimator("loki", {{"labels", 3}}, 0);
  kernel_testing::expect_error(
      [&] {
        loki->fit(make_dataset(at::zeros({2, 1}, at::kDouble), at::tensor({0.0, 5.0}, at::kDouble), "t"));
      },
      "labels must lie in [0, 3)");
  kernel_testing::expect_error(
      [] {
        loki_predict(at::ones({2, 3}, at::kDouble) / 3, at::tensor({0L, 1L}, at::kLong), line_metric(4));
      },
      "[m, k] with k = 2");
}

}  // namespace
}  // namespace lowrank::kernel_methods
