#include "lowrank/linalg/ldu.h"

#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "tests/linalg/linalg_testing.h"
#include "tests/testing.h"

namespace lowrank::linalg {
namespace {

using testing_util::randn;

void expect_valid_ldu(const at::Tensor& A, const Ldu& f, double tol) {
  const int64_t m = A.size(0), n = A.size(1), k = std::min(m, n);
  ASSERT_EQ(f.P.sizes(), (at::IntArrayRef{m, m}));
  ASSERT_EQ(f.L.sizes(), (at::IntArrayRef{m, k}));
  ASSERT_EQ(f.D.sizes(), (at::IntArrayRef{k}));
  ASSERT_EQ(f.U.sizes(), (at::IntArrayRef{k, n}));
  // P is a permutation matrix.
  EXPECT_TRUE(((f.P == 0) | (f.P == 1)).all().item<bool>());
  EXPECT_TRUE(at::equal(f.P.sum(0), at::ones({m}, f.P.options())));
  EXPECT_TRUE(at::equal(f.P.sum(1), at::ones({m}, f.P.options())));
  // Unit lower / unit upper structure.
  EXPECT_EQ(f.L.triu(1).abs().max().item<double>(), 0.0);
  EXPECT_EQ(f.U.tril(-1).abs().max().item<double>(), 0.0);
  EXPECT_LT(testing::max_abs_diff(f.L.diagonal(), at::ones({k})), 1e-15);
  EXPECT_LT(testing::max_abs_diff(f.U.diagonal(), at::ones({k})), tol);
  // Partial pivoting bounds the multipliers by 1.
  EXPECT_LE(f.L.abs().max().item<double>(), 1.0 + 1e-12);
  // P A = L D U, and the reconstruction.
  auto LDU = at::matmul(f.L * f.D.unsqueeze(0), f.U);
  EXPECT_LT(testing::rel_fro_error(LDU, at::matmul(f.P, A.to(LDU.scalar_type()))), tol);
  EXPECT_LT(testing::rel_fro_error(f.reconstruct(), A), tol);
}

TEST(LduTest, SquareMatrixFactorsExactly) {
  auto A = randn({6, 6}, 1);
  auto f = ldu(A);
  EXPECT_EQ(f.D.scalar_type(), at::kDouble);
  expect_valid_ldu(A, f, 1e-13);
  // D holds the pivots: prod(D) = det(P) det(A) = +-det(A).
  EXPECT_NEAR(std::abs(f.D.prod().item<double>()), std::abs(at::linalg_det(A).item<double>()),
              1e-10 * std::abs(at::linalg_det(A).item<double>()));
}

TEST(LduTest, RectangularMatricesFactorAsTrapezoids) {
  expect_valid_ldu(randn({7, 4}, 2), ldu(randn({7, 4}, 2)), 1e-13);
  expect_valid_ldu(randn({4, 7}, 3), ldu(randn({4, 7}, 3)), 1e-13);
}

TEST(LduTest, Float32ForNonDoubleInput) {
  auto A = randn({5, 5}, 4).to(at::kFloat);
  auto f = ldu(A);
  EXPECT_EQ(f.L.scalar_type(), at::kFloat);
  expect_valid_ldu(A, f, 1e-5);
  auto Ai = at::tensor({4, 3, 6, 3}, at::kLong).reshape({2, 2});
  expect_valid_ldu(Ai, ldu(Ai), 1e-6);
}

TEST(LduTest, RejectsSingularMatricesWithTheirPivot) {
  auto S = at::tensor({1.0, 2.0, 2.0, 4.0}, at::kDouble).reshape({2, 2});  // exact zero pivot
  try {
    ldu(S);
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("rank-deficient: pivot 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ldu(S, /*rcond=*/0), InvalidArgument);
  // Numerically singular (rank 3 of 5): a tiny pivot, rejected by the default rcond.
  auto R = at::matmul(randn({5, 3}, 5), randn({3, 5}, 6));
  EXPECT_THROW(ldu(R), InvalidArgument);
  EXPECT_THROW(ldu(at::zeros({3, 3})), InvalidArgument);
  EXPECT_THROW(ldu(randn({2, 2, 2}, 7)), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::linalg
