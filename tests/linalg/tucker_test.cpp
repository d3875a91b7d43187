#include "lowrank/linalg/tucker.h"

#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "tests/linalg/linalg_testing.h"
#include "tests/testing.h"

namespace lowrank::linalg {
namespace {

using testing_util::orthonormality_error;
using testing_util::randn;
using testing_util::random_orthonormal;

// core x_1 U_1 ... with random orthonormal factors: multilinear rank = core shape.
at::Tensor planted_tucker(at::IntArrayRef dims, at::IntArrayRef ranks, uint64_t seed) {
  auto T = randn(ranks, seed);
  for (size_t n = 0; n < dims.size(); ++n) {
    T = mode_product(T, random_orthonormal(dims[n], ranks[n], seed + 1 + n), static_cast<int64_t>(n));
  }
  return T;
}

double tucker_error(const at::Tensor& T, const Tucker& t) {
  return (T - t.reconstruct()).norm().item<double>();
}

TEST(TuckerTest, ModeProductMatchesUnfoldedMatrixProduct) {
  auto T = randn({3, 4, 5}, 1);
  auto M = randn({6, 4}, 2);
  auto P = mode_product(T, M, 1);
  EXPECT_EQ(P.sizes(), (at::IntArrayRef{3, 6, 5}));
  EXPECT_LT(testing::max_abs_diff(unfold(P, 1), at::matmul(M, unfold(T, 1))), 1e-13);
  EXPECT_LT(testing::max_abs_diff(mode_product(T, at::eye(5, at::kDouble), 2), T), 1e-15);
  EXPECT_THROW(mode_product(T, M, 0), InvalidArgument);
  EXPECT_THROW(unfold(T, 3), InvalidArgument);
}

TEST(TuckerTest, FullRanksReconstructExactly) {
  auto T3 = randn({4, 5, 6}, 3);
  auto t3 = hosvd(T3, {4, 5, 6});
  EXPECT_LT(testing::rel_fro_error(t3.reconstruct(), T3), 1e-13);
  auto T4 = randn({3, 4, 2, 5}, 4);
  auto t4 = hosvd(T4, {3, 4, 2, 5});
  EXPECT_EQ(t4.core.sizes(), (at::IntArrayRef{3, 4, 2, 5}));
  EXPECT_LT(testing::rel_fro_error(t4.reconstruct(), T4), 1e-13);
  for (const auto& U : t4.factors) EXPECT_LT(orthonormality_error(U), 1e-13);
}

TEST(TuckerTest, RecoversPlantedMultilinearRankExactly) {
  auto T3 = planted_tucker({8, 9, 7}, {2, 3, 2}, 10);
  auto t3 = hosvd(T3, {2, 3, 2});
  EXPECT_EQ(t3.factors[1].sizes(), (at::IntArrayRef{9, 3}));
  EXPECT_LT(testing::rel_fro_error(t3.reconstruct(), T3), 1e-12);
  for (const auto& U : t3.factors) EXPECT_LT(orthonormality_error(U), 1e-13);
  auto T4 = planted_tucker({5, 6, 4, 7}, {2, 3, 2, 2}, 20);
  EXPECT_LT(testing::rel_fro_error(hosvd(T4, {2, 3, 2, 2}).reconstruct(), T4), 1e-12);
  // One rank too small leaves a visible error.
  EXPECT_GT(testing::rel_fro_error(hosvd(T4, {2, 2, 2, 2}).reconstruct(), T4), 1e-3);
}

TEST(TuckerTest, HooiNeverWorseThanHosvd) {
  auto T = planted_tucker({8, 9, 10}, {3, 3, 3}, 30) + 0.3 * randn({8, 9, 10}, 31);
  auto base = hosvd(T, {3, 3, 3});
  auto refined = hosvd(T, {3, 3, 3}, {.hooi_iters = 5});
  const double e0 = tucker_error(T, base), e1 = tucker_error(T, refined);
  EXPECT_LE(e1, e0 + 1e-12);
  // ||T - T_hat||^2 = ||T||^2 - ||G||^2 for orthonormal factors.
  const double t2 = T.pow(2).sum().item<double>();
  EXPECT_NEAR(e1 * e1, t2 - refined.core.pow(2).sum().item<double>(), 1e-9 * t2);
  for (const auto& U : refined.factors) EXPECT_LT(orthonormality_error(U), 1e-12);
  auto T4 = randn({4, 5, 3, 4}, 32);
  auto h4 = hosvd(T4, {2, 2, 2, 2});
  auto o4 = hosvd(T4, {2, 2, 2, 2}, {.hooi_iters = 3});
  EXPECT_LE(tucker_error(T4, o4), tucker_error(T4, h4) + 1e-12);
}

TEST(TuckerTest, Float32ByDefault) {
  auto T = randn({3, 4, 5}, 40, at::kFloat);
  auto t = hosvd(T, {3, 4, 5});
  EXPECT_EQ(t.core.scalar_type(), at::kFloat);
  EXPECT_LT(testing::rel_fro_error(t.reconstruct(), T), 1e-5);
}

TEST(TuckerTest, RejectsBadRanks) {
  auto T = randn({4, 5, 6}, 50);
  EXPECT_THROW(hosvd(T, {2, 2}), InvalidArgument);
  EXPECT_THROW(hosvd(T, {0, 2, 2}), InvalidArgument);
  EXPECT_THROW(hosvd(T, {5, 2, 2}), InvalidArgument);
  EXPECT_THROW(hosvd(T, {1, 1, 2}), InvalidArgument);  // 2 > 1 * 1
  EXPECT_THROW(hosvd(randn({4}, 51), {2}), InvalidArgument);
  EXPECT_THROW(hosvd(T, {2, 2, 2}, {.hooi_iters = -1}), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::linalg
