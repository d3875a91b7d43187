// SoRA against closed forms computed here from the raw tensors: the gated forward, the proximal
// step against soft-thresholding done by hand (the default: the official constant threshold λ,
// 1e-3, whatever the step's learning rate; the option: lr·λ), finalize() against the gated adapter (same
// forward, rank = number of non-zero gates), the PEFT LORA file it saves reloaded with identical
// logits, the unfinalized LOWRANK_SORA file, and a short training run.
#include <gtest/gtest.h>

#include <vector>

#include "lowrank/adapt/lora.h"
#include "lowrank/adapt/sora.h"
#include "lowrank/core/safetensors.h"
#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;
using testing::max_abs_diff;

std::shared_ptr<SoraAdapter> layer_at(const AttachedAdapter& a, const std::string& module) {
  for (const auto& [m, layer] : a.layers)
    if (m == module) return std::dynamic_pointer_cast<SoraAdapter>(layer);
  ADD_FAILURE() << "no layer on " << module;
  return nullptr;
}

// T_t(v) elementwise with scalar arithmetic.
at::Tensor soft_threshold_by_hand(const at::Tensor& v, double t) {
  at::Tensor out = v.detach().clone();
  auto acc = out.accessor<float, 1>();
  for (int64_t i = 0; i < out.size(0); ++i) {
    const float x = acc[i];
    acc[i] = x > t ? static_cast<float>(x - t) : x < -t ? static_cast<float>(x + t) : 0.0f;
  }
  return out;
}

TEST(SoraTest, ForwardIsTheGatedLowRankProduct) {
  nn::Model model = tiny();
  const std::string module = "model.layers.1.mlp.down_proj";
  nn::LinearSlot& slot = model.slot(module);
  const at::Tensor x = input(slot.in_features());
  const at::Tensor base_y = slot.forward(x);
  AttachedAdapter a = create_adapter(model, "s", config_for("sora", 4, 8), 3);
  EXPECT_TRUE(slot.forward(x).equal(base_y));  // B = 0
  std::shared_ptr<SoraAdapter> layer = layer_at(a, module);
  EXPECT_EQ(layer->active_ranks(), 4);  // g ~ N(0, 1)
  // Per layer: q and v 16→16 (4·16 + 16·4 + 4 each), down 32→16 (4·32 + 16·4 + 4); 2 layers.
  EXPECT_EQ(a.num_parameters(), 2 * (132 + 132 + 196));
  randomize(a, 1);
  const at::Tensor w =
      slot.base().dense_weight() + 2.0 * at::matmul(layer->b(), layer->gate().unsqueeze(1) * layer->a());
  EXPECT_LE(max_abs_diff(slot.forward(x), at::matmul(x, w.t())), 1e-5);
  EXPECT_LE(max_abs_diff(layer->merged_weight(slot.base()), w), 1e-6);
}

TEST(SoraTest, ProximalStepIsSoftThresholdingOfTheGateOnly) {
  for (const char* mode : {"lr", "constant"}) {
    nn::Model model = tiny();
    AdapterConfig c = config_for("sora", 6, 8);
    c.options["sparse_lambda"] = 0.5;
    c.options["sparse_threshold"] = mode;
    AttachedAdapter a = create_adapter(model, "s", c, 3);
    randomize(a, 2);
    std::shared_ptr<SoraAdapter> layer = layer_at(a, "model.layers.0.self_attn.q_proj");
    {
      at::NoGradGuard g;
      layer->gate().copy_(at::tensor({0.9f, -0.04f, 0.03f, -0.7f, 0.0f, 0.06f}));
    }
    const at::Tensor gate = layer->gate().clone(), A = layer->a().clone(), B = layer->b().clone();
    const double lr = 0.1;
    const double t = std::string(mode) == "lr" ? lr * 0.5 : 0.5;
    layer->after_step(0, lr);
    EXPECT_LE(max_abs_diff(layer->gate(), soft_threshold_by_hand(gate, t)), 1e-7) << mode;
    EXPECT_TRUE(layer->a().equal(A));
    EXPECT_TRUE(layer->b().equal(B));
    EXPECT_EQ(layer->active_ranks(), std::string(mode) == "lr" ? 3 : 2) << mode;
  }
  // λ = 0 leaves the gate alone.
  nn::Model model = tiny();
  AdapterConfig c = config_for("sora");
  c.options["sparse_lambda"] = 0.0;
  AttachedAdapter a = create_adapter(model, "s", c, 3);
  const at::Tensor before = a.layers.front().second->parameters()[2].second.clone();
  a.layers.front().second->after_step(0, 1.0);
  EXPECT_TRUE(a.layers.front().second->parameters()[2].second.equal(before));
}

