// Block-wise dynamic 8-bit quantisation (Dettmers et al. 2022): the map, codes, absmax and
// dequantised values against bitsandbytes' own (a fixture written by its CPU path,
// tests/fixtures/optim/make_fixtures.py), the round-trip error relative to each block's absmax,
// the finer grid near zero, and the 8-bit option of LowRankAdam (bitsandbytes' min_8bit_size rule
// for projected and plain states, state bytes, resume).
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "lowrank/core/safetensors.h"
#include "lowrank/optim/methods.h"
#include "lowrank/optim/quantized_state.h"
#include "tests/testing.h"

namespace lowrank::optim {
namespace {

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::kFloat);
}

TEST(QuantizedStateTest, DynamicMapsHave256SortedValuesWithZeroAndOne) {
  for (bool is_signed : {true, false}) {
    const at::Tensor map = dynamic_map(is_signed);
    ASSERT_EQ(map.numel(), 256);
    EXPECT_TRUE(at::equal(map, std::get<0>(map.sort())));
    EXPECT_EQ(map.max().item<float>(), 1.0f);
    EXPECT_EQ(map.eq(0).sum().item<int64_t>(), 1);
    if (is_signed) {
      EXPECT_LT(map.min().item<float>(), -0.99f);
    } else {
      EXPECT_EQ(map.min().item<float>(), 0.0f);
    }
  }
}

// bitsandbytes 0.50.2 on the CPU: create_dynamic_map, quantize_blockwise(blocksize=2048) and
// dequantize_blockwise of 2500 values (a full and a partial block) per map. Exact equality: the
// map values, the absmax and the dequantised products are the same float32 operations.
TEST(QuantizedStateTest, MatchesBitsandbytesBlockwiseCodes) {
  const SafetensorsFile bnb = SafetensorsFile::open(testing::fixture("optim/bnb_blockwise.safetensors"));
  EXPECT_EQ(bnb.metadata().at("blocksize"), "2048");
  for (const bool is_signed : {true, false}) {
    const std::string kind = is_signed ? "signed" : "unsigned";
    EXPECT_TRUE(at::equal(dynamic_map(is_signed), bnb.load(kind + ".map"))) << kind;
    const QuantizedTensor q = quantize_blockwise(bnb.load(kind + ".input"), is_signed);
    const at::Tensor want_codes = bnb.load(kind + ".codes");
    EXPECT_EQ(q.codes.ne(want_codes).sum().item<int64_t>(), 0) << kind << ": codes differ";
    EXPECT_TRUE(at::equal(q.absmax, bnb.load(kind + ".absmax"))) << kind;
    EXPECT_TRUE(at::equal(dequantize_blockwise(q), bnb.load(kind + ".dequant"))) << kind;
  }
}

TEST(QuantizedStateTest, RoundTripErrorIsSmallRelativeToEachBlocksAbsmax) {
  const at::Tensor x = randn({50, 100}, 1) * at::linspace(0.01, 10, 100);  // columns of very different scale
  const QuantizedTensor q = quantize_blockwise(x, /*is_signed=*/true);
  EXPECT_EQ(q.codes.scalar_type(), at::kByte);
  EXPECT_EQ(q.absmax.numel(), 3);  // 5000 values, blocks of 2048
  EXPECT_EQ(q.bytes(), 5000 + 3 * 4);
  const at::Tensor y = dequantize_blockwise(q);
  EXPECT_EQ(y.sizes(), x.sizes());
  const at::Tensor flat_x = x.reshape({-1}), flat_y = y.reshape({-1});
  for (int64_t b = 0; b < 3; ++b) {
    const at::Tensor xb = flat_x.slice(0, b * 2048, std::min<int64_t>((b + 1) * 2048, 5000));
    const at::Tensor yb = flat_y.slice(0, b * 2048, std::min<int64_t>((b + 1) * 2048, 5000));
    const double absmax = xb.abs().max().item<double>();
    EXPECT_NEAR(q.absmax[b].item<double>(), absmax, 1e-6 * absmax);
    EXPECT_LE((xb - yb).abs().max().item<double>(), 0.01 * absmax) << b;
  }
  // Non-negative values with the unsigned map (second moments).
  const at::Tensor v = x * x;
  EXPECT_LE((dequantize_blockwise(quantize_blockwise(v, false)) - v).abs().max().item<double>(),
            0.01 * v.max().item<double>());
  EXPECT_THROW(quantize_blockwise(x, false), InvalidArgument);
}

TEST(QuantizedStateTest, SmallValuesKeepRelativePrecision) {
  const at::Tensor x = at::tensor({1.0f, 1e-3f, -2e-4f, 5e-2f, 0.0f});
  const at::Tensor y = dequantize_blockwise(quantize_blockwise(x, true));
  EXPECT_NEAR(y[1].item<double>(), 1e-3, 1e-4);
  EXPECT_NEAR(y[2].item<double>(), -2e-4, 6e-5);  // the signed map has 4 steps in [1e-4, 1e-3]
  EXPECT_NEAR(y[3].item<double>(), 5e-2, 5e-3);
  EXPECT_EQ(y[4].item<float>(), 0.0f);
  EXPECT_EQ(y[0].item<float>(), 1.0f);
}

