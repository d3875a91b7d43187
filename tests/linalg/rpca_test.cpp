#include "lowrank/linalg/rpca.h"

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "tests/linalg/linalg_testing.h"
#include "tests/testing.h"

namespace lowrank::linalg {
namespace {

using testing_util::randn;

// Candès et al. §4.1: L0 = X Y^T with N(0, 1/n) entries, S0 with Bernoulli(rho) support and
// independent random signs.
struct Planted {
  at::Tensor L0, S0;
};

Planted planted_problem(int64_t n, int64_t r, double rho, uint64_t seed) {
  auto X = randn({n, r}, seed) / std::sqrt(double(n));
  auto Y = randn({n, r}, seed + 1) / std::sqrt(double(n));
  at::Generator gen = at::detail::createCPUGenerator(seed + 2);
  auto u = at::rand({n, n}, gen, at::TensorOptions().dtype(at::kDouble));
  auto signs = at::rand({n, n}, gen, at::TensorOptions().dtype(at::kDouble)).lt(0.5).to(at::kDouble) * 2 - 1;
  return {at::matmul(X, Y.mT()), signs * u.lt(rho).to(at::kDouble)};
}

TEST(RpcaTest, RecoversPlantedLowRankAndSparseParts) {
  auto p = planted_problem(60, 3, 0.05, 1);
  auto r = robust_pca(p.L0 + p.S0);
  EXPECT_TRUE(r.converged);
  EXPECT_LT(r.iterations, 200);
  EXPECT_LT(testing::rel_fro_error(r.L, p.L0), 1e-5) << r.iterations;
  EXPECT_LT(testing::rel_fro_error(r.S, p.S0), 1e-5);
  auto sv = at::linalg_svdvals(r.L);
  EXPECT_EQ((sv > 1e-6 * sv[0]).sum().item<int64_t>(), 3);
  // The support of the corruptions is found.
  EXPECT_TRUE(at::equal(r.S.abs() > 0.5, p.S0 != 0));
  EXPECT_LT(testing::rel_fro_error(r.L + r.S, p.L0 + p.S0), 1e-6);
}

TEST(RpcaTest, RectangularFloat32) {
  auto p = planted_problem(60, 2, 0.05, 7);
  auto L0 = p.L0.narrow(1, 0, 45), M = (p.L0 + p.S0).narrow(1, 0, 45);
  auto r = robust_pca(M.to(at::kFloat), {.tol = 1e-6});
  EXPECT_EQ(r.L.scalar_type(), at::kFloat);
  EXPECT_TRUE(r.converged);
  EXPECT_LT(testing::rel_fro_error(r.L, L0), 1e-3) << r.iterations;
}

TEST(RpcaTest, ZeroMatrixAndBadOptions) {
  auto r = robust_pca(at::zeros({4, 5}));
  EXPECT_TRUE(r.converged);
  EXPECT_EQ(r.iterations, 0);
  EXPECT_EQ(r.L.abs().max().item<double>(), 0.0);
  auto M = randn({6, 6}, 3);
  EXPECT_THROW(robust_pca(M, {.lambda = -2}), InvalidArgument);
  EXPECT_THROW(robust_pca(M, {.rho = 1.0}), InvalidArgument);
  EXPECT_THROW(robust_pca(randn({2, 2, 2}, 4)), InvalidArgument);
  auto few = robust_pca(M, {.max_iters = 2});
  EXPECT_FALSE(few.converged);
  EXPECT_EQ(few.iterations, 2);
}

}  // namespace
}  // namespace lowrank::linalg
