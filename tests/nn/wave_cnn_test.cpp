// The wave encoder–decoder (nn/wave_cnn.h): the CP model equals the dense model of its
// reconstructed kernels (forward and input gradient), the residual form, the scales, post-hoc CP of
// exactly low-rank kernels, and the files.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>

#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/nn/wave_cnn.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

WaveCnnConfig small_config(const std::string& conv) {
  WaveCnnConfig c;
  c.width = 3;
  c.levels = 2;
  c.kernel_size = 3;
  c.set_conv(conv);
  c.input_scale = {0.5, 2.0, 1.5};
  c.output_scale = 0.25;
  return c;
}

TEST(WaveCnnTest, CpModelEqualsTheDenseModelOfItsKernels) {
  const WaveCnn cp = WaveCnn::random(small_config("cp:2"), 3);
  const WaveCnn dense = cp.materialized();  // at::conv2d with einsum(A, B, C, D) kernels
  EXPECT_EQ(dense.config().conv, "dense");
  const at::Tensor x = at::randn({2, 3, 8, 8}).requires_grad_(true);
  const at::Tensor g = at::randn({2, 1, 8, 8});
  const at::Tensor y_cp = cp.forward(x);
  const at::Tensor y_dense = dense.forward(x);
  EXPECT_EQ(y_cp.sizes(), (std::vector<int64_t>{2, 1, 8, 8}));
  EXPECT_LE(testing::max_abs_diff(y_cp, y_dense), 1e-5);
  (y_cp * g).sum().backward();
  const at::Tensor gx_cp = x.grad().clone();
  x.mutable_grad() = at::Tensor();
  (y_dense * g).sum().backward();
  const at::Tensor gx_dense = x.grad();
  EXPECT_LE(testing::max_abs_diff(gx_cp, gx_dense), 1e-5);
  EXPECT_LT(cp.inner_parameter_count(), dense.inner_parameter_count());
}

TEST(WaveCnnTest, PredictsTheChangeFromTheCurrentField) {
  WaveCnn m = WaveCnn::random(small_config("dense"), 1);
  for (auto& [name, t] : m.named_tensors())
    if (name.rfind("head.", 0) == 0) t.zero_();
  const at::Tensor x = at::randn({3, 3, 4, 4});
  // A zero head leaves ŷ = u^t exactly.
  EXPECT_TRUE(at::equal(m.forward(x), x.narrow(1, 1, 1)));
  // The input scales divide the channels: scaling a channel's data and its scale together is a no-op.
  WaveCnn a = WaveCnn::random(small_config("dense"), 2);
  WaveCnn b = a;
  b.set_scales({0.5, 2.0, 3.0}, 0.25);
  at::Tensor xb = x.clone();
  xb.select(1, 2).mul_(2.0);
  EXPECT_LE(testing::max_abs_diff(a.forward(x), b.forward(xb)), 1e-6);
}

TEST(WaveCnnTest, ScalesAreTheRmsOfTheChannelsAndTheChange) {
  at::Tensor inputs = at::zeros({2, 3, 2, 2});
  inputs.select(1, 0).fill_(3.0);
  inputs.select(1, 1).fill_(-1.0);
  inputs.select(1, 2)[0].fill_(1.0);
  inputs.select(1, 2)[1].fill_(7.0);
  const at::Tensor targets = at::full({2, 1, 2, 2}, 1.0);
  const auto [in, out] = wave_scales(inputs, targets);
  EXPECT_NEAR(in[0], 3.0, 1e-12);
  EXPECT_NEAR(in[1], 1.0, 1e-12);
  EXPECT_NEAR(in[2], 5.0, 1e-12);  // sqrt((1 + 49) / 2)
  EXPECT_NEAR(out, 2.0, 1e-12);    // y − u^t = 2 everywhere
}

TEST(WaveCnnTest, PosthocCpRecoversExactlyLowRankKernels) {
  // A dense model whose inner kernels are exactly rank 2: CP-ALS at rank 2 finds them again.
  WaveCnnConfig config = small_config("cp:2");
  config.width = 2;
  const WaveCnn dense = WaveCnn::random(config, 7).materialized();
  std::vector<double> errors;
  const WaveCnn cp = WaveCnn::posthoc_cp(dense, 2, &errors, 500);
  ASSERT_EQ(errors.size(), 4u);
  for (double e : errors) EXPECT_LT(e, 1e-4);
  const at::Tensor x = at::randn({2, 3, 8, 8});
  EXPECT_LE(testing::max_abs_diff(cp.forward(x), dense.forward(x)), 1e-4);
  EXPECT_EQ(cp.config().raw.at("compression").at("method"), "cp_als");
  EXPECT_NE(testing::error_of([&] { WaveCnn::posthoc_cp(cp, 2); }).find("needs a dense wave_cnn"),
            std::string::npos);
}

TEST(WaveCnnTest, SavesAndLoadsAndNamesWhatIsWrong) {
  testing::TempDir tmp;
  const WaveCnn m = WaveCnn::random(small_config("cp:2"), 5);
  m.save(tmp / "m");
  const WaveCnn back = WaveCnn::load(tmp / "m");
  EXPECT_EQ(back.config().rank, 2);
  EXPECT_EQ(back.config().output_scale, 0.25);
  const at::Tensor x = at::randn({1, 3, 8, 8});
  EXPECT_TRUE(at::equal(m.forward(x), back.forward(x)));
  // A tensor of the wrong shape, an unknown tensor, a missing config.
  std::vector<NamedTensor> tensors;
  for (const auto& [name, t] : m.named_tensors())
    tensors.push_back({name, name == "encoder.1.a" ? at::zeros({5, 2}) : t.contiguous()});
  save_safetensors(tmp / "m" / "model.safetensors", tensors);
  EXPECT_NE(testing::error_of([&] { WaveCnn::load(tmp / "m"); }).find("encoder.1.a has shape [5, 2]"),
            std::string::npos);
  std::vector<NamedTensor> with_extra;
  for (const auto& [name, t] : m.named_tensors()) with_extra.push_back({name, t.contiguous()});
  with_extra.push_back({"extra", at::zeros({1})});
  save_safetensors(tmp / "m" / "model.safetensors", with_extra);
  EXPECT_NE(testing::error_of([&] { WaveCnn::load(tmp / "m"); }).find("unknown tensor extra"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { WaveCnn::load(tmp / "none"); }).find("no wave_config.json"),
            std::string::npos);
}

TEST(WaveCnnTest, BadConfigsAndInputsAreRefused) {
  WaveCnnConfig c;
  EXPECT_NE(testing::error_of([&] { c.set_conv("tucker:3"); }).find("expected dense or cp:R"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { c.set_conv("cp:0"); }).find("rank must be >= 1"), std::string::npos);
  c.kernel_size = 4;
  EXPECT_NE(testing::error_of([&] { c.check(); }).find("kernel_size 4"), std::string::npos);
  const WaveCnn m = WaveCnn::random(small_config("dense"), 1);
  EXPECT_NE(testing::error_of([&] {
              m.forward(at::zeros({1, 3, 6, 6}));
            }).find("not divisible by 2^levels = 4"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] {
              m.forward(at::zeros({1, 2, 8, 8}));
            }).find("expects inputs [N, 3, n, n]"),
            std::string::npos);
  Json j = m.config().to_json();
  j["model_type"] = "llama";
  EXPECT_NE(testing::error_of([&] { WaveCnnConfig::from_json(j, "cfg.json"); }).find("is not wave_cnn"),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank::nn
