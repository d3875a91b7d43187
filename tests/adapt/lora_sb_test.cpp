// LoRA-SB against a float64 computation that follows the official initialisation
// (RaghavSinghal10/lora-sb, utils/gradient_utils.py and utils/initialization_utils.py): the update
// −η·sign(G) (or −η·G) is transposed and decomposed as the official get_svd_grad does
// (Gᵀ-side SVD), lora_B = its right singular vectors, lora_A = its left ones transposed,
// R = diag(S_r) with no 1/s factor, and the base is not compensated, so the adapted weight
// starts at W + s·(rank-r truncation), for s = 1 and s = 2; B and A frozen and orthonormal;
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

// The official factors of `update` [out, in] in float64: the SVD of updateᵀ = U S Vᵀ (as
// find_and_initialize_grad passes named_grads[key].T), B = V_r [out, r], A = U_rᵀ [r, in],
// R = diag(S_r).
struct OfficialFactors {
  at::Tensor a, b, r;
};

OfficialFactors official_factors(const at::Tensor& update, int64_t r) {
  auto [u, s, vh] = at::linalg_svd(update.t().to(at::kDouble), false);
  return {u.slice(1, 0, r).t(), vh.slice(0, 0, r).t(), at::diag(s.slice(0, 0, r))};
}

TEST(LoraSbTest, InitialisationFollowsTheOfficialCodeWithoutCompensatingTheBase) {
  for (const char* update : {"sign", "gradient"}) {
    for (double alpha : {4.0, 8.0}) {  // s = 1 and s = 2
      nn::Model model = tiny();
      AdapterConfig c = config_for("lora_sb", 4, alpha);
      c.options["update"] = update;
      c.options["init_lr"] = 1e-3;
      const std::map<std::string, at::Tensor> grads = random_gradients(model, c, 17);
      AttachedAdapter a = create_adapter(model, "sb", c, 0, grads);
      EXPECT_EQ(a.num_parameters(), 6 * 16);
      const double s = alpha / 4.0;
      for (const auto& [module, layer] : a.layers) {
        auto sb = std::dynamic_pointer_cast<BraAdapter>(layer);
        ASSERT_NE(sb, nullptr);
        EXPECT_EQ(sb->kind(), "lora_sb");
        const at::Tensor g = grads.at(module).to(at::kDouble);
        const at::Tensor first_step = (std::string(update) == "sign" ? at::sign(g) : g) * -1e-3;
        const OfficialFactors o = official_factors(first_step, 4);
        // R is diag(S_r) itself, whatever s is.
        EXPECT_LE(max_abs_diff(sb->r(), o.r), 1e-8) << module << " " << update << " s=" << s;
        // B and A span the official singular vectors (the SVD fixes them up to sign): B R A is
        // the official lora_B · latent · lora_A.
        EXPECT_LE(max_abs_diff(at::matmul(at::matmul(sb->b(), sb->r()), sb->a()),
                               at::matmul(at::matmul(o.b, o.r), o.a)),
                  1e-7)
            << module << " " << update << " s=" << s;
        const at::Tensor eye = at::eye(4, at::kFloat);
        EXPECT_LE(max_abs_diff(at::matmul(sb->b().t(), sb->b()), eye), 1e-5);
        EXPECT_LE(max_abs_diff(at::matmul(sb->a(), sb->a().t()), eye), 1e-5);
        ASSERT_EQ(layer->parameters().size(), 1u);
        EXPECT_EQ(layer->parameters()[0].first, "lora_R.weight");
        // The base is left as it is: forward computes x (W + s · B R A)ᵀ (forward_latent).
        const nn::LinearSlot& slot = model.slot(module);
        const at::Tensor w =
            slot.base().dense_weight().to(at::kDouble) + s * at::matmul(at::matmul(o.b, o.r), o.a);
        const at::Tensor x = input(slot.in_features());
        EXPECT_LE(max_abs_diff(slot.forward(x), at::matmul(x.to(at::kDouble), w.t())), 1e-5) << module;
      }
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
