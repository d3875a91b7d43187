// linalg/grassmann: the tangent projection (idempotent, orthogonal to U), the geodesic step against
// Q·expm(t[[0, −Bᵀ], [B, 0]])·[I; 0] in fp64 (an independent closed form of the same curve), the
// orthonormality of U(t) after long steps, and the QR retraction's sign convention.
#include <gtest/gtest.h>

#include "lowrank/linalg/grassmann.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::linalg {
namespace {

using kernel_methods::kernel_testing::normal;

double max_abs(const at::Tensor& a) {
  return a.abs().max().item<double>();
}

// A random orthogonal [n, n] (Q of a Gaussian).
at::Tensor random_orthogonal(int64_t n, uint64_t seed) {
  return std::get<0>(at::linalg_qr(normal({n, n}, seed)));
}

TEST(GrassmannTest, TangentProjectionIsIdempotentAndOrthogonalToTheBasis) {
  const at::Tensor u = random_orthogonal(7, 1).slice(1, 0, 3);
  const at::Tensor g = normal({7, 3}, 2);
  const at::Tensor h = grassmann_tangent_projection(u, g);
  EXPECT_LT(max_abs(at::matmul(u.t(), h)), 1e-13);
  EXPECT_LT(max_abs(grassmann_tangent_projection(u, h) - h), 1e-13);
  // The removed part lies in span(U): G − H = U(UᵀG).
  EXPECT_LT(max_abs(g - h - at::matmul(u, at::matmul(u.t(), g))), 1e-13);
}

TEST(GrassmannTest, GeodesicMatchesTheMatrixExponential) {
  const int64_t n = 7, k = 3;
  const at::Tensor q = random_orthogonal(n, 3);
  const at::Tensor u = q.slice(1, 0, k), u_perp = q.slice(1, k, n);
  const at::Tensor b = normal({n - k, k}, 4);
  const at::Tensor tangent = at::matmul(u_perp, b);
  at::Tensor skew = at::zeros({n, n}, at::kDouble);
  skew.slice(0, 0, k).slice(1, k, n).copy_(-b.t());
  skew.slice(0, k, n).slice(1, 0, k).copy_(b);
  for (const double t : {0.0, 0.3, 1.7}) {
    const at::Tensor expected = at::matmul(q, at::linalg_matrix_exp(t * skew)).slice(1, 0, k);
    EXPECT_LT(max_abs(grassmann_geodesic_step(u, tangent, t) - expected), 1e-10) << "t = " << t;
  }
}

TEST(GrassmannTest, StepsStayOrthonormal) {
  at::Tensor u = random_orthogonal(9, 5).slice(1, 0, 4);
  for (int step = 0; step < 20; ++step) {
    const at::Tensor h = grassmann_tangent_projection(u, normal({9, 4}, 10 + step));
    u = grassmann_geodesic_step(u, h, 2.5);
  }
  EXPECT_LT(max_abs(at::matmul(u.t(), u) - at::eye(4, at::kDouble)), 1e-12);
}

TEST(GrassmannTest, QrRetractionHasAPositiveDiagonalAndTheSameSpan) {
  const at::Tensor a = normal({2, 6, 3}, 6);  // batched
  const at::Tensor q = qr_retraction(a);
  EXPECT_LT(max_abs(at::matmul(q.transpose(1, 2), q) - at::eye(3, at::kDouble)), 1e-13);
  const at::Tensor r = at::matmul(q.transpose(1, 2), a);  // = R
  EXPECT_LT(max_abs(at::tril(r, -1)), 1e-12);
  EXPECT_TRUE(r.diagonal(0, 1, 2).gt(0).all().item<bool>());
  EXPECT_LT(max_abs(at::matmul(q, r) - a), 1e-12);
}

TEST(GrassmannTest, RefusesMismatchedShapes) {
  kernel_methods::kernel_testing::expect_error(
      [] {
        grassmann_tangent_projection(at::zeros({3, 4}, at::kDouble), at::zeros({3, 4}, at::kDouble));
      },
      "n >= k");
  kernel_methods::kernel_testing::expect_error(
      [] {
        grassmann_geodesic_step(at::zeros({5, 2}, at::kDouble), at::zeros({5, 3}, at::kDouble), 1.0);
      },
      "must have the basis's shape");
}

}  // namespace
}  // namespace lowrank::linalg
