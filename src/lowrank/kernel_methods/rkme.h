// RKME: the reduced kernel mean embedding of a dataset, and model identification by it — Wu, Xu,
// Liu & Zhou, "Model Reuse with Reduced Kernel Mean Embedding Specification", IEEE TKDE, 2023,
// arXiv:2001.07135 (the statistical specification of the learnware paradigm; identifying a model
// for a query by the RKMEs' MMD is the use the issue calls GMI).
//
// A dataset {x_i} with weights α_i (1/n by default) has the kernel mean embedding
// μ = Σ_i α_i k(x_i, ·) in the RKHS of the Gaussian kernel k(x, x') = exp(−γ‖x − x'‖²). Its
// reduced set (β, z) of m ≪ n points minimises
//   J(β, z) = ‖Σ_i α_i k(x_i, ·) − Σ_j β_j k(z_j, ·)‖²_H = βᵀK_zz β − 2βᵀC + αᵀK_xx α,
//   C_j = Σ_i α_i k(z_j, x_i).
// Fitting alternates (the paper's Algorithm 1, as the authors' code runs it):
//   - z ← k-means centres of x (linalg/kmeans);
//   - β ← argmin_β ½βᵀK_zz β − Cᵀβ subject to β ≥ 0, Σβ = 1 (the authors' nonnegative variant:
//     a QP over the simplex, solved here by a primal active-set method), or the unconstrained
//     β = (K_zz + 10⁻⁵ I)⁻¹ C;
//   - `steps` times: one gradient step z ← z − η ∂J/∂z, then β again, with
//       ∂J/∂z_j = −4γ β_j [Σ_l β_l k(z_j, z_l)(z_j − z_l) − Σ_i α_i k(z_j, x_i)(z_j − x_i)].
// Identification: a query sample Q (weights 1/|Q|) goes to the stored RKME with the smallest
//   MMD² = βᵀK_zz β − 2βᵀK_zq (1/|Q|) + (1/|Q|²) 1ᵀK_qq 1.
//
// Reference code: Learnware-LAMDA/Learnware, learnware/specification/regular/table/rkme.py
// (RKMETableSpecification: γ = 0.1, m = 100 with m = max(1, ⌊2n/3⌋) when m ≥ n, 3 steps of size
// 0.1, the simplex QP solved by clarabel, dist() = the MMD² above).
// Deviation (named): that code's z step halves the z–z term of the gradient (a factor 2 where
// ∂J/∂z has 4); here the step follows the exact gradient of J, which the autograd test checks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

struct Rkme {
  at::Tensor z;     // [m, d] reduced set
  at::Tensor beta;  // [m] weights
  double gamma = 0.1;
};

struct RkmeOptions {
  int64_t size = 100;       // m (m ≥ n becomes max(1, ⌊2n/3⌋), as the reference code does)
  double gamma = 0.1;       // k(x, x') = exp(−γ‖x − x'‖²), γ > 0
  int64_t steps = 3;        // alternating z / β rounds after the k-means start
  double step_size = 0.1;   // η of the z gradient step
  bool nonnegative = true;  // β on the simplex (QP) or the ridge solve (K + 10⁻⁵I)⁻¹C
};

// The RKME of x [n, d]; weights [n] (positive, summing to 1) or undefined for 1/n.
Rkme rkme_build(const at::Tensor& x, const at::Tensor& weights, const RkmeOptions& options,
                at::Generator& generator);

// J(β, z) (the squared RKHS distance above), exact, with α undefined meaning 1/n.
double rkme_objective(const Rkme& rkme, const at::Tensor& x, const at::Tensor& weights);
// ∂J/∂z [m, d] (the closed form above).
at::Tensor rkme_z_gradient(const Rkme& rkme, const at::Tensor& x, const at::Tensor& weights);
// The optimal β for fixed z: the simplex QP or the ridge solve.
at::Tensor rkme_beta(const at::Tensor& z, const at::Tensor& x, const at::Tensor& weights, double gamma,
                     bool nonnegative);

// argmin_{β ≥ 0, Σβ = 1} ½βᵀKβ − cᵀβ for K [m, m] symmetric positive semidefinite: a primal
// active-set method (bordered KKT solves on the free set; the most negative multiplier leaves
// the active set). Throws InvalidArgument for bad shapes and InternalError if it does not finish.
at::Tensor simplex_qp(const at::Tensor& k, const at::Tensor& c);

// The RKME evaluated at queries [q, d]: Σ_j β_j k(z_j, x) → [q].
at::Tensor rkme_evaluate(const Rkme& rkme, const at::Tensor& queries);
// MMD² between two RKMEs (the same γ), and between an RKME and a sample with weights 1/|Q|.
double rkme_mmd2(const Rkme& a, const Rkme& b);
double rkme_mmd2_to_sample(const Rkme& rkme, const at::Tensor& sample);

struct Identification {
  std::vector<int64_t> ranking;  // indices into the stored RKMEs, smallest MMD² first
  std::vector<double> mmd2;      // MMD² per stored RKME (in the stored order)
};
// Ranks stored RKMEs by their MMD² to the query sample.
Identification identify(const at::Tensor& query, const std::vector<Rkme>& stored);

// The RKME held by a model directory written by the `rkme` estimator.
Rkme load_rkme(const std::filesystem::path& dir);

}  // namespace lowrank::kernel_methods
