#include "lowrank/linalg/grassmann.h"

#include <cmath>

#include "lowrank/core/error.h"

namespace lowrank::linalg {
namespace {

void check_pair(const at::Tensor& u, const at::Tensor& g, const char* what) {
  LR_CHECK(u.dim() >= 2 && u.size(-2) >= u.size(-1), InvalidArgument, "grassmann: ", what,
           ": the basis must be [..., n, k] with n >= k, got ", u.sizes());
  LR_CHECK(g.sizes() == u.sizes(), InvalidArgument, "grassmann: ", what, ": the direction ", g.sizes(),
           " must have the basis's shape ", u.sizes());
}

}  // namespace

at::Tensor grassmann_tangent_projection(const at::Tensor& u, const at::Tensor& g) {
  check_pair(u, g, "tangent projection");
  return g - at::matmul(u, at::matmul(u.transpose(-2, -1), g));
}

at::Tensor grassmann_geodesic_step(const at::Tensor& u, const at::Tensor& tangent, double t) {
  check_pair(u, tangent, "geodesic step");
  LR_CHECK(std::isfinite(t), InvalidArgument, "grassmann: geodesic step: t must be finite, got ", t);
  auto [w, sigma, vh] = at::linalg_svd(tangent, /*full_matrices=*/false);  // w [n, k], vh [k, k]
  const at::Tensor angle = (sigma * t).unsqueeze(-2);                      // [..., 1, k]
  // (U V cos(Σt) + W sin(Σt)) Vᵀ: the cos/sin scale the columns of UV and W.
  return at::matmul(at::matmul(u, vh.transpose(-2, -1)) * at::cos(angle) + w * at::sin(angle), vh);
}

at::Tensor qr_retraction(const at::Tensor& a) {
  LR_CHECK(a.dim() >= 2 && a.size(-2) >= a.size(-1), InvalidArgument,
           "grassmann: QR retraction needs [..., n, k] with n >= k, got ", a.sizes());
  auto [q, r] = at::linalg_qr(a, "reduced");
  // Householder QR leaves the signs of R's diagonal free; flipping Q's columns where R_ii < 0
  // makes the factor unique (and continuous in a).
  const at::Tensor sign = at::where(r.diagonal(0, -2, -1) < 0, -1.0, 1.0).to(q.scalar_type());
  return q * sign.unsqueeze(-2);
}

}  // namespace lowrank::linalg
