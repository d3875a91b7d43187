// AdamW (Loshchilov & Hutter 2019) against libtorch's torch::optim::AdamW.

#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include "lowrank/core/safetensors.h"
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

// 8-bit states (bitsandbytes' AdamW8bit rule). The oracle re-derives each step in float64 from
// the 8-bit state the optimizer kept before it, with bitsandbytes' own dynamic maps (the fixture
// written by bitsandbytes, tests/fixtures/optim/make_fixtures.py) and not this project's
// quantiser: dequantise (map[code]·absmax), one AdamW step on the float moments (which the update
// uses, as bitsandbytes' kernel does), then the kept state must have each block's absmax and, per
// value, a code whose map value is a nearest one to m/absmax (ties within 1e-6 either way). A
// tensor below min_8bit_size stays float32 AdamW bit for bit.
struct Bnb8bitOracle {
  at::Tensor signed_map, unsigned_map;  // float64 [256]
  Bnb8bitOracle() {
    const SafetensorsFile bnb = SafetensorsFile::open(testing::fixture("optim/bnb_blockwise.safetensors"));
    signed_map = bnb.load("signed.map").to(at::kDouble);
    unsigned_map = bnb.load("unsigned.map").to(at::kDouble);
  }
  static const at::Tensor& find(const std::vector<std::pair<std::string, at::Tensor>>& state,
                                const std::string& name) {
    for (const auto& [n, t] : state)
      if (n == name) return t;
    throw NotFound(name);
  }
  // map[code]·absmax of block i/2048, float64, flat.
  static at::Tensor dequantize(const at::Tensor& map, const at::Tensor& codes, const at::Tensor& absmax) {
    const at::Tensor block = at::arange(codes.numel(), at::kLong).div(2048, "floor");
    return map.index_select(0, codes.to(at::kLong)) * absmax.to(at::kDouble).index_select(0, block);
  }
  // The kept codes/absmax of `key` ("<param>.exp_avg") against float64 values `x` [numel].
  void expect_nearest(const std::vector<std::pair<std::string, at::Tensor>>& state, const std::string& key,
                      const at::Tensor& map, const at::Tensor& x) const {
    const at::Tensor codes = find(state, key + ".codes").reshape({-1}), absmax = find(state, key + ".absmax");
    const int64_t n = x.numel(), blocks = (n + 2047) / 2048;
    ASSERT_EQ(absmax.numel(), blocks) << key;
    at::Tensor want_absmax = at::empty({blocks}, at::kDouble);
    for (int64_t b = 0; b < blocks; ++b)
      want_absmax[b] = x.slice(0, b * 2048, std::min(n, (b + 1) * 2048)).abs().max();
    EXPECT_LE(((absmax.to(at::kDouble) - want_absmax).abs() / want_absmax).max().item<double>(), 1e-6) << key;
    const at::Tensor norm = x / want_absmax.index_select(0, at::arange(n, at::kLong).div(2048, "floor"));
    const at::Tensor chosen = (norm - map.index_select(0, codes.to(at::kLong))).abs();
    const at::Tensor best = std::get<0>((norm.unsqueeze(1) - map.unsqueeze(0)).abs().min(1));
    EXPECT_LE((chosen - best).max().item<double>(), 1e-6) << key << ": a code is not a nearest map value";
  }
};

TEST(AdamWTest, EightBitStatesFollowBitsandbytesBlockwiseAdam) {
  const Bnb8bitOracle bnb;
  at::manual_seed(3);
  const at::Tensor big0 = at::randn({80, 64}), small0 = at::randn({8, 4});  // 5120 and 32 elements
  at::Tensor big = big0.clone().requires_grad_(true), small = small0.clone().requires_grad_(true);
  AdamWStateOptions eight;
  eight.state_bits = 8;
  const AdamConfig config;
  const double lr = 1e-2, b1 = config.beta1, b2 = config.beta2;
  AdamW opt({{"big", big}, {"small", small}}, config, eight);
  AdamW plain({{"small", small0.clone().requires_grad_(true)}}, config);
  at::Tensor m = at::zeros({5120}, at::kDouble), v = at::zeros({5120}, at::kDouble);
  for (int step = 0; step < 5; ++step) {
    const auto before = opt.state_tensors();
    if (step > 0) {
      m = Bnb8bitOracle::dequantize(bnb.signed_map, Bnb8bitOracle::find(before, "big.exp_avg.codes"),
                                    Bnb8bitOracle::find(before, "big.exp_avg.absmax"));
      v = Bnb8bitOracle::dequantize(bnb.unsigned_map, Bnb8bitOracle::find(before, "big.exp_avg_sq.codes"),
                                    Bnb8bitOracle::find(before, "big.exp_avg_sq.absmax"));
    }
    const at::Tensor w = big.detach().to(at::kDouble).reshape({-1});
    const at::Tensor gb = at::randn_like(big0), gs = at::randn_like(small0);
    big.mutable_grad() = gb;
    small.mutable_grad() = gs;
    plain.params()[0].second.mutable_grad() = gs.clone();
    opt.step(lr);
    plain.step(lr);
    // AdamW in float64 from the kept state.
    const at::Tensor g = gb.to(at::kDouble).reshape({-1});
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double bc1 = 1 - std::pow(b1, step + 1), bc2 = 1 - std::pow(b2, step + 1);
    const at::Tensor want =
        w * (1 - lr * config.weight_decay) - lr / bc1 * m / (v.sqrt() / std::sqrt(bc2) + config.eps);
    EXPECT_LE(testing::max_abs_diff(big.detach().to(at::kDouble).reshape({-1}), want), 1e-6) << step;
    const auto after = opt.state_tensors();
    bnb.expect_nearest(after, "big.exp_avg", bnb.signed_map, m);
    bnb.expect_nearest(after, "big.exp_avg_sq", bnb.unsigned_map, v);
  }
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
