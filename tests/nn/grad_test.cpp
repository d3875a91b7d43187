// nn/model autograd: the gradient of a scalar of the logits with respect to model tensors
// (embedding, norms, projections, biases, lm_head) against central finite differences in float64,
// with and without left padding.
#include <gtest/gtest.h>

#include <ATen/core/grad_mode.h>

#include "lowrank/nn/model.h"
#include "tests/nn/reference.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

TEST(GradTest, ForwardGradientMatchesFiniteDifferences) {
  testing::TinySpec s;
  s.arch = "Qwen2ForCausalLM";
  s.model_type = "qwen2";
  s.vocab = 11;
  s.hidden = 8;
  s.intermediate = 12;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 2;
  Json config = testing::tiny_config(s);
  config["use_sliding_window"] = true;
  config["sliding_window"] = 3;
  config["max_window_layers"] = 1;
  const ModelConfig c = ModelConfig::from_json(config, "test config");
  Model model = Model::random(c, 11, {at::kDouble, at::kCPU});

  // Random biases and norms (random() initialises them to 0 and 1).
  at::manual_seed(3);
  for (auto& [name, t] : model.named_tensors())
    if (name.ends_with("bias") || name.ends_with("norm.weight")) t.copy_(at::randn_like(t).mul(0.3).add(t));

  const at::Tensor ids = at::tensor({0, 0, 4, 7, 1, 9, 3, 5, 10, 2, 6, 8}, at::kLong).view({2, 6});
  const at::Tensor mask = at::tensor({0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, at::kLong).view({2, 6});
  const at::Tensor probe = at::randn({2, 6, s.vocab}, at::kDouble);
  ForwardOptions o;
  o.attention_mask = mask;
  // Padding positions are excluded from the scalar (their outputs are meaningless).
  const at::Tensor keep = mask.to(at::kDouble).unsqueeze(-1);
  auto loss = [&] { return (model.forward(ids, o) * probe * keep).sum(); };

  std::vector<std::pair<std::string, at::Tensor>> checked;
  for (auto& [name, t] : model.named_tensors()) {
    for (const char* want : {"embed_tokens", "layers.0.input_layernorm", "layers.0.self_attn.q_proj.weight",
                             "layers.1.self_attn.k_proj.bias", "layers.1.self_attn.v_proj.weight",
                             "layers.1.mlp.down_proj", "model.norm", "lm_head"})
      if (name.find(want) != std::string::npos) checked.emplace_back(name, t);
  }
  ASSERT_EQ(checked.size(), 8u);
  for (auto& [name, t] : checked) t.requires_grad_(true);
  loss().backward();

  const double eps = 1e-6;
  for (auto& [name, t] : checked) {
    ASSERT_TRUE(t.grad().defined()) << name;
    const at::Tensor flat_grad = t.grad().reshape({-1});
    for (int64_t i = 0; i < std::min<int64_t>(t.numel(), 6); ++i) {
      const int64_t idx = (i * 7919) % t.numel();
      at::NoGradGuard no_grad;
      at::Tensor flat = t.view({-1});
      const double orig = flat[idx].item<double>();
      flat[idx] = orig + eps;
      const double up = loss().item<double>();
      flat[idx] = orig - eps;
      const double down = loss().item<double>();
      flat[idx] = orig;
      const double fd = (up - down) / (2 * eps);
      const double ad = flat_grad[idx].item<double>();
      EXPECT_NEAR(ad, fd, 1e-6 * std::max(1.0, std::abs(fd))) << name << "[" << idx << "]";
    }
  }
}

}  // namespace
}  // namespace lowrank::nn
