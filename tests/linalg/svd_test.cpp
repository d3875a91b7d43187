#include "lowrank/linalg/svd.h"

#include <cmath>

#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "tests/linalg/linalg_testing.h"
#include "tests/testing.h"

namespace lowrank::linalg {
namespace {

using testing_util::fro_diff;
using testing_util::orthonormality_error;
using testing_util::planted;
using testing_util::power_law;
using testing_util::randn;

// Optimal rank-k error from the exact spectrum (Eckart–Young): sqrt(sum_{i>k} sigma_i^2).
double optimal_error(const at::Tensor& A, int64_t k) {
  auto s = at::linalg_svdvals(A.to(at::kDouble));
  return s.narrow(0, k, s.numel() - k).norm().item<double>();
}

// ||(I - U U^T) Q||_F: how far the columns of Q are from span(U) (both orthonormal).
double subspace_gap(const at::Tensor& Q, const at::Tensor& U) {
  auto Qd = Q.to(at::kDouble), Ud = U.to(at::kDouble);
  return (Qd - at::matmul(Ud, at::matmul(Ud.mT(), Qd))).norm().item<double>();
}

TEST(TruncatedSvdTest, ReachesEckartYoungErrorWithOrthonormalFactors) {
  auto A = randn({30, 20}, 1);
  auto svd = truncated_svd(A, 5);
  EXPECT_EQ(svd.U.sizes(), (at::IntArrayRef{30, 5}));
  EXPECT_EQ(svd.S.sizes(), (at::IntArrayRef{5}));
  EXPECT_EQ(svd.Vh.sizes(), (at::IntArrayRef{5, 20}));
  EXPECT_NEAR(fro_diff(A, svd.reconstruct()), optimal_error(A, 5), 1e-10);
  EXPECT_LT(orthonormality_error(svd.U), 1e-12);
  EXPECT_LT(orthonormality_error(svd.Vh.mT()), 1e-12);
  EXPECT_TRUE((svd.S.narrow(0, 0, 4) >= svd.S.narrow(0, 1, 4)).all().item<bool>());
}

TEST(TruncatedSvdTest, FullRankReconstructsExactly) {
  auto A = randn({6, 9}, 2);
  EXPECT_LT(testing::rel_fro_error(truncated_svd(A, 6).reconstruct(), A), 1e-13);
}

TEST(TruncatedSvdTest, ComputesInFloat32UnlessFloat64) {
  auto A = randn({8, 6}, 3);
  EXPECT_EQ(truncated_svd(A, 2).S.scalar_type(), at::kDouble);
  EXPECT_EQ(truncated_svd(A.to(at::kBFloat16), 2).S.scalar_type(), at::kFloat);
  EXPECT_EQ(truncated_svd(A.to(at::kFloat), 2).U.scalar_type(), at::kFloat);
}

TEST(TruncatedSvdTest, RejectsRankOutsideOneToMinDim) {
  auto A = randn({8, 6}, 4);
  EXPECT_THROW(truncated_svd(A, 0), InvalidArgument);
  EXPECT_THROW(truncated_svd(A, 7), InvalidArgument);
  EXPECT_THROW(truncated_svd(randn({2, 3, 4}, 5), 1), InvalidArgument);
  try {
    randomized_svd(A, 9);
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("[1, min(m, n)] = [1, 6]"), std::string::npos) << e.what();
  }
}

TEST(RandomizedSvdTest, NearOptimalOnPlantedPowerLawSpectrum) {
  const int64_t k = 10;
  auto s = power_law(80, 1.0);
  auto A = planted(200, 120, s, 10);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    auto svd = randomized_svd(A.to(dtype), k, {.seed = 1});
    EXPECT_EQ(svd.S.scalar_type(), dtype);
    const double opt = s.narrow(0, k, s.numel() - k).norm().item<double>();
    EXPECT_NEAR(optimal_error(A, k), opt, 1e-12);
    EXPECT_LT(fro_diff(A, svd.reconstruct()) / opt, 1.01) << dtype;
    // The leading singular values themselves are recovered.
    EXPECT_LT(testing::rel_fro_error(svd.S, s.narrow(0, 0, k)), 1e-3) << dtype;
    EXPECT_LT(orthonormality_error(svd.U), dtype == at::kDouble ? 1e-12 : 1e-5);
    EXPECT_LT(orthonormality_error(svd.Vh.mT()), dtype == at::kDouble ? 1e-12 : 1e-5);
  }
}

TEST(RandomizedSvdTest, ExactOnMatrixOfRankK) {
  auto s = at::tensor({5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.125}, at::kDouble);
  auto A = planted(50, 40, s, 20);
  auto svd = randomized_svd(A, 8, {.oversample = 0, .power_iters = 0, .seed = 3});
  EXPECT_LT(testing::rel_fro_error(svd.reconstruct(), A), 1e-12);
  EXPECT_LT(testing::max_abs_diff(svd.S, s), 1e-12);
}

TEST(RandomizedSvdTest, PowerIterationsReduceError) {
  auto s = power_law(60, 0.5);  // slow decay: a bare sketch is visibly suboptimal
  auto A = planted(120, 90, s, 30);
  double prev = 1e300;
  for (int64_t q : {0, 1, 3}) {
    double err =
        fro_diff(A, randomized_svd(A, 8, {.oversample = 2, .power_iters = q, .seed = 4}).reconstruct());
    EXPECT_LT(err, prev) << "q = " << q;
    prev = err;
  }
  EXPECT_LT(prev / optimal_error(A, 8), 1.01);
}

