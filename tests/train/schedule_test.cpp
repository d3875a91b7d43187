// The warmup + cosine schedule (SGDR) against its closed form, the jagged re-warmup against its
// formula, and global-norm clipping against a direct computation.
#include <cmath>
#include <numbers>

#include <gtest/gtest.h>

#include "lowrank/train/schedule.h"
#include "tests/testing.h"

namespace lowrank::train {
namespace {

TEST(LrScheduleTest, WarmupThenCosineMatchesClosedForm) {
  LrSchedule s{.max_lr = 1e-3, .min_lr = 1e-4, .warmup_steps = 10, .total_steps = 110};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(4), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_NEAR(s.at(60), 1e-4 + 0.5 * 9e-4, 1e-15);  // half way: cos(π/2) = 0
  for (int64_t step = 10; step < 110; step += 7) {
    const double expected = 1e-4 + 0.5 * 9e-4 * (1 + std::cos(std::numbers::pi * (step - 10) / 100.0));
    EXPECT_NEAR(s.at(step), expected, 1e-15) << step;
  }
  EXPECT_DOUBLE_EQ(s.at(110), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(500), 1e-4);
}

TEST(JaggedLrFactorTest, RampsAfterEachRestartFromTheFloor) {
  // Before the first restart, past the ramp, and without a ramp or a period: 1.
  for (const int64_t step : {0, 9, 14, 25, 39}) EXPECT_EQ(jagged_lr_factor(step, 10, 4), 1.0) << step;
  EXPECT_EQ(jagged_lr_factor(12, 10, 0), 1.0);
  EXPECT_EQ(jagged_lr_factor(12, 0, 4), 1.0);
  // j / R from 0 (ReLoRA), 0.001 + 0.999·j / R (the refactorisation's recovery).
  EXPECT_EQ(jagged_lr_factor(10, 10, 4), 0.0);
  EXPECT_EQ(jagged_lr_factor(23, 10, 4), 0.75);
  EXPECT_EQ(jagged_lr_factor(20, 10, 4, 0.001), 0.001);
  EXPECT_EQ(jagged_lr_factor(22, 10, 4, 0.001), 0.001 + 0.999 * 2 / 4);
}

TEST(ClipGradNormTest, MatchesDirectComputationAndScales) {
  at::manual_seed(1);
  std::vector<at::Tensor> params{at::zeros({3, 4}).requires_grad_(true), at::zeros({5}).requires_grad_(true)};
  for (auto& p : params) p.mutable_grad() = at::randn_like(p) * 3;
  const at::Tensor flat = at::cat({params[0].grad().flatten(), params[1].grad().flatten()}).to(at::kDouble);
  const double direct = flat.norm().item<double>();
  const double before = clip_grad_norm(params, 1.0);
  EXPECT_NEAR(before, direct, 1e-5);
  const double after =
      at::cat({params[0].grad().flatten(), params[1].grad().flatten()}).to(at::kDouble).norm().item<double>();
  EXPECT_NEAR(after, 1.0, 1e-5);
  // Below the threshold: untouched.
  const double again = clip_grad_norm(params, 10.0);
  EXPECT_NEAR(again, after, 1e-6);
  EXPECT_NEAR(at::cat({params[0].grad().flatten(), params[1].grad().flatten()}).norm().item<double>(), after,
              1e-6);
}

}  // namespace
}  // namespace lowrank::train
