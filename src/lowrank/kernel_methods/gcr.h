// GCR: Grassmann class representation — Wang, Li & Zhang, 2023, "Get the Best of Both Worlds:
// Improving Accuracy and Transferability by Grassmann Class Representation", ICCV 2023,
// arXiv:2308.01547. Authors' code: github.com/innerlee/gcr, gcr/grassmann_head.py (the head) and
// gcr/rsgd.py (the optimiser), followed for the step's order and constants.
//
// Each class i is a k-dimensional subspace with orthonormal basis S_i ∈ R^{d×k} (S_iᵀS_i = I_k).
// For a feature x with x̂ = x/‖x‖ the logit is
//   l_i(x) = γ ‖S_iᵀ x̂‖                                   (γ = 25 in the paper)
// and training minimises the mean cross-entropy of softmax(l). The Euclidean gradient of the loss
// L = −(1/n) Σ_b log p_{b,y_b} with respect to S_i is
//   ∂L/∂S_i = (γ/n) Σ_b (p_{b,i} − [y_b = i]) / ‖S_iᵀx̂_b‖ · x̂_b x̂_bᵀ S_i.
// Riemannian SGD with momentum (paper's Algorithm 1; rsgd.py): the momentum buffer accumulates the
// Euclidean gradient, M ← μM + ∂L/∂S (M = ∂L/∂S on the first step, no dampening); its tangent part
// G_R = M − S(SᵀM) with thin SVD G_R = UΣVᵀ moves S along the geodesic in the descent direction −G_R,
//   S ← S V cos(ηΣ) Vᵀ − U sin(ηΣ) Vᵀ,
// (rsgd.py: cos/sin of −lr·Σ), and every `reorth_every`-th step (counting from the first) S is
// re-orthonormalised by QR (linalg/grassmann). Class bases start as the Q of Gaussian matrices.
//
// Deviations (named): the paper learns the bases on top of a deep backbone trained jointly; here the
// inputs are fixed features and only the class subspaces are trained (predict gives the argmax
// class). The QR retraction fixes column signs (diag R ≥ 0); the subspace is the same.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

// Logits γ‖S_iᵀx̂‖ for x [n, d] and bases [C, d, k]: [n, C].
at::Tensor gcr_logits(const at::Tensor& x, const at::Tensor& bases, double gamma);
// The mean cross-entropy of the logits against integer labels [n] (int64).
at::Tensor gcr_loss(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& bases, double gamma);
// ∂(mean cross-entropy)/∂S in closed form (the formula above): [C, d, k].
at::Tensor gcr_euclidean_gradient(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& bases,
                                  double gamma);

struct GcrOptions {
  int64_t subspace_dim = 4;    // k
  double gamma = 25.0;         // logit scale γ
  double learning_rate = 0.1;  // η
  double momentum = 0.9;       // μ
  int64_t epochs = 50;
  int64_t batch_size = 0;  // 0: full batch
  int64_t reorth_every = 5;
};

// One Riemannian SGD step on bases [C, d, k] in place of the returned tensor: updates `buffer`
// (undefined on the first step) and returns the new bases. `step` counts from 0.
at::Tensor gcr_rsgd_step(const at::Tensor& bases, const at::Tensor& euclidean_gradient, at::Tensor& buffer,
                         const GcrOptions& options, int64_t step);

struct GcrFit {
  at::Tensor bases;          // [C, d, k]
  std::vector<double> loss;  // mean training cross-entropy after each epoch
};

// Trains C = max(label) + 1 class subspaces on x [n, d] with labels [n] (int64, 0..C−1).
GcrFit gcr_fit(const at::Tensor& x, const at::Tensor& labels, const GcrOptions& options,
               at::Generator& generator);

// max_i ‖S_iᵀS_i − I‖_max over the classes.
double gcr_orthonormality_error(const at::Tensor& bases);

}  // namespace lowrank::kernel_methods
