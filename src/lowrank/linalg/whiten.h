// Whitened low-rank approximation: argmin_{rank B <= k} ||(A - B) X||_F = [A S]_k S^-1.
//
// For any S with S S^T = H = X X^T, ||M X||_F^2 = tr(M H M^T) = ||M S||_F^2, so Eckart–Young
// applied to A S gives the minimiser B = [A S]_k S^-1 and the error identity
//   ||(A - B) X||_F^2 = sum_{i > k} sigma_i(A S)^2.
// B does not depend on the choice of square root: two factors of
// H differ by an orthogonal matrix on the right. One primitive serves:
//   - SVD-LLM (Wang et al., 2024, arXiv:2403.07378, "truncation-aware data whitening"; code
//     SVDLLM.py): S = chol(H), lower triangular; W_u = U_k sqrt(Sigma_k), W_v = sqrt(Sigma_k) V_k^T S^-1.
//   - EoRA (Liu et al., 2024, arXiv:2410.21271; code GPTQModel eora.py): H = Q Lambda Q^T,
//     S = Q Lambda^{1/2}, S^-1 = Lambda^{-1/2} Q^T in closed form (pseudo-inverse here).
//   - ASVD (Yuan et al., 2023, arXiv:2312.05821; code ASVD4LLM): S = diag(s),
//     s_j = (mean_t |X_jt|)^alpha, alpha = 0.5 by default.
//
// Damping and singular H (deliberate, documented choices):
//   - cholesky_whitener: first tries chol(H). When H is not numerically positive definite it adds
//     delta I with delta = lambda * mean(diag H) (lambda = 1e-2 by default; lambda itself when
//     mean(diag H) == 0) and retries, multiplying lambda by 10 up to 2 more times (at most
//     100 lambda), then throws. An H with a negative diagonal entry is rejected outright (it
//     cannot be PSD). The result then whitens H + delta I, not H; `Whitener::damping` reports delta.
//   - eigen_whitener: eigenvalues below rcond * lambda_max (rcond = n * eps of the dtype by
//     default, as numpy/torch pinv) are set to zero (negative ones too); S^+ inverts only the rest.
//     (EoRA's code instead raises negative eigenvalues to min(lambda > 0); SVD-LLM's shifts H by
//     -lambda_min + 1e-6. Zeroing keeps B the exact minimiser for the given H.)
//   - diagonal: entries <= rcond * max(s) are treated as zero and get a zero inverse (pseudo-
//     inverse); the matching columns of B are zero, which costs nothing in the whitened norm.
// In every pseudo-inverse case the error identity above still holds exactly, since the rows of
// [A S]_k lie in the row space of S.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/linalg/svd.h"

namespace lowrank::linalg {

// A whitening factor S (S S^T = H) with its (pseudo-)inverse. Either both are (n, n) matrices or
// both are 1-D (n) diagonals.
struct Whitener {
  at::Tensor S;
  at::Tensor S_inv;
  std::string method;  // "cholesky", "eigen", "diagonal" or "factor"
  double damping = 0;  // delta added to diag(H) (cholesky only)
  int64_t rank = 0;    // number of nonzero diagonal entries / eigenvalues kept (n when full rank)
  bool is_diagonal() const { return S.dim() == 1; }
  int64_t size() const { return S.size(0); }
  at::Tensor apply(const at::Tensor& A) const;          // A S, A (m, n)
  at::Tensor apply_inverse(const at::Tensor& R) const;  // R S^-1, R (k, n)
};

struct CholeskyWhitenOptions {
  double damping = 1e-2;     // lambda: delta = lambda * mean(diag H), only when chol(H) fails
  bool always_damp = false;  // add delta before the first attempt too (SVD-LLM code's fixed damping)
};

// S = chol(H) (lower), H (n, n) symmetric PSD; float64 stays float64, else float32. Throws
// InvalidArgument on a non-square H, a negative diagonal, or when damping by up to 100 lambda
// does not help.
Whitener cholesky_whitener(const at::Tensor& H, const CholeskyWhitenOptions& options = {});

// S = Q Lambda^{1/2} from eigh(H), small/negative eigenvalues zeroed (see the header comment).
// rcond < 0 selects the default n * eps.
Whitener eigen_whitener(const at::Tensor& H, double rcond = -1);

// S = diag(s) from a 1-D tensor s >= 0. Entries <= rcond * max(s) get a zero inverse; rcond < 0
// selects n * eps. Throws InvalidArgument on negative or non-finite entries.
Whitener diagonal_whitener(const at::Tensor& s, double rcond = -1);

// A general factor: (n, n) S (inverted by LU; throws InvalidArgument if singular) or a 1-D
// diagonal (as diagonal_whitener).
Whitener factor_whitener(const at::Tensor& S);

// ASVD's scale s_j = (mean_t |X_jt|)^alpha for activations X (n, N) (one token per column).
at::Tensor asvd_scale(const at::Tensor& X, double alpha = 0.5);

// B = L R, L (m, k), R (k, n).
struct LowRankFactors {
  at::Tensor L, R;
  at::Tensor reconstruct() const { return at::matmul(L, R); }
};

struct WhitenedLowRankOptions {
  // How the singular values are split between the factors: true: L = U sqrt(Sigma),
  // R = sqrt(Sigma) V^T S^-1 (SVD-LLM); false: L = U Sigma, R = V^T S^-1.
  bool balanced = true;
  // Use randomized_svd for [A S]_k instead of the exact truncated SVD.
  std::optional<RandomizedSvdOptions> randomized = std::nullopt;
};

// The rank-k minimiser of ||(A - B) S||_F for A (m, n) and whitener W of size n, as factors.
// Throws InvalidArgument on a shape mismatch or k outside [1, min(m, n)].
LowRankFactors whitened_lowrank(const at::Tensor& A, const Whitener& W, int64_t k,
                                const WhitenedLowRankOptions& options = {});

// Convenience: the whitener from the Gram matrix H = X X^T (n, n), Cholesky with damping.
LowRankFactors whitened_lowrank_from_gram(const at::Tensor& A, const at::Tensor& H, int64_t k,
                                          const WhitenedLowRankOptions& options = {});

// ||(A - B) S||_F for B = L R: the whitened error (equals ||(A - B) X||_F when S S^T = X X^T).
double whitened_error(const at::Tensor& A, const LowRankFactors& B, const Whitener& W);

}  // namespace lowrank::linalg
