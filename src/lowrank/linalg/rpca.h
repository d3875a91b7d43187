// Robust PCA by principal component pursuit (Candès, Li, Ma & Wright, 2011, "Robust principal
// component analysis?", J. ACM 58(3), Eq. 1.1):
//   min ||L||_* + lambda ||S||_1  subject to  L + S = M,   lambda = 1 / sqrt(max(m, n)) (Thm 1.1),
// solved by the inexact augmented Lagrange multiplier method (Lin, Chen & Ma, 2010, "The
// augmented Lagrange multiplier method for exact recovery of corrupted low-rank matrices",
// arXiv:1009.5055, Algorithm 5, with the constants of the authors' inexact_alm_rpca.m):
//   Y_0 = M / J(M), J(M) = max(||M||_2, ||M||_inf / lambda);  mu_0 = 1.25 / ||M||_2;  rho = 1.5
//   S_{k+1} = shrink_{lambda/mu_k}(M - L_k + Y_k / mu_k)            (soft threshold, entrywise)
//   L_{k+1} = SVT_{1/mu_k}(M - S_{k+1} + Y_k / mu_k)               (singular value threshold)
//   Y_{k+1} = Y_k + mu_k (M - L_{k+1} - S_{k+1});  mu_{k+1} = min(rho mu_k, 1e7 mu_0)
//   stop when ||M - L - S||_F / ||M||_F < tol (1e-7).
// Deviation: the SVT uses a full thin SVD every iteration (no rank prediction / partial SVD as in
// the MATLAB code), so the cost is O(m n min(m, n)) per iteration; fine for the matrices the
// library decomposes (weights, small activation blocks).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::linalg {

struct RpcaOptions {
  double lambda = -1;  // -1: 1 / sqrt(max(m, n))
  double tol = 1e-7;   // on ||M - L - S||_F / ||M||_F
  int64_t max_iters = 1000;
  double rho = 1.5;           // growth of the penalty mu, > 1
  double mu = -1;             // initial penalty; -1: 1.25 / ||M||_2
  double mu_max_ratio = 1e7;  // mu is capped at mu_max_ratio * mu_0
};

struct RpcaResult {
  at::Tensor L;  // (m, n) low rank
  at::Tensor S;  // (m, n) sparse
  int64_t iterations = 0;
  bool converged = false;
};

// Splits M (m, n) into L + S as above. float64 stays float64, other dtypes use float32. Not
// converging within max_iters is reported in the result, not thrown. Throws InvalidArgument when
// M is not 2-D or finite, or an option is out of range.
RpcaResult robust_pca(const at::Tensor& M, const RpcaOptions& options = {});

}  // namespace lowrank::linalg
