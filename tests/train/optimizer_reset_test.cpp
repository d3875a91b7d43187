// The optimizer resets in the parameterisations' hooks: the low-rank BA refactorisation resets
// every parameter's moments and step count, as the authors' code rebuilds the optimizer, so the
// first update after it equals a freshly constructed AdamW's first update on the same weights and
// gradients; SST's redraw zeroes the active vectors' moments and keeps their step count. Both
// follow the `reset_step` option where it is given.
#include <gtest/gtest.h>

#include "lowrank/optim/adamw.h"
#include "lowrank/train/parameterization.h"
#include "lowrank/train/trainer.h"
#include "tests/testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::train {
namespace {

using testing_support::lm_gradients;
using testing_support::lm_step;
using testing_support::make_trainable;
using testing_support::pattern_stream;
using testing_support::tiny_model;

// Whether the first update after a refactorisation equals a rebuilt AdamW's first update.
bool refactorisation_restarts_adam(const Json& reset_option) {
  nn::Model model = tiny_model(8);
  Json options = {{"rank", 4}, {"refactor_every", 2}, {"recovery_steps", 1}};
  if (!reset_option.is_null()) options["reset_step"] = reset_option;
  AppliedParameterization applied = apply_parameterization(model, "lowrank", options, 3);
  TrainTarget& target = applied.target;
  make_trainable(target);
  optim::AdamW optimizer(target.params, optim::AdamConfig{});
  const TokenStream data = pattern_stream(200);
  WindowSampler sampler(2, data.size, 9);
  for (int64_t step = 0; step < 2; ++step) {
    lm_step(model, data, sampler, optimizer, 1e-2);
    target.after_update(step, optimizer);  // step 1: refactorise and reset
  }
  // A rebuilt optimizer over copies of the refactorised weights, the same gradients.
  lm_gradients(model, data, sampler, optimizer);
  std::vector<std::pair<std::string, at::Tensor>> copies;
  for (const auto& [n, p] : target.params) {
    at::Tensor c = p.detach().clone().requires_grad_(true);
    if (p.grad().defined()) c.mutable_grad() = p.grad().clone();
    copies.emplace_back(n, c);
  }
  optim::AdamW rebuilt(copies, optim::AdamConfig{});
  optimizer.step(1e-2);
  rebuilt.step(1e-2);
  for (size_t i = 0; i < copies.size(); ++i)
    if (!at::equal(target.params[i].second, copies[i].second)) return false;
  return true;
}

TEST(OptimizerResetTest, LowRankRefactorisationRestartsAdamAsARebuiltOptimizer) {
  EXPECT_TRUE(refactorisation_restarts_adam(Json()));  // the default: the authors' rebuilt AdamW
  EXPECT_TRUE(refactorisation_restarts_adam(true));
  // Moments zeroed but t kept: the bias correction of step 3 differs from a first step's.
  EXPECT_FALSE(refactorisation_restarts_adam(false));
}

// The active vectors' moment tensors after one step and a redraw, and whether their step count
// was restarted (a per-tensor ".step" entry: t differs from the optimizer's count).
std::pair<bool, bool> sst_redraw(const Json& reset_option) {
  nn::Model model = tiny_model(6);
  Json options = {{"rank", 3}, {"reset_every", 4}, {"resample_every", 1}, {"restart_warmup", 1}};
  if (!reset_option.is_null()) options["reset_step"] = reset_option;
  AppliedParameterization applied = apply_parameterization(model, "sst", options, 4);
  TrainTarget& target = applied.target;
  make_trainable(target);
  optim::AdamW optimizer(target.params, optim::AdamConfig{});
  const TokenStream data = pattern_stream(200);
  WindowSampler sampler(1, data.size, 9);
  lm_step(model, data, sampler, optimizer, 1e-2);
  target.after_update(0, optimizer);  // a redraw
  bool zeroed = false, restarted = false;
  for (const auto& [n, t] : optimizer.state_tensors()) {
    if (n.find("sst_u_active") == std::string::npos) continue;
    if (n.ends_with(".step")) {
      restarted = true;
      continue;
    }
    zeroed = true;
    EXPECT_EQ(t.abs().max().item<double>(), 0.0) << n;
  }
  return {zeroed, restarted};
}

TEST(OptimizerResetTest, SstRedrawZeroesTheActiveMomentsAndKeepsTheirStepCount) {
  EXPECT_EQ(sst_redraw(Json()), std::make_pair(true, false));  // the default keeps t
  EXPECT_EQ(sst_redraw(true), std::make_pair(true, true));
}

}  // namespace
}  // namespace lowrank::train
