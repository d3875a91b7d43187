#include "lowrank/linalg/dct.h"

#include <cmath>
#include <numbers>

#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "tests/testing.h"

namespace lowrank::linalg {
namespace {

// The orthonormal DCT-II of x evaluated from its definition, O(n^2) scalar loops.
std::vector<double> dct2_direct(const std::vector<double>& x) {
  const size_t n = x.size();
  std::vector<double> y(n, 0.0);
  for (size_t k = 0; k < n; ++k) {
    double sum = 0;
    for (size_t j = 0; j < n; ++j) sum += x[j] * std::cos(std::numbers::pi * k * (2.0 * j + 1) / (2.0 * n));
    y[k] = sum * std::sqrt((k == 0 ? 1.0 : 2.0) / n);
  }
  return y;
}

TEST(DctTest, BasisIsOrthonormal) {
  for (int64_t n : {1, 2, 7, 16, 33}) {
    auto C = dct2_matrix(n, at::kDouble);
    auto I = at::eye(n, at::kDouble);
    EXPECT_LT(testing::max_abs_diff(at::matmul(C, C.mT()), I), 1e-13) << n;
    EXPECT_LT(testing::max_abs_diff(at::matmul(C.mT(), C), I), 1e-13) << n;
  }
}

TEST(DctTest, MatchesTheDefinitionEvaluatedDirectly) {
  const int64_t n = 11;
  std::vector<double> x(n);
  for (int64_t j = 0; j < n; ++j) x[j] = std::sin(0.7 * j) + 0.1 * j * j;
  auto expected = at::tensor(dct2_direct(x), at::kDouble);
  auto y = at::matmul(dct2_matrix(n, at::kDouble), at::tensor(x, at::kDouble));
  EXPECT_LT(testing::max_abs_diff(y, expected), 1e-12);
  // The float32 default agrees to float precision.
  auto yf = at::matmul(dct2_matrix(n), at::tensor(x, at::kDouble).to(at::kFloat));
  EXPECT_EQ(yf.scalar_type(), at::kFloat);
  EXPECT_LT(testing::max_abs_diff(yf, expected), 1e-4);
}

TEST(DctTest, Dct3IsTheInverse) {
  const int64_t n = 9;
  auto x = at::linspace(-1, 2, n, at::kDouble).pow(3);
  auto C2 = dct2_matrix(n, at::kDouble), C3 = dct3_matrix(n, at::kDouble);
  EXPECT_TRUE(at::equal(C3, C2.mT().contiguous()));
  EXPECT_LT(testing::max_abs_diff(at::matmul(C3, at::matmul(C2, x)), x), 1e-13);
}

TEST(DctTest, TransformOfABasisCosineIsASpike) {
  const int64_t n = 12;
  auto C = dct2_matrix(n, at::kDouble);
  for (int64_t k0 : {0, 1, 5, 11}) {
    auto j = at::arange(n, at::kDouble);
    auto x = at::cos(std::numbers::pi * k0 * (2 * j + 1) / (2.0 * n));
    auto y = at::matmul(C, x);
    auto spike = at::zeros({n}, at::kDouble);
    spike[k0] = k0 == 0 ? std::sqrt(double(n)) : std::sqrt(n / 2.0);
    EXPECT_LT(testing::max_abs_diff(y, spike), 1e-12) << k0;
  }
}

TEST(DctTest, RejectsBadArguments) {
  EXPECT_THROW(dct2_matrix(0), InvalidArgument);
  EXPECT_THROW(dct3_matrix(4, at::kLong), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::linalg
