// CP decomposition by ALS (linalg/cp_als.h) against tensorly's parafac from the same initial
// factors, exact recovery of a low-rank tensor, and post-hoc CP convolutions (nn/cp_conv.h).
#include <gtest/gtest.h>

#include "lowrank/core/safetensors.h"
#include "lowrank/linalg/cp_als.h"
#include "lowrank/nn/cp_conv.h"
#include "tests/testing.h"

namespace lowrank::linalg {
namespace {

TEST(CpAlsTest, MatchesTensorlyParafacFromTheSameStart) {
  const SafetensorsFile f = SafetensorsFile::open(testing::fixture("cp_als/parafac.safetensors"));
  for (const std::string name : {"conv_r4", "conv_r8", "lowrank_r3"}) {
    const at::Tensor x = f.load(name + ".x");
    const int64_t rank = f.load(name + ".rank").item<int64_t>();
    std::vector<at::Tensor> init;
    for (int64_t k = 0; k < x.dim(); ++k) init.push_back(f.load(name + ".init" + std::to_string(k)));
    const CpDecomposition cp = cp_als(x, rank, {}, init);
    const double theirs = f.load(name + ".error").item<double>();
    const double ours = (x - cp.reconstruct()).norm().item<double>() / x.norm().item<double>();
    // The issue asks for 1%; from the same start the two ALS runs agree far more closely.
    EXPECT_NEAR(ours, theirs, 0.01 * theirs) << name;
    EXPECT_NEAR(ours, theirs, 1e-6) << name;
    EXPECT_NEAR(static_cast<double>(cp.errors.size()), f.load(name + ".iterations").item<double>(), 1)
        << name;
    EXPECT_NEAR(cp.errors.back(), ours, 1e-12) << name;
  }
}

TEST(CpAlsTest, RecoversAnExactLowRankTensorFromTheSvdStart) {
  at::manual_seed(3);
  std::vector<at::Tensor> truth = {at::randn({7, 3}, at::kDouble), at::randn({5, 3}, at::kDouble),
                                   at::randn({4, 3}, at::kDouble)};
  const at::Tensor x = CpDecomposition{truth, {}}.reconstruct();
  CpOptions options;
  options.max_iters = 500;
  options.tol = 1e-14;
  const CpDecomposition cp = cp_als(x, 3, options);
  EXPECT_LT(cp.errors.back(), 1e-6);
  // Every sweep is a least-squares step in one factor: the error never rises.
  for (size_t i = 1; i < cp.errors.size(); ++i) EXPECT_LE(cp.errors[i], cp.errors[i - 1] + 1e-12) << i;
  EXPECT_NE(testing::error_of([&] { cp_als(x, 0); }).find("CP rank 0"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { cp_als(x, 2, {}, std::vector<at::Tensor>{truth[0]}); }).find("1 factors"),
            std::string::npos);
}

TEST(CpAlsTest, PostHocCpConvReproducesALowRankKernel) {
  const nn::CpConv2d source = nn::CpConv2d::random(5, 6, 3, 2, 9, true, at::kDouble);  // 5 → 6 channels
  double error = 1;
  const nn::CpConv2d fitted = nn::CpConv2d::from_kernel(source.kernel(), source.bias, 2, &error, 500);
  EXPECT_LT(error, 1e-6);
  const at::Tensor x = at::randn({2, 5, 6, 6}, at::kDouble);
  EXPECT_LE(testing::rel_max_error(fitted.forward(x), source.forward(x)), 1e-5);
}

}  // namespace
}  // namespace lowrank::linalg
