// Gram matrices against scikit-learn (fixture: tests/fixtures/kernels/make.py) and the arc-cosine
// kernels against Monte Carlo over Gaussian directions.
#include <gtest/gtest.h>

#include "lowrank/kernel_methods/gram.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

TEST(GramTest, MatchesScikitLearnKernels) {
  const SafetensorsFile f = kernel_testing::fixture("gram.safetensors");
  const at::Tensor x = f.load("x"), y = f.load("y");
  EXPECT_LE(testing::rel_max_error(gram({"rbf", 0.8}, x, y), f.load("rbf")), 1e-12);
  EXPECT_LE(testing::rel_max_error(gram({"laplace", 1.3}, x, y), f.load("laplace")), 1e-12);
  EXPECT_LE(testing::rel_max_error(gram({"matern", 0.9, 0.5}, x, y), f.load("matern_05")), 1e-12);
  EXPECT_LE(testing::rel_max_error(gram({"matern", 0.9, 1.5}, x, y), f.load("matern_15")), 1e-12);
  EXPECT_LE(testing::rel_max_error(gram({"matern", 0.9, 2.5}, x, y), f.load("matern_25")), 1e-12);
  // On the diagonal (r = 0) every stationary kernel is exactly 1.
  for (const char* name : {"rbf", "laplace", "matern"})
    EXPECT_LE(testing::max_abs_diff(gram({name, 0.9}, x, x).diagonal(), at::ones({7}, at::kDouble)), 1e-15)
        << name;
}

TEST(GramTest, ArcCosineKernelsAreTwiceTheReluAndStepExpectations) {
  // arccos1 = 2 E[ReLU(gᵀx) ReLU(gᵀy)], arccos0 = 2 E[1(gᵀx > 0) 1(gᵀy > 0)] (Cho & Saul's
  // definition), estimated with 2·10⁵ directions; 4 standard errors.
  const at::Tensor x = normal({3, 4}, 21), y = normal({2, 4}, 22);
  const int64_t m = 200000;
  const at::Tensor gx = at::matmul(normal({m, 4}, 23), x.t()), gy = at::matmul(normal({m, 4}, 23), y.t());
  for (int degree : {0, 1}) {
    const at::Tensor fx = degree == 0 ? gx.gt(0).to(at::kDouble) : at::relu(gx);
    const at::Tensor fy = degree == 0 ? gy.gt(0).to(at::kDouble) : at::relu(gy);
    const at::Tensor samples = 2 * fx.unsqueeze(2) * fy.unsqueeze(1);  // [m, 3, 2]
    const at::Tensor mean = samples.mean(0), se = samples.std(0) / std::sqrt(static_cast<double>(m));
    const at::Tensor exact = gram({degree == 0 ? "arccos0" : "arccos1"}, x, y);
    EXPECT_TRUE((exact - mean).abs().le(4 * se + 1e-12).all().item<bool>()) << "degree " << degree << "\n"
                                                                            << exact << "\n"
                                                                            << mean;
  }
}

TEST(GramTest, RefusesUnknownKernelsAndBadParameters) {
  const at::Tensor x = normal({3, 2}, 24);
  kernel_testing::expect_error([&] { gram({"cosine"}, x, x); }, "unknown kernel \"cosine\"");
  kernel_testing::expect_error([&] { gram({"rbf", 0.0}, x, x); }, "bandwidth must be > 0");
  kernel_testing::expect_error([&] { gram({"matern", 1.0, 2.0}, x, x); }, "nu must be 0.5, 1.5 or 2.5");
  EXPECT_THROW(gram({"rbf"}, x, normal({3, 4}, 25)), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::kernel_methods
