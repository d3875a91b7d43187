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

// 8-bit states (bitsandbytes' AdamW8bit rule): the oracle is float AdamW (adam_update) whose
// moments are replaced by their block-wise 8-bit round trip after every step, which is what the
// optimizer keeps between steps; a tensor below min_8bit_size stays float32 AdamW bit for bit.
TEST(AdamWTest, EightBitStatesAreFloatAdamWOnRoundTrippedMoments) {
  at::manual_seed(3);
  const at::Tensor big0 = at::randn({80, 64}), small0 = at::randn({8, 4});  // 5120 and 32 elements
  at::Tensor big = big0.clone().requires_grad_(true), small = small0.clone().requires_grad_(true);
  AdamWStateOptions eight;
  eight.state_bits = 8;
  const AdamConfig config;
  AdamW opt({{"big", big}, {"small", small}}, config, eight);
  AdamW plain({{"small", small0.clone().requires_grad_(true)}}, config);
  at::Tensor want = big0.clone();
  AdamState oracle;
  std::vector<at::Tensor> grads;
  for (int step = 0; step < 5; ++step) {
    const at::Tensor gb = at::randn_like(big0), gs = at::randn_like(small0);
    big.mutable_grad() = gb;
    small.mutable_grad() = gs;
    plain.params()[0].second.mutable_grad() = gs.clone();
    opt.step(1e-2);
    plain.step(1e-2);
    adam_update(want, gb, oracle, config, 1e-2);
    oracle.exp_avg = dequantize_blockwise(quantize_blockwise(oracle.exp_avg, true));
    oracle.exp_avg_sq = dequantize_blockwise(quantize_blockwise(oracle.exp_avg_sq, false));
  }
  EXPECT_TRUE(at::equal(big.detach(), want));
  EXPECT_TRUE(at::equal(small.detach(), plain.params()[0].second.detach()));
  // 8-bit moments: one code per value and a float absmax per block of 2048 (3 blocks), twice.
  EXPECT_EQ(opt.memory()["optimizer_states"].get<int64_t>(), 2 * (5120 + 3 * 4) + 2 * 32 * 4);

  // A checkpoint round trip continues bit for bit.
  at::Tensor big2 = big.detach().clone().requires_grad_(true),
             small2 = small.detach().clone().requires_grad_(true);
  AdamW resumed({{"big", big2}, {"small", small2}}, config, eight);
  const auto state = opt.state_tensors();
  bool has_codes = false;
  for (const auto& [name, t] : state) has_codes |= name == "big.exp_avg.codes";
  EXPECT_TRUE(has_codes);
  resumed.load_state(state, opt.steps());
  for (int step = 0; step < 2; ++step) {
    const at::Tensor gb = at::randn_like(big0), gs = at::randn_like(small0);
    big.mutable_grad() = gb;
    small.mutable_grad() = gs;
    big2.mutable_grad() = gb.clone();
    small2.mutable_grad() = gs.clone();
    opt.step(1e-2);
    resumed.step(1e-2);
  }
  EXPECT_TRUE(at::equal(big.detach(), big2.detach()));
  EXPECT_TRUE(at::equal(small.detach(), small2.detach()));
}

TEST(AdamWTest, StateOptionsAreValidated) {
  EXPECT_EQ(AdamWStateOptions::from_json(Json::object(), "o").state_bits, 32);
  EXPECT_EQ(AdamWStateOptions::from_json(Json{{"state_bits", 8}, {"min_8bit_size", 0}}, "o").min_8bit_size,
            0);
  EXPECT_NE(testing::error_of([] {
              AdamWStateOptions::from_json(Json{{"state_bits", 4}}, "o");
            }).find("state_bits must be 8 or 32, got 4"),
            std::string::npos);
  EXPECT_NE(testing::error_of([] {
              AdamWStateOptions::from_json(Json{{"rank", 4}}, "o");
            }).find("\"rank\""),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank::optim
