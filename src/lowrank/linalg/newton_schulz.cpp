#include "lowrank/linalg/newton_schulz.h"

#include <cmath>
#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/linalg/check_internal.h"

namespace lowrank::linalg {
namespace {

double sqrt_eps(at::ScalarType dtype) {
  return std::sqrt(dtype == at::kDouble ? std::numeric_limits<double>::epsilon()
                                        : static_cast<double>(std::numeric_limits<float>::epsilon()));
}

double rel_change(const at::Tensor& next, const at::Tensor& prev) {
  const double denom = next.norm().item<double>();
  return denom > 0 ? (next - prev).norm().item<double>() / denom : 0.0;
}

}  // namespace

IterativeResult newton_schulz_orthogonalize(const at::Tensor& G_in, const NewtonSchulzOptions& options) {
  auto G = detail::working_matrix(G_in, "newton_schulz_orthogonalize: G");
  const bool quintic = options.iteration == PolarIteration::kMuonQuintic;
  const int64_t max_steps = options.max_steps >= 0 ? options.max_steps : (quintic ? 5 : 100);
  const double tol = options.tol >= 0 ? options.tol : sqrt_eps(G.scalar_type());
  LR_CHECK(options.eps >= 0, InvalidArgument, "newton_schulz_orthogonalize: eps = ", options.eps,
           " must be >= 0");

  const bool transposed = G.size(0) > G.size(1);  // iterate on the wide orientation
  auto X = transposed ? G.mT() : G;
  X = X / (X.norm().item<double>() + options.eps);
  IterativeResult out;
  bool final_step = false;
  for (int64_t step = 0; step < max_steps; ++step) {
    auto Gram = at::matmul(X, X.mT());  // (r, r), r = min(m, n)
    at::Tensor next;
    if (quintic) {
      auto B = at::addmm(Gram, Gram, Gram, /*beta=*/-4.7750, /*alpha=*/2.0315);  // b A + c A^2
      next = at::addmm(X, B, X, /*beta=*/3.4445, /*alpha=*/1.0);                 // a X + B X
    } else {
      next = at::addmm(X, Gram, X, /*beta=*/1.5, /*alpha=*/-0.5);  // 1.5 X - 0.5 X X^T X
    }
    out.iterations = step + 1;
    if (!quintic) {
      if (final_step) {
        X = next;
        out.converged = true;
        break;
      }
      final_step = rel_change(next, X) <= tol;
    }
    X = next;
  }
  if (quintic) out.converged = true;
  out.X = transposed ? X.mT().contiguous() : X;
  return out;
}

IterativeResult newton_schulz_pinv(const at::Tensor& A_in, const NewtonSchulzPinvOptions& options) {
  auto A = detail::working_matrix(A_in, "newton_schulz_pinv: A");
  LR_CHECK(options.max_iters >= 0, InvalidArgument, "newton_schulz_pinv: max_iters = ", options.max_iters,
           " must be >= 0");
  const double tol = options.tol >= 0 ? options.tol : sqrt_eps(A.scalar_type());
  const double norm1 = A.abs().sum(0).max().item<double>();     // max column sum
  const double norm_inf = A.abs().sum(1).max().item<double>();  // max row sum
  LR_CHECK(norm1 > 0, InvalidArgument, "newton_schulz_pinv: A (", A.size(0), "x", A.size(1),
           ") is all zeros; its pseudo-inverse is zero");
  auto X = A.mT() / (norm1 * norm_inf);  // (n, m); sigma_max(A X_0) <= 1 < 2
  const bool small_left = A.size(1) <= A.size(0);
  IterativeResult out;
  bool final_step = false;
  for (int64_t it = 0; it < options.max_iters; ++it) {
    // X (2I - A X) = 2X - X A X, with the smaller Gram: X A (n, n) or A X (m, m).
    auto next = small_left ? at::addmm(X, at::matmul(X, A), X, /*beta=*/2.0, /*alpha=*/-1.0)
                           : at::addmm(X, X, at::matmul(A, X), /*beta=*/2.0, /*alpha=*/-1.0);
    out.iterations = it + 1;
    if (final_step) {
      X = next;
      out.converged = true;
      break;
    }
    final_step = rel_change(next, X) <= tol;
    X = next;
  }
  out.X = X;
  return out;
}

}  // namespace lowrank::linalg