TEST(SoraTest, DefaultThresholdIsTheOfficialConstantLambda) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "s", config_for("sora", 6, 8), 3);
  std::shared_ptr<SoraAdapter> layer = layer_at(a, "model.layers.0.self_attn.v_proj");
  {
    at::NoGradGuard g;
    layer->gate().copy_(at::tensor({0.5f, -0.0004f, 0.0015f, -0.0021f, 0.0f, -0.3f}));
  }
  const at::Tensor gate = layer->gate().clone();
  // Two steps at very different rates shrink by the same λ = 1e-3 each (sparse_lambda_2's default).
  layer->after_step(0, 1e-5);
  EXPECT_LE(max_abs_diff(layer->gate(), soft_threshold_by_hand(gate, 1e-3)), 1e-7);
  layer->after_step(1, 0.5);
  EXPECT_LE(max_abs_diff(layer->gate(), soft_threshold_by_hand(soft_threshold_by_hand(gate, 1e-3), 1e-3)),
            1e-7);
  EXPECT_EQ(layer->active_ranks(), 3);  // 0.5, -0.0021 -> -0.0001, -0.3
  // A bad mode names the option and the value.
  AdapterConfig c = config_for("sora");
  c.options["sparse_threshold"] = "linear";
  nn::Model other = tiny();
  const std::string message = testing::error_of([&] { create_adapter(other, "s", c, 3); });
  EXPECT_NE(message.find("sparse_threshold"), std::string::npos) << message;
  EXPECT_NE(message.find("linear"), std::string::npos) << message;
}

TEST(SoraTest, FinalizeGivesTheSameForwardWithRankEqualToTheNonZeroGates) {
  nn::Model model = tiny();
  AdapterConfig c = config_for("sora", 4, 8);
  AttachedAdapter a = create_adapter(model, "s", c, 3);
  randomize(a, 4);
  // Zero a different number of gates per layer (0 to 3 of 4).
  int k = 0;
  for (auto& [module, layer] : a.layers) {
    auto sora = std::dynamic_pointer_cast<SoraAdapter>(layer);
    at::NoGradGuard g;
    sora->gate().slice(0, 0, k % 4).zero_();
    ++k;
  }
  const at::Tensor ids = token_ids();
  const at::Tensor gated = logits_of(model, ids);
  for (auto& [module, layer] : a.layers) {
    auto sora = std::dynamic_pointer_cast<SoraAdapter>(layer);
    auto lora = std::dynamic_pointer_cast<LoraAdapter>(sora->finalize());
    ASSERT_NE(lora, nullptr);
    EXPECT_EQ(lora->rank(), at::count_nonzero(sora->gate()).item<int64_t>()) << module;
    EXPECT_DOUBLE_EQ(lora->scaling(), 2.0);
    const nn::LinearSlot& slot = model.slot(module);
    EXPECT_LE(max_abs_diff(lora->delta_weight(slot.base()), sora->delta_weight(slot.base())), 1e-6) << module;
    const at::Tensor x = input(slot.in_features());
    EXPECT_LE(max_abs_diff(lora->delta(x, {}, slot.base()), sora->delta(x, {}, slot.base())), 1e-5) << module;
  }

  testing::TempDir dir;
  const AdapterConfig saved = save_adapter(a, dir.path());
  EXPECT_EQ(saved.peft_type, "LORA");
  EXPECT_EQ(saved.method, "lora");
  EXPECT_TRUE(saved.options.empty());
  const Json written = read_json_file(dir / "adapter_config.json");
  EXPECT_EQ(written.at("peft_type"), "LORA");
  EXPECT_FALSE(written.contains("lowrank_options"));
  const SafetensorsFile file = SafetensorsFile::open(dir / "adapter_model.safetensors");
  for (const TensorInfo& info : file.tensors())
    EXPECT_EQ(info.name.find("gate"), std::string::npos) << info.name;

  nn::Model fresh = tiny();
  AttachedAdapter loaded = load_adapter(fresh, dir.path());
  EXPECT_EQ(loaded.config.method, "lora");
  for (auto& [module, layer] : loaded.layers) {
    auto lora = std::dynamic_pointer_cast<LoraAdapter>(layer);
    ASSERT_NE(lora, nullptr);
    EXPECT_EQ(lora->rank(), at::count_nonzero(layer_at(a, module)->gate()).item<int64_t>()) << module;
    EXPECT_NEAR(lora->scaling(), 2.0, 1e-12) << module;
  }
  EXPECT_LE(max_abs_diff(logits_of(fresh, ids), gated), 1e-5);
}

