#include "lowrank/linalg/rpca.h"

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/linalg/check_internal.h"

namespace lowrank::linalg {
namespace {

at::Tensor soft_threshold(const at::Tensor& X, double tau) {
  return X.sign() * (X.abs() - tau).clamp_min(0);
}

}  // namespace

RpcaResult robust_pca(const at::Tensor& M_in, const RpcaOptions& options) {
  auto M = detail::working_matrix(M_in, "robust_pca: M");
  const int64_t m = M.size(0), n = M.size(1);
  LR_CHECK(m >= 1 && n >= 1, InvalidArgument, "robust_pca: M is empty (", m, "x", n, ")");
  LR_CHECK(at::isfinite(M).all().item<bool>(), InvalidArgument, "robust_pca: M has non-finite entries");
  const double lambda =
      options.lambda > 0 ? options.lambda : 1.0 / std::sqrt(static_cast<double>(std::max(m, n)));
  LR_CHECK(options.lambda > 0 || options.lambda == -1, InvalidArgument,
           "robust_pca: lambda = ", options.lambda, " must be > 0 (or -1 for 1/sqrt(max(m, n)))");
  LR_CHECK(options.rho > 1, InvalidArgument, "robust_pca: rho = ", options.rho, " must be > 1");
  LR_CHECK(options.tol > 0, InvalidArgument, "robust_pca: tol = ", options.tol, " must be > 0");
  LR_CHECK(options.max_iters >= 0, InvalidArgument, "robust_pca: max_iters = ", options.max_iters,
           " must be >= 0");

  RpcaResult out;
  out.L = at::zeros_like(M);
  out.S = at::zeros_like(M);
  const double m_fro = M.norm().item<double>();
  if (m_fro == 0) {
    out.converged = true;
    return out;
  }
  const double norm_two = at::linalg_matrix_norm(M, 2).item<double>();
  const double norm_inf = M.abs().max().item<double>() / lambda;
  auto Y = M / std::max(norm_two, norm_inf);
  double mu = options.mu > 0 ? options.mu : 1.25 / norm_two;
  const double mu_max = mu * options.mu_max_ratio;

  for (int64_t it = 0; it < options.max_iters; ++it) {
    out.S = soft_threshold(M - out.L + Y / mu, lambda / mu);
    auto [U, sigma, Vh] = at::linalg_svd(M - out.S + Y / mu, /*full_matrices=*/false);
    auto shrunk = (sigma - 1.0 / mu).clamp_min(0);
    const int64_t r = (shrunk > 0).sum().item<int64_t>();
    using at::indexing::Slice;
    out.L = at::matmul(U.index({Slice(), Slice(0, r)}) * shrunk.index({Slice(0, r)}).unsqueeze(0),
                       Vh.index({Slice(0, r)}));
    auto Z = M - out.L - out.S;
    Y = Y + mu * Z;
    mu = std::min(mu * options.rho, mu_max);
    out.iterations = it + 1;
    if (Z.norm().item<double>() / m_fro < options.tol) {
      out.converged = true;
      break;
    }
  }
  return out;
}

}  // namespace lowrank::linalg
