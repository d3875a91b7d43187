// Resetting a parameter's Adam state (Optimizer::prune_state with ratio 1): with reset_step the
// step count t restarts too, so the next update equals the first update of a freshly constructed
// optimizer on the same weights and gradient (float and 8-bit states, AdamW and LowRankAdam);
// without it t keeps running (ReLoRA's reset), and a checkpoint keeps a tensor's own t.
#include <gtest/gtest.h>

#include "lowrank/optim/adamw.h"
#include "lowrank/optim/methods.h"
#include "tests/optim/optim_testing.h"
#include "tests/testing.h"

namespace lowrank::optim {
namespace {

using testing::max_abs_diff;
using testing_support::clone_params;
using testing_support::randn;

// Steps `opt` over `params` with seeded gradients `count` times from seed `seed`.
void run(Optimizer& opt, const NamedTensors& params, int count, uint64_t seed) {
  for (int k = 0; k < count; ++k) {
    for (size_t i = 0; i < params.size(); ++i)
      params[i].second.mutable_grad() = randn(params[i].second.sizes().vec(), seed + 10 * k + i);
    opt.step(1e-2);
  }
}

// One step of `a` and `b` with the same seeded gradients.
void step_both(Optimizer& a, const NamedTensors& a_params, Optimizer& b, const NamedTensors& b_params) {
  for (size_t i = 0; i < a_params.size(); ++i) {
    const at::Tensor g = randn(a_params[i].second.sizes().vec(), 50 + i);
    a_params[i].second.mutable_grad() = g.clone();
    b_params[i].second.mutable_grad() = g.clone();
  }
  a.step(1e-2);
  b.step(1e-2);
}

NamedTensors adamw_params() {
  return {{"big", randn({80, 64}, 1).requires_grad_(true)}, {"small", randn({8, 4}, 2).requires_grad_(true)}};
}

TEST(OptimizerResetTest, AdamWFirstUpdateAfterAResetIsAFreshOptimizersFirst) {
  for (const int bits : {32, 8}) {
    AdamWStateOptions state;
    state.state_bits = bits;
    for (const bool reset_step : {true, false}) {
      const NamedTensors params = adamw_params();
      AdamW opt(params, AdamConfig{}, state);
      run(opt, params, 3, 100);
      for (const auto& [n, p] : params) opt.prune_state(n, 1.0, reset_step);
      const NamedTensors fresh_params = clone_params(params);
      AdamW fresh(fresh_params, AdamConfig{}, state);
      step_both(opt, params, fresh, fresh_params);
      for (size_t i = 0; i < params.size(); ++i) {
        if (reset_step) {
          EXPECT_TRUE(at::equal(params[i].second, fresh_params[i].second)) << bits << " " << params[i].first;
        } else {
          EXPECT_GT(max_abs_diff(params[i].second, fresh_params[i].second), 1e-4) << params[i].first;
        }
      }
    }
  }
}

TEST(OptimizerResetTest, AdamWCheckpointKeepsAResetTensorsOwnStep) {
  const NamedTensors params = adamw_params();
  AdamW opt(params, AdamConfig{});
  run(opt, params, 3, 100);
  opt.prune_state("big", 1.0, /*reset_step=*/true);
  run(opt, params, 1, 200);
  const auto state = opt.state_tensors();
  bool has_step = false;
  for (const auto& [n, t] : state) {
    EXPECT_NE(n, "small.step");  // t = the optimizer's step count: not stored
    if (n == "big.step") {
      has_step = true;
      EXPECT_EQ(t.item<int64_t>(), 1);
    }
  }
  EXPECT_TRUE(has_step);
  const NamedTensors copies = clone_params(params);
  AdamW resumed(copies, AdamConfig{});
  resumed.load_state(state, opt.steps());
  run(opt, params, 2, 300);
  run(resumed, copies, 2, 300);
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(at::equal(params[i].second, copies[i].second)) << i;
}

// GaLore with a projected weight, a plain weight of 4096 elements (8-bit with state_bits 8) and a
// norm. The reset falls before a refresh step, so the fresh optimizer computes the same subspace.
TEST(OptimizerResetTest, LowRankAdamFirstUpdateAfterAResetIsAFreshOptimizersFirst) {
  for (const int bits : {32, 8}) {
    const Json options = {{"rank", 2}, {"update_gap", 3}, {"state_bits", bits}, {"weight_decay", 0.1}};
    const NamedTensors initial = {
        {"l.mlp.w", randn({8, 6}, 1)}, {"embed.weight", randn({64, 64}, 2)}, {"norm.weight", at::ones({6})}};
    const NamedTensors params = clone_params(initial);
    LowRankAdam opt = make_optimizer("galore", params, options);
    run(opt, params, 3, 100);
    for (const auto& [n, p] : params) opt.prune_state(n, 1.0, /*reset_step=*/true);
    EXPECT_EQ(opt.bytes().optimizer_states, 0);
    const NamedTensors fresh_params = clone_params(params);
    LowRankAdam fresh = make_optimizer("galore", fresh_params, options);
    step_both(opt, params, fresh, fresh_params);
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_LE(max_abs_diff(params[i].second, fresh_params[i].second), 1e-7)
          << bits << " " << params[i].first;
  }
  // A partial prune keeps t, and needs moments.
  const NamedTensors params = clone_params({{"l.mlp.w", randn({8, 6}, 1)}});
  LowRankAdam opt = make_optimizer("galore", params, {{"rank", 2}});
  EXPECT_THROW(opt.prune_state("l.mlp.w", 0.5), NotFound);
  EXPECT_THROW(opt.prune_state("nope", 1.0), NotFound);
}

}  // namespace
}  // namespace lowrank::optim
