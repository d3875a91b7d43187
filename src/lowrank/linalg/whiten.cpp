#include "lowrank/linalg/whiten.h"

#include <cmath>
#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/linalg/check_internal.h"

namespace lowrank::linalg {
namespace {

at::Tensor square_matrix(const at::Tensor& H_in, std::string_view what) {
  auto H = detail::working_matrix(H_in, what);
  LR_CHECK(H.size(0) == H.size(1), InvalidArgument, what, " must be square (n, n), got ", H.sizes());
  LR_CHECK(at::isfinite(H).all().item<bool>(), InvalidArgument, what, " has non-finite entries");
  return H;
}

double default_rcond(int64_t n, at::ScalarType dtype) {
  const double eps = dtype == at::kDouble ? std::numeric_limits<double>::epsilon()
                                          : static_cast<double>(std::numeric_limits<float>::epsilon());
  return static_cast<double>(n) * eps;
}

// The factor and inverse of W in A's dtype and on A's device.
std::pair<at::Tensor, at::Tensor> factors_like(const Whitener& W, const at::Tensor& A) {
  return {W.S.to(A.device(), A.scalar_type()), W.S_inv.to(A.device(), A.scalar_type())};
}

}  // namespace

at::Tensor Whitener::apply(const at::Tensor& A) const {
  auto s = S.to(A.device(), A.scalar_type());
  return is_diagonal() ? A * s.unsqueeze(0) : at::matmul(A, s);
}

at::Tensor Whitener::apply_inverse(const at::Tensor& R) const {
  auto s_inv = S_inv.to(R.device(), R.scalar_type());
  return is_diagonal() ? R * s_inv.unsqueeze(0) : at::matmul(R, s_inv);
}

Whitener cholesky_whitener(const at::Tensor& H_in, const CholeskyWhitenOptions& options) {
  auto H = square_matrix(H_in, "cholesky_whitener: H");
  const int64_t n = H.size(0);
  auto try_cholesky = [](const at::Tensor& M) -> at::Tensor {
    auto [L, info] = at::linalg_cholesky_ex(M);
    return info.item<int64_t>() == 0 ? L : at::Tensor();
  };
  // A PSD matrix has a non-negative diagonal; a clearly negative entry means H is not a Gram.
  const double diag_scale = H.diagonal().abs().max().item<double>();
  const double diag_min = H.diagonal().min().item<double>();
  LR_CHECK(diag_min >= -default_rcond(n, H.scalar_type()) * diag_scale, InvalidArgument,
           "cholesky_whitener: H has a negative diagonal entry (", diag_min,
           "); it is not a PSD Gram matrix");
  Whitener w;
  w.method = "cholesky";
  w.rank = n;
  at::Tensor L;
  if (!options.always_damp) L = try_cholesky(H);
  if (!L.defined()) {
    LR_CHECK(options.damping > 0, InvalidArgument,
             "cholesky_whitener: H is not positive definite and damping = ", options.damping,
             " is not > 0; pass a damping or use eigen_whitener");
    const double mean_diag = H.diagonal().mean().item<double>();
    const double scale = mean_diag > 0 ? mean_diag : 1.0;
    auto eye = at::eye(n, H.options());
    double lambda = options.damping;
    for (int attempt = 0; attempt < 3 && !L.defined(); ++attempt, lambda *= 10) {
      w.damping = lambda * scale;
      L = try_cholesky(H + w.damping * eye);
    }
    LR_CHECK(L.defined(), InvalidArgument, "cholesky_whitener: H (", n, "x", n,
             ") is not positive definite even after adding ", w.damping,
             " * I; it is probably indefinite, use eigen_whitener");
  }
  w.S = L;
  w.S_inv = at::linalg_solve_triangular(L, at::eye(n, L.options()), /*upper=*/false);
  return w;
}

Whitener eigen_whitener(const at::Tensor& H_in, double rcond) {
  auto H = square_matrix(H_in, "eigen_whitener: H");
  const int64_t n = H.size(0);
  if (rcond < 0) rcond = default_rcond(n, H.scalar_type());
  auto [lambda, Q] = at::linalg_eigh(H);
  const double lambda_max = lambda.max().item<double>();
  LR_CHECK(lambda_max > 0, InvalidArgument, "eigen_whitener: H has no positive eigenvalue (max ", lambda_max,
           "); it cannot whiten anything");
  auto keep = lambda > rcond * lambda_max;
  auto root = at::where(keep, lambda.clamp_min(0).sqrt(), at::zeros_like(lambda));
  auto inv_root = at::where(keep, root.clamp_min(std::numeric_limits<double>::min()).reciprocal(),
                            at::zeros_like(lambda));
  Whitener w;
  w.method = "eigen";
  w.rank = keep.sum().item<int64_t>();
  w.S = Q * root.unsqueeze(0);               // Q Lambda^{1/2}
  w.S_inv = inv_root.unsqueeze(1) * Q.mT();  // Lambda^{-1/2} Q^T (pseudo-inverse)
  return w;
}

Whitener diagonal_whitener(const at::Tensor& s_in, double rcond) {
  auto s = detail::working_tensor(s_in, 1, "diagonal_whitener: s");
  LR_CHECK(s.numel() >= 1, InvalidArgument, "diagonal_whitener: s is empty");
  LR_CHECK(at::isfinite(s).all().item<bool>(), InvalidArgument,
           "diagonal_whitener: s has non-finite entries");
  LR_CHECK((s >= 0).all().item<bool>(), InvalidArgument, "diagonal_whitener: s has negative entries (min ",
           s.min().item<double>(), ")");
  const double s_max = s.max().item<double>();
  LR_CHECK(s_max > 0, InvalidArgument, "diagonal_whitener: s is all zeros");
  if (rcond < 0) rcond = default_rcond(s.numel(), s.scalar_type());
  auto keep = s > rcond * s_max;
  Whitener w;
  w.method = "diagonal";
  w.rank = keep.sum().item<int64_t>();
  w.S = s;
  w.S_inv = at::where(keep, s.clamp_min(std::numeric_limits<double>::min()).reciprocal(), at::zeros_like(s));
  return w;
}

Whitener factor_whitener(const at::Tensor& S_in) {
  if (S_in.defined() && S_in.dim() == 1) return diagonal_whitener(S_in);
  auto S = square_matrix(S_in, "factor_whitener: S");
  auto [inv, info] = at::linalg_inv_ex(S);
  LR_CHECK(info.item<int64_t>() == 0, InvalidArgument, "factor_whitener: S (", S.size(0), "x", S.size(1),
           ") is singular; build the whitener from H with eigen_whitener instead");
  Whitener w;
  w.method = "factor";
  w.rank = S.size(0);
  w.S = S;
  w.S_inv = inv;
  return w;
}

at::Tensor asvd_scale(const at::Tensor& X_in, double alpha) {
  auto X = detail::working_matrix(X_in, "asvd_scale: X");
  LR_CHECK(X.size(1) >= 1, InvalidArgument, "asvd_scale: X (n, N) has no tokens");
  return X.abs().mean(1).pow(alpha);
}

LowRankFactors whitened_lowrank(const at::Tensor& A_in, const Whitener& W, int64_t k,
                                const WhitenedLowRankOptions& options) {
  auto A = detail::working_matrix(A_in, "whitened_lowrank: A");
  const int64_t m = A.size(0), n = A.size(1);
  LR_CHECK(W.S.defined() && W.S_inv.defined(), InvalidArgument, "whitened_lowrank: the whitener is empty");
  LR_CHECK(W.size() == n, InvalidArgument, "whitened_lowrank: A is ", m, "x", n,
           " but the whitener has size ", W.size(), "; it must match A's columns (input features)");
  detail::check_rank(k, m, n, "whitened_lowrank");
  auto [S, S_inv] = factors_like(W, A);
  auto AS = W.is_diagonal() ? A * S.unsqueeze(0) : at::matmul(A, S);
  Svd svd = options.randomized ? randomized_svd(AS, k, *options.randomized) : truncated_svd(AS, k);
  at::Tensor L, R;
  if (options.balanced) {
    auto root = svd.S.sqrt();
    L = svd.U * root.unsqueeze(0);
    R = root.unsqueeze(1) * svd.Vh;
  } else {
    L = svd.U * svd.S.unsqueeze(0);
    R = svd.Vh;
  }
  R = W.is_diagonal() ? R * S_inv.unsqueeze(0) : at::matmul(R, S_inv);
  return {L, R};
}

LowRankFactors whitened_lowrank_from_gram(const at::Tensor& A, const at::Tensor& H, int64_t k,
                                          const WhitenedLowRankOptions& options) {
  return whitened_lowrank(A, cholesky_whitener(H), k, options);
}

double whitened_error(const at::Tensor& A_in, const LowRankFactors& B, const Whitener& W) {
  auto A = detail::working_matrix(A_in, "whitened_error: A");
  auto D = A - B.reconstruct().to(A.scalar_type());
  return W.apply(D).norm().item<double>();
}

}  // namespace lowrank::linalg
