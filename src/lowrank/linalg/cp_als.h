// CP (CANDECOMP/PARAFAC) decomposition by alternating least squares (Kolda & Bader, 2009, "Tensor
// decompositions and applications", SIAM Review 51(3), §3.4, Fig. 3.3), as tensorly's `parafac`
// runs it (tensorly/decomposition/_cp.py, no normalisation, no line search):
//   X ≈ [[A_1, …, A_N]] = Σ_r a_1r ∘ … ∘ a_Nr
//   for each mode n in turn:  A_n ← X_(n) (⊙_{m≠n} A_m) · V⁻¹,  V = ⊛_{m≠n} A_mᵀA_m
// (the MTTKRP, computed here by one einsum per mode, then a solve with the Hadamard product of the
// other factors' Gram matrices). Stops after max_iters sweeps, or once the relative error
// ‖X − X̂‖/‖X‖ changes by less than tol between sweeps (tensorly's test).
// Initialisation as tensorly's init="svd": A_n = the leading `rank` left singular vectors of the
// mode-n unfolding, A_1 scaled by the singular values; a mode shorter than the rank gets seeded
// uniform [0, 1) columns for the rest. Or pass the initial factors.
// Post-hoc CP compression of a trained convolution kernel is its use here (nn/cp_conv.h).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::linalg {

struct CpOptions {
  int64_t max_iters = 100;
  double tol = 1e-8;
  uint64_t seed = 0;  // the random columns of the initialisation
};

struct CpDecomposition {
  std::vector<at::Tensor> factors;  // A_n [I_n, rank], float64
  std::vector<double> errors;       // relative error after each sweep
  at::Tensor reconstruct() const;
};

// X (2 ≤ N ≤ 6 modes) at the given rank. InvalidArgument for rank < 1, or initial factors whose
// count or shapes do not match X.
CpDecomposition cp_als(const at::Tensor& x, int64_t rank, const CpOptions& options = {},
                       std::optional<std::vector<at::Tensor>> init = std::nullopt);

}  // namespace lowrank::linalg
