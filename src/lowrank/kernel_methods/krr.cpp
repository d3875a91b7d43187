#include "lowrank/kernel_methods/krr.h"

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"

namespace lowrank::kernel_methods {

CholeskyFactor cholesky_with_jitter(const at::Tensor& k, std::string_view what) {
  LR_CHECK(k.dim() == 2 && k.size(0) == k.size(1), InvalidArgument, what, ": must be square, got ",
           k.sizes());
  const int64_t n = k.size(0);
  const double scale = n == 0 ? 1.0 : std::max(k.diagonal().mean().item<double>(), 1e-300);
  const double largest = 1e-2 * scale;
  // K + jitter·I by a copy with its diagonal shifted: no n×n identity is built (at n = 4000 that
  // and the sum's temporary were a third of a KRR fit).
  auto shifted = [&](double jitter) {
    at::Tensor out = k.clone();
    out.diagonal().add_(jitter);
    return out;
  };
  for (double jitter = 0.0;; jitter = jitter == 0 ? 1e-10 * scale : jitter * 10) {
    const auto [lower, info] = at::linalg_cholesky_ex(jitter == 0 ? k : shifted(jitter));
    if (info.item<int64_t>() == 0) return {lower, jitter};
    if (jitter >= largest * (1 - 1e-9)) {
      throw InvalidArgument(str(what, ": not positive definite even with a jitter of ", jitter,
                                " (1e-2 × its mean diagonal) added"));
    }
  }
}

KrrSolution krr_solve(const at::Tensor& k, const at::Tensor& y, double ridge) {
  LR_CHECK(std::isfinite(ridge) && ridge >= 0, InvalidArgument, "krr: the ridge lambda must be >= 0, got ",
           ridge);
  LR_CHECK(y.dim() == 1 || y.dim() == 2, InvalidArgument, "krr: targets must be [n] or [n, outputs], got ",
           y.sizes());
  LR_CHECK(k.dim() == 2 && y.size(0) == k.size(0), InvalidArgument, "krr: ", y.size(0),
           " targets for a Gram matrix of size ", k.sizes());
  const int64_t n = k.size(0);
  at::Tensor regularised = k;
  if (ridge > 0) {
    regularised = k.clone();
    regularised.diagonal().add_(ridge);
  }
  CholeskyFactor factor = cholesky_with_jitter(regularised, "krr: the Gram matrix K + lambda I");
  const at::Tensor y2 = y.dim() == 1 ? y.unsqueeze(1) : y;
  const at::Tensor alpha = at::cholesky_solve(y2, factor.lower);
  const double outputs = static_cast<double>(y2.size(1));
  const double fit = (y2 * alpha).sum().item<double>();
  const double log_det_half = at::log(factor.lower.diagonal()).sum().item<double>();
  KrrSolution out;
  out.alpha = y.dim() == 1 ? alpha.squeeze(1) : alpha;
  out.jitter = factor.jitter;
  out.log_evidence = -0.5 * fit - outputs * log_det_half -
                     outputs * 0.5 * static_cast<double>(n) * std::log(2 * std::numbers::pi);
  return out;
}

RidgePath ridge_path(const at::Tensor& features, const at::Tensor& y) {
  LR_CHECK(features.dim() == 2, InvalidArgument, "ridge: features must be [n, k], got ", features.sizes());
  LR_CHECK((y.dim() == 1 || y.dim() == 2) && y.size(0) == features.size(0), InvalidArgument,
           "ridge: ", y.dim() >= 1 ? y.size(0) : 0, " targets for ", features.size(0), " rows of features");
  auto [u, s, vh] = at::linalg_svd(features, /*full_matrices=*/false);
  RidgePath path{u, s, vh.t(), at::Tensor()};
  path.uty = at::matmul(u.t(), y);
  return path;
}

namespace {

// sᵢ/(sᵢ² + λ), or 1/sᵢ (0 for sᵢ below the rank cut-off) at λ = 0.
at::Tensor shrinkage(const at::Tensor& s, double ridge, bool squared) {
  LR_CHECK(std::isfinite(ridge) && ridge >= 0, InvalidArgument, "ridge: lambda must be >= 0, got ", ridge);
  const at::Tensor s2 = s * s;
  if (ridge > 0) return (squared ? s2 : s) / (s2 + ridge);
  // Minimum-norm least squares: singular values below max(n,k)·eps·s_max count as zero (numpy's
  // lstsq/pinv convention).
  const double cut = s.numel() == 0 ? 0 : s.max().item<double>() * 1e-15 * static_cast<double>(s.numel());
  const at::Tensor keep = s.gt(cut);
  return at::where(keep, squared ? at::ones_like(s) : 1.0 / s.clamp_min(1e-300), at::zeros_like(s));
}

}  // namespace

at::Tensor ridge_coefficients(const RidgePath& path, double ridge) {
  const at::Tensor shrink = shrinkage(path.s, ridge, false);
  const at::Tensor scaled = path.uty.dim() == 1 ? shrink * path.uty : shrink.unsqueeze(1) * path.uty;
  return at::matmul(path.v, scaled);
}

at::Tensor ridge_fitted(const RidgePath& path, double ridge) {
  const at::Tensor shrink = shrinkage(path.s, ridge, true);
  const at::Tensor scaled = path.uty.dim() == 1 ? shrink * path.uty : shrink.unsqueeze(1) * path.uty;
  return at::matmul(path.u, scaled);
}

}  // namespace lowrank::kernel_methods
