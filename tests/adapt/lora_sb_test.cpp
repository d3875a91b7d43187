// LoRA-SB against a truncated SVD computed here: the initial s·B R A is the best rank-r
// approximation of the first update −η·sign(G) (or −η·G), for s ≠ 1 too; B and A orthonormal;
// only R trained; a missing gradient is an error naming the slot; the file reloads without a
// gradient; and slot_gradients + create_adapter + a short training run reduce the loss.
#include <gtest/gtest.h>

#include <map>

#include "lowrank/adapt/lora_sb.h"
#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;
using testing::max_abs_diff;

// A random gradient for every slot the configuration targets.
std::map<std::string, at::Tensor> random_gradients(nn::Model& model, const AdapterConfig& c, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  std::map<std::string, at::Tensor> out;
  for (nn::LinearSlot* slot : model.slots())
    if (c.targets(slot->name()))
      out[slot->name()] = at::randn({slot->out_features(), slot->in_features()}, gen);
  return out;
}

at::Tensor truncation(const at::Tensor& w, int64_t r) {
  auto [u, s, vh] = at::linalg_svd(w.to(at::kDouble), false);
  return at::matmul(u.slice(1, 0, r) * s.slice(0, 0, r), vh.slice(0, 0, r));
}

TEST(LoraSbTest, InitialUpdateIsTheRankRTruncationOfTheFirstFullStep) {
  for (const char* update : {"sign", "gradient"}) {
    for (double alpha : {4.0, 8.0}) {  // s = 1 and s = 2
      nn::Model model = tiny();
      AdapterConfig c = config_for("lora_sb", 4, alpha);
      c.options["update"] = update;
      c.options["init_lr"] = 1e-3;
      const std::map<std::string, at::Tensor> grads = random_gradients(model, c, 17);
      const at::Tensor ids = token_ids();
      const at::Tensor base_logits = logits_of(model, ids);
      AttachedAdapter a = create_adapter(model, "sb", c, 0, grads);
      EXPECT_EQ(a.num_parameters(), 6 * 16);
      const double s = alpha / 4.0;
      for (const auto& [module, layer] : a.layers) {
        auto sb = std::dynamic_pointer_cast<BraAdapter>(layer);
        ASSERT_NE(sb, nullptr);
        EXPECT_EQ(sb->kind(), "lora_sb");
        const at::Tensor g = grads.at(module);
        const at::Tensor first_step = (std::string(update) == "sign" ? at::sign(g) : g) * -1e-3;
        const at::Tensor sbra = s * at::matmul(at::matmul(sb->b(), sb->r()), sb->a());
        EXPECT_LE(max_abs_diff(sbra, truncation(first_step, 4)), 1e-7)
            << module << " " << update << " s=" << s;
        EXPECT_LE(max_abs_diff(layer->delta_weight(model.slot(module).base()), sbra), 1e-9);
        const at::Tensor eye = at::eye(4, at::kFloat);
        EXPECT_LE(max_abs_diff(at::matmul(sb->b().t(), sb->b()), eye), 1e-5);
        EXPECT_LE(max_abs_diff(at::matmul(sb->a(), sb->a().t()), eye), 1e-5);
        ASSERT_EQ(layer->parameters().size(), 1u);
        EXPECT_EQ(layer->parameters()[0].first, "lora_R.weight");
      }
      // The adapter starts away from the base (Δ ≠ 0), unlike LoRA.
      EXPECT_GT(max_abs_diff(logits_of(model, ids), base_logits), 1e-6);
    }
  }
}

TEST(LoraSbTest, NeedsAGradientPerSlot) {
  nn::Model model = tiny();
  AdapterConfig c = config_for("lora_sb");
  EXPECT_TRUE(registry().factory("lora_sb").needs_gradient);
  std::map<std::string, at::Tensor> grads = random_gradients(model, c, 1);
  grads.erase("model.layers.1.self_attn.v_proj");
  const std::string message = testing::error_of([&] { create_adapter(model, "sb", c, 0, grads); });
  EXPECT_NE(message.find("model.layers.1.self_attn.v_proj"), std::string::npos) << message;
  EXPECT_EQ(model.slot("model.layers.0.self_attn.q_proj").adapter_names().size(), 0u);  // all or nothing
}

TEST(LoraSbTest, SavedFileReloadsWithoutAGradient) {
  nn::Model model = tiny();
  AdapterConfig c = config_for("lora_sb", 4, 8);
  AttachedAdapter a = create_adapter(model, "sb", c, 0, random_gradients(model, c, 3));
  randomize(a, 2, 1e-3);
  testing::TempDir dir;
  EXPECT_EQ(save_adapter(a, dir.path()).peft_type, "LOWRANK_LORA_SB");
  nn::Model fresh = tiny();
  AttachedAdapter loaded = load_adapter(fresh, dir.path());
  EXPECT_EQ(loaded.config.method, "lora_sb");
  const at::Tensor ids = token_ids();
  EXPECT_LE(max_abs_diff(logits_of(fresh, ids), logits_of(model, ids)), 1e-6);
}

TEST(LoraSbTest, InitialisedFromTheModelsGradientAShortRunReducesTheLoss) {
  nn::Model model = tiny();
  AdapterConfig c = all_linear(config_for("lora_sb", 4, 4));
  c.options["init_lr"] = 1e-2;
  const train::TokenStream stream = pattern_stream();
  train::WindowSampler init_sampler(1, stream.size, 17);
  const std::map<std::string, at::Tensor> grads = slot_gradients(
      model, c,
      [&](const nn::Model& m) {
        return train::lm_loss(m, train::sample_windows(stream, init_sampler, 4, 16));
      },
      4);
  AttachedAdapter a = create_adapter(model, "sb", c, 0, grads);
  testing::TempDir dir;
  expect_training_lowers_loss(model, a, short_run(40, 1e-2), dir.path(), 0.05);
}

}  // namespace
}  // namespace lowrank::adapt
