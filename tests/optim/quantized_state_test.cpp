// Block-wise dynamic 8-bit quantisation (Dettmers et al. 2022): the map's construction, the
// round-trip error relative to each block's absmax, the finer grid near zero, and the 8-bit
// option of LowRankAdam (state bytes, resume).
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

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
  // R [8, 2]: 16 one-byte codes + one float absmax per moment; the norm stays float32 AdamW.
  EXPECT_EQ(opt.bytes().optimizer_states, 2 * (16 + 4) + 2 * 6 * 4);
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

}  // namespace
}  // namespace lowrank::optim
