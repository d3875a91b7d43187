// SMO with WSS2 against scikit-learn's SVC (LIBSVM) on a precomputed kernel (fixture), and the
// KKT conditions of the solution checked directly.
#include <gtest/gtest.h>

#include "lowrank/kernel_methods/svm.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

TEST(SvmTest, MatchesLibsvmDecisionsOnAPrecomputedKernel) {
  const SafetensorsFile f = kernel_testing::fixture("svm.safetensors");
  const at::Tensor k = f.load("k"), labels = f.load("labels"), k_test = f.load("k_test"), cs = f.load("cs");
  for (int64_t i = 0; i < cs.size(0); ++i) {
    const double c = cs[i].item<double>();
    const SvmSolution s = svm_fit(k, labels, {c, 1e-12});
    ASSERT_TRUE(s.converged) << "C = " << c;
    EXPECT_LE(testing::max_abs_diff(svm_decision(s, k_test), f.load("decision_" + std::to_string(i))), 1e-6)
        << "C = " << c;
    EXPECT_NEAR(-s.rho, f.load("intercept_" + std::to_string(i)).item<double>(), 1e-6) << "C = " << c;
    // KKT, directly: 0 ≤ α ≤ C, yᵀα = 0, and y_i f(x_i) ≥ 1 − 1e-6 where α_i = 0, ≤ 1 + 1e-6 where
    // α_i = C, = 1 on the free ones.
    const at::Tensor alpha = s.dual_coef * labels;
    EXPECT_GE(alpha.min().item<double>(), 0.0);
    EXPECT_LE(alpha.max().item<double>(), c);
    EXPECT_NEAR(s.dual_coef.sum().item<double>(), 0.0, 1e-10);
    const at::Tensor margin = labels * svm_decision(s, k);
    for (int64_t t = 0; t < k.size(0); ++t) {
      const double a = alpha[t].item<double>(), m = margin[t].item<double>();
      if (a <= 1e-12)
        EXPECT_GE(m, 1 - 1e-6) << t;
      else if (a >= c - 1e-12)
        EXPECT_LE(m, 1 + 1e-6) << t;
      else
        EXPECT_NEAR(m, 1.0, 1e-6) << t;
    }
  }
}

TEST(SvmTest, RefusesBadLabelsAndC) {
  const at::Tensor k = at::eye(3, at::kDouble);
  kernel_testing::expect_error(
      [&] {
        svm_fit(k, at::tensor({1.0, 0.0, -1.0}, at::kDouble));
      },
      "labels must be -1 or +1");
  kernel_testing::expect_error(
      [&] {
        svm_fit(k, at::tensor({1.0, 1.0, -1.0}, at::kDouble), {0.0});
      },
      "C must be > 0, got 0");
}

}  // namespace
}  // namespace lowrank::kernel_methods
