// AdamW (Loshchilov & Hutter 2019) against libtorch's torch::optim::AdamW.

#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include "lowrank/optim/adamw.h"
#include "tests/testing.h"

namespace lowrank::optim {
namespace {

TEST(AdamWTest, MatchesLibtorchAdamWOverSeveralSteps) {
  at::manual_seed(0);
  std::vector<at::Tensor> ours, theirs;
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (int i = 0; i < 3; ++i) {
    at::Tensor p = at::randn({4 + i, 3}, at::kFloat);
    ours.push_back(p.clone().requires_grad_(true));
    theirs.push_back(p.clone().requires_grad_(true));
    named.emplace_back("p" + std::to_string(i), ours.back());
  }
  AdamConfig config;
  config.beta1 = 0.9;
  config.beta2 = 0.95;
  config.eps = 1e-8;
  config.weight_decay = 0.1;
  const double lr = 1e-2;
  AdamW mine(named, config);
  torch::optim::AdamW reference(
      theirs,
      torch::optim::AdamWOptions(lr).betas({config.beta1, config.beta2}).eps(config.eps).weight_decay(0.1));
  for (int step = 0; step < 6; ++step) {
    for (size_t i = 0; i < ours.size(); ++i) {
      at::Tensor g = at::randn_like(ours[i]);
      ours[i].mutable_grad() = g.clone();
      theirs[i].mutable_grad() = g.clone();
    }
    mine.step(lr);
    reference.step();
  }
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_LT(testing::max_abs_diff(ours[i], theirs[i]), 1e-7) << i;
}

TEST(AdamWTest, WithoutBiasCorrectionFirstStepIsClosedForm) {
  at::Tensor p = at::ones({3}, at::kDouble);
  at::Tensor g = at::tensor({0.5, -2.0, 1.0}, at::kDouble);
  AdamConfig c;
  c.bias_correction = false;
  c.weight_decay = 0.5;
  AdamState state;
  const double lr = 0.1;
  adam_update(p, g, state, c, lr);
  // θ = 1·(1 − lr·λ) − lr · (1−β1)g / (sqrt((1−β2)g²) + ε)
  at::Tensor expected =
      (1 - lr * c.weight_decay) - lr * (1 - c.beta1) * g / ((1 - c.beta2) * g * g).sqrt().add(c.eps);
  EXPECT_LT(testing::max_abs_diff(p, expected), 1e-15);
  EXPECT_EQ(state.step, 1);
}

TEST(AdamWTest, OneDimensionalTensorsAreNotDecayed) {
  at::Tensor w = at::ones({2, 2}).requires_grad_(true), b = at::ones({2}).requires_grad_(true);
  AdamConfig c;
  c.weight_decay = 0.5;
  AdamW opt({{"w", w}, {"b", b}}, c);
  w.mutable_grad() = at::zeros_like(w);
  b.mutable_grad() = at::zeros_like(b);
  opt.step(0.1);
  EXPECT_NEAR(w[0][0].item<double>(), 0.95, 1e-7);  // zero gradient: only the decay moves it
  EXPECT_EQ(b[0].item<double>(), 1.0);
}

}  // namespace
}  // namespace lowrank::optim
