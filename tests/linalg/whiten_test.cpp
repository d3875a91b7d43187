#include "lowrank/linalg/whiten.h"

#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "tests/linalg/linalg_testing.h"
#include "tests/testing.h"

namespace lowrank::linalg {
namespace {

using testing_util::fro_diff;
using testing_util::randn;

// Activations with very different scales per input channel, so whitening matters.
at::Tensor anisotropic_activations(int64_t n, int64_t tokens, uint64_t seed) {
  auto scale = at::logspace(-1.5, 1.5, n, 10.0, at::kDouble).unsqueeze(1);
  return randn({n, tokens}, seed) * scale;
}

// sum_{i>k} sigma_i(M)^2.
double tail_energy(const at::Tensor& M, int64_t k) {
  auto s = at::linalg_svdvals(M);
  return s.narrow(0, k, s.numel() - k).pow(2).sum().item<double>();
}

double data_error_sq(const at::Tensor& A, const LowRankFactors& B, const at::Tensor& X) {
  auto E = at::matmul(A - B.reconstruct(), X);
  return E.pow(2).sum().item<double>();
}

class WhitenTest : public ::testing::Test {
 protected:
  const int64_t m = 12, n = 16, k = 4;
  at::Tensor A = randn({12, 16}, 1);
  at::Tensor X = anisotropic_activations(16, 40, 2);
  at::Tensor H = at::matmul(X, X.mT());
};

TEST_F(WhitenTest, CholeskyMeetsTheErrorIdentity) {
  auto W = cholesky_whitener(H);
  EXPECT_EQ(W.damping, 0);
  EXPECT_LT(testing::rel_fro_error(at::matmul(W.S, W.S.mT()), H), 1e-13);
  EXPECT_LT(testing::max_abs_diff(at::matmul(W.S, W.S_inv), at::eye(n, at::kDouble)), 1e-8);
  auto B = whitened_lowrank(A, W, k);
  EXPECT_EQ(B.L.sizes(), (at::IntArrayRef{m, k}));
  EXPECT_EQ(B.R.sizes(), (at::IntArrayRef{k, n}));
  const double expected = tail_energy(W.apply(A), k);
  EXPECT_NEAR(data_error_sq(A, B, X) / expected, 1.0, 1e-9);
  EXPECT_NEAR(whitened_error(A, B, W), std::sqrt(expected), 1e-9 * std::sqrt(expected));
}

TEST_F(WhitenTest, EigenAndCholeskyFactorsGiveTheSameB) {
  auto Wc = cholesky_whitener(H);
  auto We = eigen_whitener(H);
  EXPECT_EQ(We.rank, n);
  EXPECT_LT(testing::rel_fro_error(at::matmul(We.S, We.S.mT()), H), 1e-12);
  auto Bc = whitened_lowrank(A, Wc, k).reconstruct();
  auto Be = whitened_lowrank(A, We, k).reconstruct();
  EXPECT_LT(testing::rel_fro_error(Be, Bc), 1e-8);
  EXPECT_NEAR(data_error_sq(A, whitened_lowrank(A, We, k), X) / tail_energy(We.apply(A), k), 1.0, 1e-9);
  // The one-call form from the Gram matrix is the Cholesky path.
  EXPECT_LT(testing::rel_fro_error(whitened_lowrank_from_gram(A, H, k).reconstruct(), Bc), 1e-12);
}

TEST_F(WhitenTest, IdentityWhiteningIsEckartYoung) {
  auto I = at::eye(n, at::kDouble);
  auto B = whitened_lowrank(A, factor_whitener(I), k).reconstruct();
  auto svd = truncated_svd(A, k);
  EXPECT_LT(testing::rel_fro_error(B, svd.reconstruct()), 1e-12);
  auto Bd = whitened_lowrank(A, diagonal_whitener(at::ones({n}, at::kDouble)), k).reconstruct();
  EXPECT_LT(testing::rel_fro_error(Bd, svd.reconstruct()), 1e-12);
}

TEST_F(WhitenTest, BeatsPlainSvdInTheWhitenedError) {
  auto Bw = whitened_lowrank(A, cholesky_whitener(H), k);
  auto svd = truncated_svd(A, k);
  LowRankFactors Bp{svd.U * svd.S.unsqueeze(0), svd.Vh};
  const double whitened = data_error_sq(A, Bw, X), plain = data_error_sq(A, Bp, X);
  EXPECT_LT(whitened, 0.9 * plain) << whitened << " vs " << plain;
  // ...and loses in the plain Frobenius error, as it must (Eckart–Young).
  EXPECT_GT(fro_diff(A, Bw.reconstruct()), fro_diff(A, Bp.reconstruct()));
}

TEST_F(WhitenTest, FactorSplitDoesNotChangeB) {
  auto W = cholesky_whitener(H);
  auto balanced = whitened_lowrank(A, W, k);
  auto left = whitened_lowrank(A, W, k, {.balanced = false});
  EXPECT_LT(testing::rel_fro_error(left.reconstruct(), balanced.reconstruct()), 1e-12);
  // Balanced: both factors carry sqrt(Sigma), so column norms of L equal row norms of R S.
  auto RS = W.apply(balanced.R);
  EXPECT_LT(testing::max_abs_diff(balanced.L.norm(2, {0}), RS.norm(2, {1})), 1e-10);
}

TEST_F(WhitenTest, RandomizedInnerSvdIsNearExact) {
  auto W = cholesky_whitener(H);
  WhitenedLowRankOptions o;
  o.randomized = RandomizedSvdOptions{.oversample = 8, .power_iters = 4, .seed = 3};
  auto B = whitened_lowrank(A, W, k, o);
  EXPECT_LT(data_error_sq(A, B, X) / tail_energy(W.apply(A), k), 1.001);
}

TEST(WhitenSingularTest, CholeskyDampsASingularGram) {
  auto X = randn({16, 8}, 4);  // rank 8 < 16: H is singular
  auto H = at::matmul(X, X.mT());
  auto W = cholesky_whitener(H);
  const double mean_diag = H.diagonal().mean().item<double>();
  EXPECT_NEAR(W.damping, 1e-2 * mean_diag, 1e-12 * mean_diag);
  EXPECT_LT(testing::rel_fro_error(at::matmul(W.S, W.S.mT()), H + W.damping * at::eye(16, at::kDouble)),
            1e-12);
  EXPECT_THROW(cholesky_whitener(H, {.damping = 0}), InvalidArgument);
  auto Wa = cholesky_whitener(at::eye(4, at::kDouble), {.damping = 0.5, .always_damp = true});
  EXPECT_DOUBLE_EQ(Wa.damping, 0.5);
  EXPECT_THROW(cholesky_whitener(-at::eye(4, at::kDouble)), InvalidArgument);  // negative diagonal
  // Indefinite (eigenvalues -2 and 4): even the largest damping, delta = 1, leaves it indefinite.
  EXPECT_THROW(cholesky_whitener(at::tensor({1.0, 3.0, 3.0, 1.0}, at::kDouble).reshape({2, 2})),
               InvalidArgument);
}

TEST(WhitenSingularTest, EigenPseudoInverseKeepsTheErrorIdentity) {
  auto A = randn({10, 16}, 5);
  auto X = randn({16, 8}, 6);
  auto H = at::matmul(X, X.mT());
  auto W = eigen_whitener(H);
  EXPECT_EQ(W.rank, 8);
  for (int64_t k : {2, 5}) {
    auto B = whitened_lowrank(A, W, k);
    EXPECT_NEAR(data_error_sq(A, B, X) / tail_energy(W.apply(A), k), 1.0, 1e-8) << k;
  }
  // Beyond the rank of H the data error is zero.
  EXPECT_LT(data_error_sq(A, whitened_lowrank(A, W, 8), X) / at::matmul(A, X).pow(2).sum().item<double>(),
            1e-20);
  EXPECT_THROW(eigen_whitener(at::zeros({4, 4}, at::kDouble)), InvalidArgument);
}

TEST(WhitenDiagonalTest, AsvdScaleMatchesDenseDiagonal) {
  auto X = anisotropic_activations(6, 30, 7);
  auto s = asvd_scale(X, 0.5);
  auto manual = X.abs().mean(1).sqrt();
  EXPECT_LT(testing::max_abs_diff(s, manual), 1e-14);
  auto A = randn({5, 6}, 8);
  auto Bd = whitened_lowrank(A, diagonal_whitener(s), 2).reconstruct();
  auto Bf = whitened_lowrank(A, factor_whitener(at::diag(s)), 2).reconstruct();
  EXPECT_LT(testing::rel_fro_error(Bd, Bf), 1e-12);
  EXPECT_TRUE(factor_whitener(s).is_diagonal());
}

TEST(WhitenDiagonalTest, ZeroScaleGetsZeroInverse) {
  auto s = at::tensor({1.0, 0.0, 2.0, 0.5}, at::kDouble);
  auto W = diagonal_whitener(s);
  EXPECT_EQ(W.rank, 3);
  EXPECT_EQ(W.S_inv[1].item<double>(), 0.0);
  auto A = randn({3, 4}, 9);
  auto B = whitened_lowrank(A, W, 2);
  EXPECT_TRUE(at::isfinite(B.R).all().item<bool>());
  EXPECT_NEAR(std::pow(whitened_error(A, B, W), 2), tail_energy(W.apply(A), 2), 1e-12);
  EXPECT_THROW(diagonal_whitener(at::tensor({1.0, -1.0}, at::kDouble)), InvalidArgument);
  EXPECT_THROW(diagonal_whitener(at::zeros({3}, at::kDouble)), InvalidArgument);
}

TEST(WhitenArgsTest, RejectsMismatchedShapes) {
  auto A = randn({5, 6}, 10);
  EXPECT_THROW(whitened_lowrank(A, diagonal_whitener(at::ones({5}, at::kDouble)), 2), InvalidArgument);
  EXPECT_THROW(whitened_lowrank(A, diagonal_whitener(at::ones({6}, at::kDouble)), 6), InvalidArgument);
  EXPECT_THROW(cholesky_whitener(randn({3, 4}, 11)), InvalidArgument);
  EXPECT_THROW(factor_whitener(at::zeros({3, 3}, at::kDouble)), InvalidArgument);
}

TEST(WhitenArgsTest, Float32ByDefault) {
  auto A = randn({5, 6}, 12, at::kFloat);
  auto W = cholesky_whitener(at::eye(6, at::kFloat) * 2);
  auto B = whitened_lowrank(A, W, 2);
  EXPECT_EQ(B.L.scalar_type(), at::kFloat);
  EXPECT_EQ(W.S.scalar_type(), at::kFloat);
}

}  // namespace
}  // namespace lowrank::linalg
