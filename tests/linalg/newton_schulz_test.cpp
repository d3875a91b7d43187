#include "lowrank/linalg/newton_schulz.h"

#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "tests/linalg/linalg_testing.h"
#include "tests/testing.h"

namespace lowrank::linalg {
namespace {

using testing_util::planted;
using testing_util::randn;

// The polar factor U V^T from the thin SVD (the oracle).
at::Tensor polar_factor(const at::Tensor& G) {
  auto [U, S, Vh] = at::linalg_svd(G, /*full_matrices=*/false);
  return at::matmul(U, Vh);
}

TEST(NewtonSchulzTest, CubicConvergesToThePolarFactor) {
  auto s = at::linspace(1.0, 0.05, 5, at::kDouble);  // condition number 20
  for (auto shape : {std::pair<int64_t, int64_t>{8, 5}, {5, 8}}) {
    auto G = shape.first > shape.second ? planted(8, 5, s, 1) : planted(5, 8, s, 2);
    auto r = newton_schulz_orthogonalize(G);
    EXPECT_TRUE(r.converged);
    EXPECT_LT(r.iterations, 40);
    EXPECT_EQ(r.X.sizes(), G.sizes());
    EXPECT_LT(testing::max_abs_diff(r.X, polar_factor(G)), 1e-12) << shape.first << "x" << shape.second;
  }
}

TEST(NewtonSchulzTest, CubicInFloat32) {
  auto G = randn({16, 12}, 3, at::kFloat);
  auto r = newton_schulz_orthogonalize(G);
  EXPECT_EQ(r.X.scalar_type(), at::kFloat);
  EXPECT_TRUE(r.converged);
  EXPECT_LT(testing::max_abs_diff(r.X, polar_factor(G.to(at::kDouble))), 1e-4);
}

TEST(NewtonSchulzTest, MuonQuinticKeepsSingularVectorsAndSquashesValues) {
  auto G = randn({24, 16}, 4, at::kFloat);
  auto r = newton_schulz_orthogonalize(G, {.iteration = PolarIteration::kMuonQuintic});
  EXPECT_EQ(r.iterations, 5);
  auto sv = at::linalg_svdvals(r.X.to(at::kDouble));
  EXPECT_GT(sv.min().item<double>(), 0.6);
  EXPECT_LT(sv.max().item<double>(), 1.25);
  // An odd matrix polynomial acts on singular values only: U^T X V is diagonal.
  auto [U, S, Vh] = at::linalg_svd(G.to(at::kDouble), false);
  auto inner = at::matmul(U.mT(), at::matmul(r.X.to(at::kDouble), Vh.mT()));
  EXPECT_LT((inner - at::diag(inner.diagonal())).abs().max().item<double>(), 1e-4);
  // Not the exact polar factor, but close to it.
  EXPECT_GT(testing::max_abs_diff(r.X, polar_factor(G.to(at::kDouble))), 1e-3);
  EXPECT_LT(testing::rel_fro_error(r.X, polar_factor(G.to(at::kDouble))), 0.35);
}

TEST(NewtonSchulzPinvTest, MatchesLinalgPinv) {
  auto s = at::linspace(2.0, 0.2, 5, at::kDouble);
  for (auto G : {planted(9, 5, s, 5), planted(5, 9, s, 6), randn({6, 6}, 7)}) {
    auto r = newton_schulz_pinv(G);
    EXPECT_TRUE(r.converged);
    EXPECT_EQ(r.X.sizes(), (at::IntArrayRef{G.size(1), G.size(0)}));
    EXPECT_LT(testing::rel_fro_error(r.X, at::linalg_pinv(G)), 1e-10) << G.sizes() << " " << r.iterations;
  }
}

TEST(NewtonSchulzPinvTest, ExactlyRankDeficientBlock) {
  auto A = at::zeros({7, 5}, at::kDouble);
  A.narrow(0, 0, 3).narrow(1, 0, 3).copy_(randn({3, 3}, 8) + 3 * at::eye(3, at::kDouble));
  auto r = newton_schulz_pinv(A);
  EXPECT_TRUE(r.converged);
  EXPECT_LT(testing::rel_fro_error(r.X, at::linalg_pinv(A)), 1e-10);
}

TEST(NewtonSchulzPinvTest, ReportsNonConvergenceAndRejectsZero) {
  auto r = newton_schulz_pinv(randn({6, 4}, 9), {.max_iters = 2});
  EXPECT_FALSE(r.converged);
  EXPECT_EQ(r.iterations, 2);
  EXPECT_THROW(newton_schulz_pinv(at::zeros({3, 3})), InvalidArgument);
  EXPECT_THROW(newton_schulz_orthogonalize(at::zeros({3})), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::linalg
