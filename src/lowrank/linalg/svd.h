// Truncated, randomized and warm-started SVD.
//
// - truncated_svd: the exact thin SVD (LAPACK gesdd through at::linalg_svd, full_matrices=false)
//   cut to rank k; by Eckart–Young (1936) the best rank-k approximation in every unitarily
//   invariant norm.
// - randomized_svd: Halko, Martinsson & Tropp, 2011, "Finding structure with randomness",
//   SIAM Review 53(2). Range finder = Alg. 4.4 (randomized subspace iteration: a QR after every
//   application of A or A^T), then Alg. 5.1 (direct SVD of B = Q^T A). Sketch width l = k + p
//   (§4.2 oversampling), q power iterations (§4.5).
// - subspace_iteration: the same block power method started from a caller's basis (Golub & Van
//   Loan, "Matrix Computations", §8.2, orthogonal iteration applied to A A^T), the
//   warm start GaLore-style projectors use between refreshes.
//
// Deviations: when a warm start is given, it replaces the Gaussian test matrix Omega of Alg. 4.4
// and is padded with seeded Gaussian columns up to l; the Gaussian sketch is drawn on the CPU in
// the working dtype (reproducible across devices) and moved to A's device.
#pragma once

#include <cstdint>
#include <optional>

#include <ATen/ATen.h>

namespace lowrank::linalg {

// A = U diag(S) Vh (exactly, or approximately to rank k): U (m, k) with orthonormal columns,
// S (k) non-negative and descending, Vh (k, n) with orthonormal rows.
struct Svd {
  at::Tensor U, S, Vh;
  // U diag(S) Vh, (m, n).
  at::Tensor reconstruct() const;
};

// Working precision of every routine in this module: float64 inputs stay float64, every other
// floating or integer dtype (bf16, f16, f32, ints) is computed and returned in float32.
at::ScalarType working_dtype(const at::Tensor& A);

// The exact rank-k truncated SVD of the 2-D matrix A (m, n). Throws InvalidArgument when A is
// not 2-D or k is not in [1, min(m, n)]. Cost: a full thin SVD, O(m n min(m, n)).
Svd truncated_svd(const at::Tensor& A, int64_t k);

// Which side a warm-start basis spans.
enum class WarmStartSide {
  kAuto,   // by its row count: m -> left, n -> right; a square A counts as left
  kLeft,   // (m, l): a basis of (an approximation of) the range of A; used as Q_0
  kRight,  // (n, l): a basis of the row space of A; used as the test matrix Omega, Y_0 = A Omega
};

struct RandomizedSvdOptions {
  int64_t oversample = 10;  // p in Halko §4.2: the sketch has l = min(k + p, min(m, n)) columns
  int64_t power_iters = 2;  // q in Alg. 4.4: each iteration applies A^T then A, with a QR after each
  uint64_t seed = 0;        // seeds the Gaussian test matrix (CPU generator); same seed, same result
  // Optional (m, l') or (n, l') basis to start from instead of a Gaussian sketch, e.g. the U or
  // Vh^T of a previous call. Columns beyond l are kept; fewer than l are padded with Gaussian ones.
  std::optional<at::Tensor> warm_start = std::nullopt;
  WarmStartSide warm_start_side = WarmStartSide::kAuto;
};

// Rank-k randomized SVD of A (m, n): Halko Alg. 4.4 then Alg. 5.1. Cost O(m n l (2q + 2)) flops
// plus O((m + n) l^2). Deterministic for a fixed seed, A and thread count. Throws InvalidArgument
// on a bad k, negative p or q, or a warm start of the wrong shape.
Svd randomized_svd(const at::Tensor& A, int64_t k, const RandomizedSvdOptions& options = {});

// Orthonormal basis (m, l) of the dominant l-dimensional LEFT singular subspace of A (m, n), by
// `iters` steps of orthogonal iteration on A A^T started from Q0 (m, l):
//   Z = orth(A^T Q), Q = orth(A Z)   (a QR after each product, Halko Alg. 4.4 without the sketch).
// iters = 0 returns orth(Q0). For the right subspace pass A.mT() and an (n, l) Q0. The subspace
// converges at rate (sigma_{l+1} / sigma_l)^(2 iters). Throws InvalidArgument when Q0 is not
// (m, l) with 1 <= l <= min(m, n), or iters < 0.
at::Tensor subspace_iteration(const at::Tensor& A, const at::Tensor& Q0, int64_t iters);

// Orthonormal basis of the column space of Y (rows, cols), rows >= cols: the Q of a thin QR.
at::Tensor orthonormalize(const at::Tensor& Y);

}  // namespace lowrank::linalg
