// KRR and the GP evidence against scikit-learn's KernelRidge and SciPy's multivariate normal
// (fixture), the jitter path, and the SVD ridge path against a direct solve per λ.
#include <gtest/gtest.h>

#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/krr.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

TEST(KrrTest, MatchesKernelRidgeAndTheGaussianLogDensity) {
  const SafetensorsFile f = kernel_testing::fixture("krr.safetensors");
  const at::Tensor x = f.load("x"), y = f.load("y"), x_test = f.load("x_test");
  const KernelSpec rbf{"rbf", 0.8};
  const KrrSolution solution = krr_solve(gram(rbf, x, x), y, 0.1);
  EXPECT_EQ(solution.jitter, 0.0);
  EXPECT_LE(testing::rel_max_error(solution.alpha, f.load("dual_coef")), 1e-10);
  EXPECT_LE(testing::rel_max_error(at::matmul(gram(rbf, x_test, x), solution.alpha), f.load("prediction")),
            1e-10);
  EXPECT_NEAR(solution.log_evidence, f.load("log_evidence").item<double>(),
              1e-10 * std::abs(solution.log_evidence));
  // Two output columns: the evidence adds up.
  const KrrSolution two = krr_solve(gram(rbf, x, x), at::stack({y, y}, 1), 0.1);
  EXPECT_NEAR(two.log_evidence, 2 * solution.log_evidence, 1e-9);
}

TEST(KrrTest, ASingularGramGetsAJitterThatIsReported) {
  // Duplicated points make K singular: λ = 0 needs the jitter.
  const at::Tensor x = normal({4, 2}, 31).repeat({2, 1});
  const at::Tensor k = gram({"rbf", 1.0}, x, x);
  const at::Tensor y = normal({8}, 32);
  const KrrSolution solution = krr_solve(k, y, 0.0);
  EXPECT_GT(solution.jitter, 0.0);
  EXPECT_LE(solution.jitter, 1e-2);
  // The solve is that of K + jitter·I, computed directly.
  const at::Tensor direct = at::linalg_solve(k + solution.jitter * at::eye(8, at::kDouble), y);
  EXPECT_LE(testing::rel_max_error(solution.alpha, direct), 1e-6);
}

TEST(KrrTest, AnIndefiniteMatrixIsRefusedNamingTheLastJitter) {
  const at::Tensor k = at::diag(at::tensor({1.0, -1.0, 1.0}, at::kDouble));
  kernel_testing::expect_error([&] { krr_solve(k, at::ones({3}, at::kDouble), 0.0); },
                               "not positive definite even with a jitter of");
  kernel_testing::expect_error([&] { krr_solve(at::eye(3, at::kDouble), at::ones({3}, at::kDouble), -1.0); },
                               "lambda must be >= 0");
}

TEST(RidgePathTest, EveryLambdaMatchesADirectSolve) {
  for (auto [n, k] : {std::pair<int64_t, int64_t>{12, 5}, {5, 12}}) {
    const at::Tensor phi = normal({n, k}, 33), y = normal({n, 2}, 34);
    const RidgePath path = ridge_path(phi, y);
    for (double lambda : {1e-6, 1e-2, 1.0, 100.0}) {
      const at::Tensor direct = at::linalg_solve(at::matmul(phi.t(), phi) + lambda * at::eye(k, at::kDouble),
                                                 at::matmul(phi.t(), y));
      EXPECT_LE(testing::rel_max_error(ridge_coefficients(path, lambda), direct), 1e-8)
          << n << "x" << k << " " << lambda;
      EXPECT_LE(testing::rel_max_error(ridge_fitted(path, lambda), at::matmul(phi, direct)), 1e-8);
    }
    // λ = 0: the minimum-norm least-squares solution (pseudo-inverse).
    EXPECT_LE(testing::rel_max_error(ridge_coefficients(path, 0.0), at::matmul(at::linalg_pinv(phi), y)),
              1e-10);
  }
}

}  // namespace
}  // namespace lowrank::kernel_methods
