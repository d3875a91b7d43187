// LDU factorisation with partial (row) pivoting: P A = L diag(D) U.
//
// Golub & Van Loan, "Matrix Computations", 3rd ed., §3.4 (Gaussian elimination with partial
// pivoting) and §4.1 (the LDM^T factorisation, Thm 4.1.1): the LU factor U' of
// P A = L U' splits as U' = diag(D) U with D = diag(U') and U unit upper triangular. Computed with
// at::linalg_lu (LAPACK getrf); used by LoLDU (Shi et al., 2024, arXiv:2410.13618), which
// initialises an adapter from the LDU of a weight.
//
// Convention: at::linalg_lu returns A = P' L U'; here P = P'^T, so that P A = L diag(D) U as in
// the textbook. Rectangular A (m, n) is supported: with k = min(m, n), L is (m, k) unit lower
// trapezoidal, D is (k), U is (k, n) unit upper trapezoidal.
// Deviation/limit: A (numerically) singular pivot cannot be split off U' (the row of U' need not
// vanish), so rank-deficient inputs are rejected (see ldu()).
#pragma once

#include <ATen/ATen.h>

namespace lowrank::linalg {

struct Ldu {
  at::Tensor P;  // (m, m) permutation
  at::Tensor L;  // (m, k) unit lower triangular/trapezoidal
  at::Tensor D;  // (k) the pivots
  at::Tensor U;  // (k, n) unit upper triangular/trapezoidal
  // P^T L diag(D) U = A, (m, n).
  at::Tensor reconstruct() const;
};

// P A = L diag(D) U for a 2-D A (m, n); float64 stays float64, other dtypes compute in float32.
// Throws InvalidArgument when A is not 2-D or has a pivot |d_i| <= rcond * max_j |d_j| (A is
// rank-deficient or numerically so; the message names the pivot). rcond < 0 selects
// max(m, n) * eps of the dtype; rcond = 0 rejects exact zero pivots only.
Ldu ldu(const at::Tensor& A, double rcond = -1);

}  // namespace lowrank::linalg
