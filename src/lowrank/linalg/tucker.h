// Tucker decomposition by the higher-order SVD and higher-order orthogonal iteration.
//
// HOSVD: De Lathauwer, De Moor & Vandewalle, 2000, "A multilinear singular value decomposition",
// SIAM J. Matrix Anal. Appl. 21(4), Thm 2 / Eq. (21): U_n = the leading r_n left singular vectors
// of the mode-n unfolding T_(n), core G = T x_1 U_1^T x_2 ... x_N U_N^T, T ~ G x_1 U_1 ... x_N U_N.
// Truncated, it is quasi-optimal: ||T - T_hosvd||^2 <= N ||T - T_best||^2 (Kolda & Bader, 2009,
// "Tensor decompositions and applications", SIAM Review 51(3), §4.2).
// HOOI: De Lathauwer, De Moor & Vandewalle, 2000, "On the best rank-1 and rank-(R1,...,RN)
// approximation of higher-order tensors", SIAM J. Matrix Anal. Appl. 21(4), Alg. 4.2 (Kolda &
// Bader Fig. 4.4): for each n, U_n = leading r_n left singular vectors of
// (T x_{m != n} U_m^T)_(n). Started from the HOSVD, each update cannot decrease ||G||, and since
// ||T - T_hat||^2 = ||T||^2 - ||G||^2 for orthonormal factors, the error never exceeds HOSVD's.
// Unfolding convention: T_(n) = T.movedim(n, 0).reshape(I_n, -1) (row-major, not Kolda's
// column-major column order; the column order does not change the left singular vectors).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::linalg {

struct Tucker {
  at::Tensor core;                  // (r_1, ..., r_N)
  std::vector<at::Tensor> factors;  // U_n (I_n, r_n), orthonormal columns
  // core x_1 U_1 ... x_N U_N, (I_1, ..., I_N).
  at::Tensor reconstruct() const;
};

struct TuckerOptions {
  int64_t hooi_iters = 0;  // HOOI sweeps after the HOSVD (0: plain truncated HOSVD)
  double hooi_tol = 0;     // stop sweeping once ||G|| grows by a relative amount <= hooi_tol
};

// Mode-n unfolding (I_n, prod_{m != n} I_m).
at::Tensor unfold(const at::Tensor& T, int64_t mode);
// T x_mode M: contracts mode `mode` of T (size I) with the columns of M (J, I); the result has
// size J in that mode.
at::Tensor mode_product(const at::Tensor& T, const at::Tensor& M, int64_t mode);

// Truncated HOSVD (then optional HOOI sweeps) of T with N = T.dim() >= 2 (the library uses 3- and
// 4-way tensors). ranks has N entries with 1 <= r_n <= I_n and r_n <= prod_{m != n} r_m (every
// multilinear rank satisfies this; larger r_n cannot be filled). float64 stays float64, other
// dtypes compute in float32. Throws InvalidArgument on a bad order, rank count or rank.
Tucker hosvd(const at::Tensor& T, at::IntArrayRef ranks, const TuckerOptions& options = {});

}  // namespace lowrank::linalg