TEST(QuantizedStateTest, EightBitGaLoreKeepsCodesAndAbsmaxAndResumesExactly) {
  const NamedTensors params = {{"l.mlp.w", randn({8, 6}, 1).requires_grad_(true)},
                               {"norm.weight", at::ones({6}).requires_grad_(true)}};
  const Json options = {{"rank", 2}, {"state_bits", 8}, {"min_8bit_size", 0}, {"update_gap", 2}};
  LowRankAdam opt = make_optimizer("galore", params, options);
  for (int t = 0; t < 3; ++t) {
    for (const auto& [n, p] : params) p.mutable_grad() = randn(p.sizes().vec(), 10 + t);
    opt.step(0.01);
  }
  // R [8, 2]: 16 one-byte codes + one float absmax per moment; the norm (6 elements) is 8-bit
  // too, as min_8bit_size is 0 here.
  EXPECT_EQ(opt.bytes().optimizer_states, 2 * (16 + 4) + 2 * (6 + 4));
  bool has_codes = false;
  for (const auto& [n, t] : opt.state_tensors()) {
    EXPECT_NE(n, "l.mlp.w.exp_avg");
    has_codes |= n == "l.mlp.w.exp_avg.codes";
  }
  EXPECT_TRUE(has_codes);
  NamedTensors copies;
  for (const auto& [n, p] : params) copies.emplace_back(n, p.detach().clone().requires_grad_(true));
  LowRankAdam resumed = make_optimizer("galore", copies, options);
  resumed.load_state(opt.state_tensors(), opt.steps());
  for (int t = 0; t < 3; ++t) {
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor g = randn(params[i].second.sizes().vec(), 20 + t);
      params[i].second.mutable_grad() = g.clone();
      copies[i].second.mutable_grad() = g.clone();
    }
    opt.step(0.01);
    resumed.step(0.01);
  }
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(at::equal(params[i].second, copies[i].second)) << i;
}

// bitsandbytes' rule (its 8-bit Adam, and GaLoreAdamW8bit on it): every state of at least
// min_8bit_size = 4096 elements is 8-bit, a projected weight's R and a plain parameter's alike. A
// plain parameter then steps exactly as AdamW with state_bits 8 (one rule for both optimizers);
// eight_bit_plain false keeps plain states float32 as before.
TEST(QuantizedStateTest, EightBitRuleCoversPlainParametersOfAtLeastMin8BitSize) {
  const NamedTensors initial = {{"l.mlp.w", randn({160, 32}, 1)},              // R [160, 4]: 640, float
                                {"l.self_attn.w", randn({32, 2048}, 2)},       // R [4, 2048]: 8192, 8-bit
                                {"embed_tokens.weight", randn({128, 32}, 3)},  // 4096: 8-bit
                                {"norm.weight", at::ones({32})}};              // 32: float
  for (const bool plain : {true, false}) {
    NamedTensors params;
    for (const auto& [n, p] : initial) params.emplace_back(n, p.clone().requires_grad_(true));
    LowRankAdam opt =
        make_optimizer("galore", params, {{"rank", 4}, {"state_bits", 8}, {"eight_bit_plain", plain}});
    EXPECT_EQ(opt.config().min_8bit_size, 4096);
    const at::Tensor embed0 = initial[2].second.clone().requires_grad_(true);
    AdamWStateOptions eight;
    eight.state_bits = 8;
    AdamW reference({{"embed_tokens.weight", embed0}}, opt.config().adam,
                    plain ? eight : AdamWStateOptions{});
    for (int t = 0; t < 3; ++t) {
      for (const auto& [n, p] : params) p.mutable_grad() = randn(p.sizes().vec(), 10 + t);
      embed0.mutable_grad() = params[2].second.grad().clone();
      opt.step(0.01);
      reference.step(0.01);
    }
    std::set<std::string> names;
    for (const auto& [n, t] : opt.state_tensors()) names.insert(n);
    EXPECT_TRUE(names.count("l.mlp.w.exp_avg"));
    EXPECT_TRUE(names.count("l.self_attn.w.exp_avg.codes"));
    EXPECT_EQ(names.count("embed_tokens.weight.exp_avg.codes"), plain ? 1u : 0u);
    EXPECT_EQ(names.count("embed_tokens.weight.exp_avg"), plain ? 0u : 1u);
    EXPECT_TRUE(names.count("norm.weight.exp_avg"));
    EXPECT_TRUE(at::equal(params[2].second, embed0)) << "plain " << plain;
    const int64_t float_states = 2 * 4 * (640 + 32), r8 = 2 * (8192 + 4 * 4);
    const int64_t embed = plain ? 2 * (4096 + 2 * 4) : 2 * 4 * 4096;
    EXPECT_EQ(opt.bytes().optimizer_states, float_states + r8 + embed);
  }
}

}  // namespace
}  // namespace lowrank::optim
