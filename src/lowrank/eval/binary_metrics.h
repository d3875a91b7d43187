// Metrics of a binary classifier's scores against 0/1 labels, as scikit-learn computes them
// (the CTR study reports both; tests/eval/binary_metrics_test.cpp compares against sklearn's values).
//   roc_auc   the area under the ROC curve = P(s⁺ > s⁻) + ½ P(s⁺ = s⁻) over positive/negative pairs:
//             the Mann–Whitney statistic with tied scores at their average rank,
//               AUC = (Σ_{i∈pos} rank_i − n⁺(n⁺ + 1)/2) / (n⁺ n⁻),
//             which equals the trapezoidal area of `sklearn.metrics.roc_auc_score` (ties are one
//             diagonal step of the curve: half the pairs counted).
//   log_loss  −(1/n) Σ y log p + (1 − y) log(1 − p), p clipped to [ε, 1 − ε] with ε the float64
//             machine epsilon (sklearn's `log_loss` for float64 input).
#pragma once

#include <ATen/ATen.h>

namespace lowrank::eval {

// `scores` and `labels` are 1-D of equal length (any floating or integer dtype; labels 0/1).
// Throws InvalidArgument for mismatched shapes, a label other than 0/1, or labels of one class
// only (AUC is undefined then, as sklearn's error says).
double roc_auc(const at::Tensor& scores, const at::Tensor& labels);
// `probabilities` in [0, 1]. Throws InvalidArgument for mismatched shapes or an empty input.
double log_loss(const at::Tensor& probabilities, const at::Tensor& labels);

}  // namespace lowrank::eval