TEST(RandomizedSvdTest, DeterministicForASeed) {
  auto A = randn({40, 30}, 5, at::kFloat);
  auto a = randomized_svd(A, 4, {.seed = 7});
  auto b = randomized_svd(A, 4, {.seed = 7});
  EXPECT_TRUE(at::equal(a.U, b.U));
  EXPECT_TRUE(at::equal(a.S, b.S));
  EXPECT_TRUE(at::equal(a.Vh, b.Vh));
  auto c = randomized_svd(A, 4, {.power_iters = 0, .seed = 8});
  EXPECT_FALSE(at::equal(a.U, c.U));
}

TEST(RandomizedSvdTest, WarmStartFromExactSubspaceNeedsNoIterations) {
  // A flat-ish spectrum, where a Gaussian sketch without power iterations is poor.
  auto s = at::cat({at::full({6}, 2.0, at::kDouble), at::full({50}, 1.0, at::kDouble)});
  auto A = planted(90, 70, s, 40);
  const double opt = optimal_error(A, 6);
  auto exact = truncated_svd(A, 6);
  RandomizedSvdOptions cold{.oversample = 0, .power_iters = 0, .seed = 1};
  EXPECT_GT(fro_diff(A, randomized_svd(A, 6, cold).reconstruct()) / opt, 1.05);

  RandomizedSvdOptions left = cold;
  left.warm_start = exact.U;  // (m, k): a left basis
  auto from_left = randomized_svd(A, 6, left);
  EXPECT_NEAR(fro_diff(A, from_left.reconstruct()), opt, 1e-10);

  RandomizedSvdOptions right = cold;
  right.warm_start = exact.Vh.mT();  // (n, k): a right basis
  EXPECT_NEAR(fro_diff(A, randomized_svd(A, 6, right).reconstruct()), opt, 1e-10);

  // A warm start narrower than k is padded with Gaussian columns and still works with iterations.
  RandomizedSvdOptions narrow{.oversample = 4, .power_iters = 8, .seed = 2};
  narrow.warm_start = exact.U.narrow(1, 0, 2);
  EXPECT_LT(fro_diff(A, randomized_svd(A, 6, narrow).reconstruct()) / opt, 1.01);
}

TEST(RandomizedSvdTest, SquareWarmStartSideIsExplicit) {
  auto s = at::cat({at::full({3}, 3.0, at::kDouble), at::full({27}, 1.0, at::kDouble)});
  auto A = planted(30, 30, s, 45);
  auto exact = truncated_svd(A, 3);
  const double opt = optimal_error(A, 3);
  RandomizedSvdOptions o{.oversample = 0, .power_iters = 0};
  o.warm_start = exact.Vh.mT();
  o.warm_start_side = WarmStartSide::kRight;
  EXPECT_NEAR(fro_diff(A, randomized_svd(A, 3, o).reconstruct()), opt, 1e-10);
  o.warm_start = exact.U;
  o.warm_start_side = WarmStartSide::kAuto;  // square: left
  EXPECT_NEAR(fro_diff(A, randomized_svd(A, 3, o).reconstruct()), opt, 1e-10);
}

TEST(RandomizedSvdTest, RejectsBadOptions) {
  auto A = randn({20, 10}, 6);
  EXPECT_THROW(randomized_svd(A, 3, {.oversample = -1}), InvalidArgument);
  EXPECT_THROW(randomized_svd(A, 3, {.power_iters = -1}), InvalidArgument);
  RandomizedSvdOptions bad;
  bad.warm_start = randn({7, 3}, 7);  // neither 20 nor 10 rows
  EXPECT_THROW(randomized_svd(A, 3, bad), InvalidArgument);
  bad.warm_start = randn({20, 3}, 7);
  bad.warm_start_side = WarmStartSide::kRight;  // needs 10 rows
  EXPECT_THROW(randomized_svd(A, 3, bad), InvalidArgument);
}

TEST(SubspaceIterationTest, ConvergesToDominantLeftSubspace) {
  auto s = at::cat({at::tensor({4.0, 3.5, 3.0}, at::kDouble), power_law(30, 1.0)});
  auto A = planted(60, 40, s, 50);
  auto U3 = truncated_svd(A, 3).U;
  auto Q0 = randn({60, 3}, 51);
  auto Q = subspace_iteration(A, Q0, 40);
  EXPECT_EQ(Q.sizes(), (at::IntArrayRef{60, 3}));
  EXPECT_LT(orthonormality_error(Q), 1e-12);
  EXPECT_LT(subspace_gap(Q, U3), 1e-8);
  EXPECT_GT(subspace_gap(subspace_iteration(A, Q0, 0), U3), 0.5);
}

TEST(SubspaceIterationTest, WarmStartFromExactSubspaceStaysThere) {
  auto A = randn({25, 35}, 52);
  auto svd = truncated_svd(A, 4);
  EXPECT_LT(subspace_gap(subspace_iteration(A, svd.U, 0), svd.U), 1e-12);
  EXPECT_LT(subspace_gap(subspace_iteration(A, svd.U, 3), svd.U), 1e-10);
  // The right subspace through the transpose.
  auto V = svd.Vh.mT();
  EXPECT_LT(subspace_gap(subspace_iteration(A.mT(), V, 2), V), 1e-10);
}

TEST(SubspaceIterationTest, RejectsMismatchedBasis) {
  auto A = randn({10, 8}, 53);
  EXPECT_THROW(subspace_iteration(A, randn({8, 2}, 54), 1), InvalidArgument);
  EXPECT_THROW(subspace_iteration(A, randn({10, 9}, 54), 1), InvalidArgument);
  EXPECT_THROW(subspace_iteration(A, randn({10, 2}, 54), -1), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::linalg
