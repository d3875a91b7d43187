// Loki: predicting unobserved classes through the label space's metric — Roberts et al., 2023,
// "Geometry-Aware Adaptation for Pretrained Models" (NeurIPS 2023), arXiv:2307.12226.
//
// A classifier trained on k observed labels Λ = {λ_1..λ_k} ⊂ Y (|Y| = K) gives probabilities
// P(x) ∈ Δ^{k−1}. Given a metric d on all K labels, Loki replaces argmax_i P_i by the Fréchet mean
// of the observed labels weighted by P (the paper's eq. 1):
//   ŷ(x) = argmin_{y ∈ Y} Σ_{i=1}^k P_i(x) d²(y, λ_i),
// which can land on a label never seen in training. In matrix form, for a batch P [m, k] and the
// squared distances D²_Λ [k, K] from the observed labels to every label, the scores are
//   S = −P D²_Λ   [m, K],   ŷ = argmax_y S_y  (= argmin of P D²_Λ),
// one (k × K) product per batch. With the 0/1 metric (d(y, y') = 1 for y ≠ y') the score of an
// observed λ_i is −(1 − P_i) and of an unobserved label −1, so Loki reduces to argmax P.
// The metric is given as a distance matrix, or as a weighted graph whose shortest-path lengths
// are the distances (the authors' experiments take shortest paths in a label tree/graph).
// Ties go to the lowest label index (numpy's argmin, which the authors' code uses).
//
// Reference code: SprocketLab/loki, simclr_exps/loki.py (loki_exact_predict: s = −probs @ dists²)
// and imagenet_exp/simclr_exp.py (argmin of pred_prob · D²[sampled_classes], shortest-path D).
//
// Registered as `loki`: the base classifier here is a Parzen (Nadaraya–Watson) class-probability
// estimate P_i(x) = Σ_{j: y_j = λ_i} k(x, x_j) / Σ_j k(x, x_j) with an RBF kernel — a kernel
// estimate of the class posterior, in place of the paper's pretrained model plus logistic
// regression (Loki itself only needs some P(x); loki_predict() takes any).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

// The scores −P D²_Λ: probs [m, k] (rows on the simplex, not checked beyond shape and sign),
// observed [k] int64 label indices into distances [K, K] (symmetric, ≥ 0). Returns [m, K].
at::Tensor loki_scores(const at::Tensor& probs, const at::Tensor& observed, const at::Tensor& distances);
// argmax of loki_scores: [m] int64 labels in [0, K).
at::Tensor loki_predict(const at::Tensor& probs, const at::Tensor& observed, const at::Tensor& distances);

// The metrics the registry knows.
at::Tensor line_metric(int64_t num_labels);      // d(i, j) = |i − j|
at::Tensor zero_one_metric(int64_t num_labels);  // d(i, j) = [i ≠ j]
struct LabelEdge {
  int64_t from = 0, to = 0;
  double length = 1;
};
// All-pairs shortest paths (Floyd–Warshall) of an undirected graph on num_labels nodes. Throws
// InvalidArgument for a node out of range, a length ≤ 0 or a disconnected graph.
at::Tensor shortest_path_metric(int64_t num_labels, const std::vector<LabelEdge>& edges);

// Parzen class probabilities: train x [n, d] with labels [n] int64 (values in `classes` [k]),
// queries [m, d] → [m, k], with the RBF kernel exp(−‖x − x'‖²/(2h²)) (log-sum-exp, so far
// queries do not divide 0 by 0).
at::Tensor parzen_probabilities(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& classes,
                                const at::Tensor& queries, double bandwidth);

}  // namespace lowrank::kernel_methods
