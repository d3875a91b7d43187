// ROC AUC and log loss (eval/binary_metrics.h) against scikit-learn's roc_auc_score and log_loss on
// scores with ties (fixture tests/fixtures/ctr/metrics.json, make_metrics_fixture.py), and a
// hand-counted case.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/eval/binary_metrics.h"
#include "tests/testing.h"

namespace lowrank::eval {
namespace {

TEST(BinaryMetrics, MatchScikitLearnWithTies) {
  const Json fixture = read_json_file(testing::fixture("ctr/metrics.json"));
  ASSERT_EQ(fixture["cases"].size(), 3u);
  for (const Json& c : fixture["cases"]) {
    const at::Tensor scores = at::tensor(c["scores"].get<std::vector<double>>(), at::kDouble);
    const at::Tensor probs = at::tensor(c["probabilities"].get<std::vector<double>>(), at::kDouble);
    const at::Tensor labels = at::tensor(c["labels"].get<std::vector<int64_t>>(), at::kLong);
    EXPECT_NEAR(roc_auc(scores, labels), c["roc_auc"].get<double>(), 1e-12);
    EXPECT_NEAR(log_loss(probs, labels), c["log_loss"].get<double>(), 1e-12);
    // The AUC depends on the order of the scores only.
    EXPECT_NEAR(roc_auc(scores.mul(3).sub(1).to(at::kFloat), labels), c["roc_auc"].get<double>(), 1e-12);
  }
}

TEST(BinaryMetrics, CountsTiedPairsAsHalf) {
  // Positives {0.5, 0.9}, negatives {0.5, 0.1}: pairs (0.5,0.5) tie, (0.5,0.1) win, (0.9,·) win twice.
  const at::Tensor s = at::tensor({0.5, 0.9, 0.5, 0.1}, at::kDouble);
  const at::Tensor y = at::tensor({1, 1, 0, 0}, at::kLong);
  EXPECT_DOUBLE_EQ(roc_auc(s, y), 3.5 / 4);
}

TEST(BinaryMetrics, RefuseOneClassAndBadLabels) {
  const at::Tensor s = at::tensor({0.1, 0.2}, at::kDouble);
  EXPECT_THROW(roc_auc(s, at::tensor({1, 1}, at::kLong)), InvalidArgument);
  EXPECT_THROW(roc_auc(s, at::tensor({0, 2}, at::kLong)), InvalidArgument);
  EXPECT_THROW(log_loss(s, at::tensor({0, 1, 1}, at::kLong)), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::eval
