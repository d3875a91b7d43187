// Weighted least squares with determinantal point processes and volume-rescaled sampling —
// Nouy & Michel, 2023, "Weighted least-squares approximation with determinantal point processes and
// generalized volume sampling", arXiv:2312.14057.
//
// Setting. μ a probability measure, V_m = span(φ_1..φ_m) with φ L²(μ)-orthonormal. Here μ is the
// uniform probability on [−1, 1] and φ_j = √(2j+1) P_{j−1} (Legendre, j = 1..m), so ∫φ_iφ_j dμ = δ_ij.
//   inverse Christoffel function   k_m(x) = ‖φ(x)‖² = Σ_j φ_j(x)²   (Legendre: k_m(±1) = m²)
//   optimal density and weight     ρ = (k_m/m) dμ,   w = m/k_m      (so E_ρ[w φφᵀ] = I)
//   weighted least squares         f̂ = argmin_{v∈V_m} Σ_i w(x_i)(f(x_i) − v(x_i))²,
//   empirical Gram                 G = (1/n) Σ_i w(x_i) φ(x_i)φ(x_i)ᵀ  (stable when λ_min(G) ≥ ½).
// Designs x_1..x_n:
//   christoffel  n i.i.d. draws from ρ, by rejection from μ: accept x ~ μ with probability
//                k_m(x)/sup k_m (sup k_m = m² for Legendre, attained at ±1);
//   dpp          the projection DPP with kernel K_m(x, y) = φ(x)ᵀφ(y) w.r.t. μ: exactly m points,
//                joint density det[K_m(x_i, x_j)]/m! w.r.t. μ^⊗m, drawn by the chain rule
//                  x_i ~ [k_m(x) − Σ_{j<i} (e_j·φ(x))²] / (m − i + 1) dμ,
//                e_1..e_{i−1} an orthonormal basis of span φ(x_1..x_{i−1}) (Gram–Schmidt); each
//                conditional by rejection from ρ, accepting with probability 1 − Σ_j (e_j·φ(x))²/k_m(x)
//                (the ratio of the conditional to ρ is m/(m−i+1) times that, so the bound holds);
//                the DPP of the weighted features √w φ w.r.t. ρ has the same points, so a DPP
//                design uses the same weights w;
//   volume       volume-rescaled sampling (n ≥ m), the paper's distribution with density
//                ∝ det(G) w.r.t. ρ^⊗n, drawn as DPP(m) ∪ (n − m) i.i.d. draws from ρ in a uniformly
//                random order (the decomposition of Dereziński, Warmuth & Hsu); under it
//                E[f̂] = P_m f, the L²(μ) projection (WLS is unbiased; tested below);
//   repeat       r = n/m independent DPP(m) draws concatenated (the paper's repetitions).
// Every design is weighted by w = m/k_m. Points are reported in draw order. The DPP ∪ i.i.d.
// decomposition and the weights of the repetitions are [unverified] against the paper's text; the
// unbiasedness test checks the decomposition's defining property independently.
//
// The paper's own experiments were not released with code; the chain rule with rejection follows
// DPPy (guilgautier/DPPy, dppy/multivariate_jacobi_ope.py: chain rule for a projection DPP, each
// conditional by rejection from a proposal dominating it). Only the Legendre basis is implemented
// (a Hermite basis has unbounded k_m, so rejection from μ with a sup bound does not apply).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

// An L²(μ)-orthonormal basis of V_m. Spelled "legendre:M" (M ≥ 1) on the command line and in options.
struct OrthonormalBasis {
  std::string family = "legendre";
  int64_t size = 20;  // m
};
// Parses "legendre:20". InvalidArgument naming the spelling (unknown family, missing or bad size).
OrthonormalBasis parse_basis(const std::string& spec);
std::string to_string(const OrthonormalBasis& basis);
// sup_x k_m(x) (m² for Legendre).
double christoffel_bound(const OrthonormalBasis& basis);

// φ(x): x [n] (or [n, 1]) in [−1, 1] → [n, m], fp64. InvalidArgument for points outside [−1, 1].
at::Tensor basis_matrix(const OrthonormalBasis& basis, const at::Tensor& x);
// k_m(x) = Σ_j φ_j(x)², [n].
at::Tensor inverse_christoffel(const OrthonormalBasis& basis, const at::Tensor& x);
// w(x) = m / k_m(x), [n].
at::Tensor optimal_weights(const OrthonormalBasis& basis, const at::Tensor& x);

// The samplers; each returns the points [n] fp64, deterministic in seed.
at::Tensor sample_christoffel(const OrthonormalBasis& basis, int64_t n, uint64_t seed);
at::Tensor sample_projection_dpp(const OrthonormalBasis& basis, uint64_t seed);  // m points
at::Tensor sample_volume_rescaled(const OrthonormalBasis& basis, int64_t n, uint64_t seed);
at::Tensor sample_dpp_repetitions(const OrthonormalBasis& basis, int64_t repetitions, uint64_t seed);

// The CLI's names: christoffel, dpp (n must equal m), volume (n ≥ m), repeat (n a multiple of m).
const std::vector<std::string>& design_names();
at::Tensor sample_design(const std::string& method, const OrthonormalBasis& basis, int64_t n, uint64_t seed);

struct WeightedLeastSquares {
  at::Tensor coefficients;         // [m] (or [m, k] for y [n, k])
  double gram_min_eigenvalue = 0;  // λ_min(G), G = (1/n) Σ w φφᵀ
};
// f̂ on the design x [n] with values y [n] or [n, k] and weights [n] (optimal_weights for the
// paper's estimator, ones for unweighted least squares). InvalidArgument when m > n.
WeightedLeastSquares weighted_least_squares(const OrthonormalBasis& basis, const at::Tensor& x,
                                            const at::Tensor& y, const at::Tensor& weights);

}  // namespace lowrank::kernel_methods