TEST(SoraTest, AllZeroGatesFinalizeToARankOneZeroLora) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "s", config_for("sora", 4, 8), 3);
  randomize(a, 4);
  auto sora = std::dynamic_pointer_cast<SoraAdapter>(a.layers.front().second);
  {
    at::NoGradGuard g;
    sora->gate().zero_();
  }
  auto lora = std::dynamic_pointer_cast<LoraAdapter>(sora->finalize());
  ASSERT_NE(lora, nullptr);
  EXPECT_EQ(lora->rank(), 1);
  EXPECT_EQ(at::count_nonzero(lora->delta_weight(model.slot(a.layers.front().first).base())).item<int64_t>(),
            0);
}

TEST(SoraTest, LoadsAnUnfinalizedSoraFile) {
  nn::Model model = tiny();
  const std::string module = "model.layers.0.self_attn.v_proj";
  at::Generator gen = at::detail::createCPUGenerator(5);
  const at::Tensor A = at::randn({3, 16}, gen), B = at::randn({16, 3}, gen), g = at::randn({3}, gen);
  testing::TempDir dir;
  const std::string prefix = std::string(kPeftPrefix) + module + ".";
  const std::vector<NamedTensor> tensors = {
      {prefix + "lora_A.weight", A}, {prefix + "lora_B.weight", B}, {prefix + "lora_gate", g}};
  save_safetensors(dir / "adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_json_file(dir / "adapter_config.json", Json::parse(R"({"peft_type": "LOWRANK_SORA", "r": 3,
      "lora_alpha": 6, "target_modules": ["model.layers.0.self_attn.v_proj"]})"));
  nn::LinearSlot& slot = model.slot(module);
  const at::Tensor x = input(slot.in_features());
  const at::Tensor w = slot.base().dense_weight() + 2.0 * at::matmul(B * g.unsqueeze(0), A);
  AttachedAdapter loaded = load_adapter(model, dir.path());
  EXPECT_EQ(loaded.config.method, "sora");
  EXPECT_LE(max_abs_diff(slot.forward(x), at::matmul(x, w.t())), 1e-5);
  // A gate of the wrong length names the tensor.
  const std::vector<NamedTensor> bad = {{prefix + "lora_A.weight", A},
                                        {prefix + "lora_B.weight", B},
                                        {prefix + "lora_gate", at::randn({4}, gen)}};
  save_safetensors(dir / "adapter_model.safetensors", bad, {{"format", "pt"}});
  nn::Model other = tiny();
  EXPECT_NE(testing::error_of([&] { load_adapter(other, dir.path()); }).find("lora_gate"), std::string::npos);
}

TEST(SoraTest, ShortTrainingReducesTheLossAndSparsifiesTheGates) {
  nn::Model model = tiny();
  AdapterConfig c = config_for("sora", 4, 8);
  c.target_modules.clear();
  c.target_regex = "all-linear";
  c.options["sparse_lambda"] = 0.01;  // 40 steps of 0.01: gates below about 0.4 reach 0
  AttachedAdapter a = create_adapter(model, "s", c, 2);
  int64_t active_before = 0;
  for (auto& [m, layer] : a.layers)
    active_before += std::dynamic_pointer_cast<SoraAdapter>(layer)->active_ranks();
  testing::TempDir dir;
  const TrainOutcome o = train_adapter(model, a, short_run(40, 1e-2), dir.path());
  int64_t active_after = 0;
  for (auto& [m, layer] : a.layers)
    active_after += std::dynamic_pointer_cast<SoraAdapter>(layer)->active_ranks();
  EXPECT_TRUE(o.result.finished);
  EXPECT_LT(o.after, o.before - 0.05) << "before " << o.before << ", after " << o.after;
  EXPECT_LT(active_after, active_before);
  EXPECT_GT(active_after, 0);
}

}  // namespace
}  // namespace lowrank::adapt
