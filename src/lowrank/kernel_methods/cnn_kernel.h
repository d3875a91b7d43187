// NNGP and NTK of a deep "tree" CNN with non-overlapping patches — Cagnetta, Favero & Wyart, 2023,
// "What Can Be Learnt With Wide Convolutional Neural Networks?", ICML, arXiv:2208.01003.
//
// Architecture (the paper's hierarchical CNN; neural-tangents
//   stax.serial(*[Conv(C, (s,), strides=(s,), padding="VALID", W_std=σ_w, b_std=σ_b), Relu()] × L,
//               Flatten(), Dense(1, W_std=σ_w, b_std=σ_b))
// with parameterization="ntk" on inputs [n, d, 1]): input dimension d = s^L, filter size = stride = s,
// so every layer sees s non-overlapping children and the receptive fields form an s-ary tree of depth
// L; after L convolutions one location is left, read out by a dense layer over the C channels.
// Infinite width C → ∞, per node j of level l (s^{L−l} nodes), children c(j) = the s nodes below it,
// level-1 nodes = the input patches x_j ∈ R^s:
//   Σ¹_j(x, y) = σ_w² x_jᵀy_j / s + σ_b²,   Θ¹_j = Σ¹_j,
//   Σˡ⁺¹_j = σ_w² (1/s) Σ_{c∈c(j)} E[φφ](Σˡ_c) + σ_b²,
//   Θˡ⁺¹_j = σ_w² (1/s) Σ_{c∈c(j)} E[φ'φ'](Σˡ_c) Θˡ_c + Σˡ⁺¹_j,        l = 1..L−1,
// and the readout on the root r: NNGP = σ_w² E[φφ](Σᴸ_r) + σ_b², NTK = σ_w² E[φ'φ'](Σᴸ_r) Θᴸ_r + NNGP,
// with the Gaussian expectations of kernel_methods/ntk.h (ReLU: ½ arccos1 and ½ arccos0). With σ_w² = 2,
// σ_b² = 0 and ReLU, 2E[φφ] = κ₁ and 2E[φ'φ'] = κ₀ (the normalised arc-cosine kernels on unit diagonals):
// Σˡ⁺¹_j = (1/s)Σ_c κ₁(Σˡ_c), Θˡ⁺¹_j = (1/s)Σ_c [κ₁(Σˡ_c) + Θˡ_c κ₀(Σˡ_c)]. The paper's first level Σ¹_j =
// x_jᵀy_j on unit-norm patches is ours on patches rescaled to norm √(s/2); then every diagonal Σ(x, x) is 1
// and Θ(x, x) = L + 1. (ReLU with σ_b = 0 is homogeneous, so other patch scales change both kernels by one
// constant factor, which ridgeless regression does not see.)
// Layer semantics follow neural-tangents: google/neural-tangents, neural_tangents/_src/stax/linear.py
// (Conv: the fan-in is filter size × channels, nngp ← W_std² · mean over the window + b_std²; Flatten;
// Dense), elementwise.py (Relu, Erf). The per-node form (only same-position pairs x_j, y_j enter, as the
// patches do not overlap) keeps the cost O(n m d) per level instead of a full spatial covariance.
//
// Estimator `cnn_kernel`: kernel regression (or linearised GD) with these kernels, options as `ntk`'s
// (kernel_methods/ntk.h's NeuralKernelRegression) plus "filter" s and "depth" L.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/kernel_methods/ntk.h"

namespace lowrank::kernel_methods {

struct TreeCnnArchitecture {
  int64_t filter = 3;               // s >= 2 (filter size = stride)
  int64_t depth = 2;                // L >= 1 convolutional layers; d = s^L
  double weight_variance = 2.0;     // σ_w² > 0
  double bias_variance = 0.0;       // σ_b² >= 0
  std::string activation = "relu";  // relu | erf
};

TreeCnnArchitecture tree_cnn_from_options(const Json& options, std::string_view what);
void validate(const TreeCnnArchitecture& arch, std::string_view what);
// s^L, the input dimension the architecture takes.
int64_t tree_input_dim(const TreeCnnArchitecture& arch);

// The infinite-width NNGP and NTK between x [n, d] and y [m, d], d = s^L (InvalidArgument otherwise).
NeuralKernels tree_cnn_kernels(const TreeCnnArchitecture& arch, const at::Tensor& x, const at::Tensor& y);

// `lowrank kernel gram --method ntk|nngp|cnn`: the infinite-width Gram matrices, parsed (and checked)
// before any data is read. ntk / nngp take the `ntk` method's architecture keys (depth,
// weight_variance, bias_variance, activation); cnn the `cnn_kernel` ones (plus filter) and "kernel":
// ntk (default) | nngp. An unknown key is InvalidArgument naming it and listing the known ones.
bool is_neural_gram(const std::string& method);
class NeuralGram {
 public:
  NeuralGram(const std::string& method, const Json& options);
  // K(x, x) [n, n].
  at::Tensor gram(const at::Tensor& x) const;

 private:
  std::string method_;
  bool nngp_ = false;
  FullyConnectedArchitecture fully_connected_;
  TreeCnnArchitecture tree_;
};

}  // namespace lowrank::kernel_methods
