#include "lowrank/eval/binary_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "lowrank/core/error.h"

namespace lowrank::eval {

namespace {

void check_pair(const at::Tensor& a, const at::Tensor& labels, const char* what) {
  LR_CHECK(
      a.defined() && labels.defined() && a.dim() == 1 && labels.dim() == 1 && a.size(0) == labels.size(0),
      InvalidArgument, what, ": scores and labels must be 1-D of equal length, got ",
      a.defined() ? a.sizes() : at::IntArrayRef{}, " and ",
      labels.defined() ? labels.sizes() : at::IntArrayRef{});
  LR_CHECK(a.size(0) > 0, InvalidArgument, what, ": no examples");
  const at::Tensor y = labels.to(at::kDouble);
  LR_CHECK(y.eq(0).logical_or(y.eq(1)).all().item<bool>(), InvalidArgument, what, ": labels must be 0 or 1");
}

}  // namespace

double roc_auc(const at::Tensor& scores, const at::Tensor& labels) {
  check_pair(scores, labels, "roc_auc");
  const at::Tensor s = scores.to(at::kDouble).contiguous().cpu(),
                   y = labels.to(at::kDouble).contiguous().cpu();
  const int64_t n = s.size(0);
  const double* sp = s.data_ptr<double>();
  const double* yp = y.data_ptr<double>();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return sp[a] < sp[b]; });
  // Sum of the positives' ranks (1-based), tied groups at their average rank.
  double rank_sum = 0;
  int64_t positives = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    int64_t group_pos = 0;
    while (j < n && sp[order[static_cast<size_t>(j)]] == sp[order[static_cast<size_t>(i)]]) {
      group_pos += yp[order[static_cast<size_t>(j)]] == 1.0 ? 1 : 0;
      ++j;
    }
    const double average_rank = 0.5 * static_cast<double>(i + 1 + j);  // mean of i+1 .. j
    rank_sum += average_rank * static_cast<double>(group_pos);
    positives += group_pos;
    i = j;
  }
  const int64_t negatives = n - positives;
  LR_CHECK(positives > 0 && negatives > 0, InvalidArgument,
           "roc_auc: only one class present in the labels; the ROC AUC is not defined then");
  const double np = static_cast<double>(positives);
  return (rank_sum - np * (np + 1) / 2) / (np * static_cast<double>(negatives));
}

double log_loss(const at::Tensor& probabilities, const at::Tensor& labels) {
  check_pair(probabilities, labels, "log_loss");
  const double eps = std::numeric_limits<double>::epsilon();
  const at::Tensor p = probabilities.to(at::kDouble).clamp(eps, 1 - eps), y = labels.to(at::kDouble);
  return -(y * p.log() + (1 - y) * (1 - p).log()).mean().item<double>();
}

}  // namespace lowrank::eval
