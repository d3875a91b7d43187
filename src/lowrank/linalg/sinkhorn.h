// Entropic optimal transport by Sinkhorn's iterations in the log domain (Cuturi, 2013, "Sinkhorn
// Distances: Lightspeed Computation of Optimal Transport", NeurIPS; the log-domain form of Peyré &
// Cuturi, 2019, "Computational Optimal Transport", §4.4, Remark 4.23). For a cost C [n, m] and
// marginals a [n], b [m] (positive, equal sums), the plan minimising ⟨P, C⟩ − η H(P) is
//   P_ij = exp((f_i + g_j − C_ij)/η),
// with the dual potentials updated alternately until the marginals match:
//   f_i ← η log a_i − η LSE_j((g_j − C_ij)/η),   g_j ← η log b_j − η LSE_i((f_i − C_ij)/η).
// Working with f, g and log-sum-exp never forms exp(−C/η), which underflows for small η (the
// plain u = a/(Kv), v = b/(Kᵀu) iteration then divides by zero). Used by MCR² (Γ = Sinkhorn_η(CᵀC)).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::linalg {

struct SinkhornOptions {
  double epsilon = 0.1;  // the entropic regulariser η (> 0)
  int64_t max_iterations = 1000;
  double tolerance = 1e-9;  // stop when the row marginal's L1 error is below this
};

struct SinkhornResult {
  at::Tensor plan;  // [n, m]
  at::Tensor f, g;  // dual potentials [n], [m]
  int64_t iterations = 0;
  double marginal_error = 0;  // ‖P1 − a‖₁ at the end (the column marginal is exact after a g step)
};

// Throws InvalidArgument for a non-2-D cost, marginals of the wrong length or not positive, or
// η ≤ 0, naming the culprit.
SinkhornResult sinkhorn_log(const at::Tensor& cost, const at::Tensor& a, const at::Tensor& b,
                            const SinkhornOptions& options = {});

}  // namespace lowrank::linalg
