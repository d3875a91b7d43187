// LoRA-XS against an SVD of the base weight computed here (B·A is the rank-r truncation, B has
// orthonormal columns), the closed form x(W + s·B R A)ᵀ, autograd of that closed form for R's
// gradient (the only trained tensor), a file round trip that does not depend on the base's
// weights, and a short training run.
#include <gtest/gtest.h>

#include "lowrank/adapt/lora_xs.h"
#include "lowrank/core/safetensors.h"
#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;
using testing::max_abs_diff;

std::shared_ptr<BraAdapter> layer_at(const AttachedAdapter& a, const std::string& module) {
  for (const auto& [m, layer] : a.layers)
    if (m == module) return std::dynamic_pointer_cast<BraAdapter>(layer);
  ADD_FAILURE() << "no layer on " << module;
  return nullptr;
}

// U_r diag(S_r) V_rᵀ of w, from this test's own SVD.
at::Tensor truncation(const at::Tensor& w, int64_t r) {
  auto [u, s, vh] = at::linalg_svd(w.to(at::kDouble), false);
  return at::matmul(u.slice(1, 0, r) * s.slice(0, 0, r), vh.slice(0, 0, r));
}

TEST(LoraXsTest, FrozenFactorsAreTheTruncatedSvdOfTheBaseWeight) {
  for (const char* where : {"input", "output", "none"}) {
    nn::Model model = tiny();
    AdapterConfig c = config_for("lora_xs", 4, 8);
    c.options["singular_values"] = where;
    AttachedAdapter a = create_adapter(model, "x", c, 3);
    for (const auto& [module, layer] : a.layers) {
      auto xs = std::dynamic_pointer_cast<BraAdapter>(layer);
      ASSERT_NE(xs, nullptr);
      EXPECT_EQ(xs->kind(), "lora_xs");
      const at::Tensor w = model.slot(module).base().dense_weight();
      auto [u, s, vh] = at::linalg_svd(w.to(at::kDouble), false);
      const at::Tensor B = xs->b().to(at::kDouble), A = xs->a().to(at::kDouble);
      const at::Tensor eye = at::eye(4, at::kDouble);
      const std::string mode = where;
      // Whatever carries the singular values, B·A is built from the top-4 singular triplets.
      const at::Tensor expected =
          mode == "none" ? at::matmul(u.slice(1, 0, 4), vh.slice(0, 0, 4)) : truncation(w, 4);
      EXPECT_LE(max_abs_diff(at::matmul(B, A), expected), 1e-5) << module << " " << mode;
      if (mode != "output") {
        EXPECT_LE(max_abs_diff(at::matmul(B.t(), B), eye), 1e-5) << module;
      }
      if (mode != "input") {
        EXPECT_LE(max_abs_diff(at::matmul(A, A.t()), eye), 1e-5) << module;
      } else {  // A = S_r V_rᵀ: its row norms are the singular values
        EXPECT_LE(max_abs_diff(at::linalg_vector_norm(A, 2, {1}), s.slice(0, 0, 4)), 1e-5) << module;
      }
      // R ~ N(0, (1e-5)²): tiny but not zero.
      EXPECT_LT(xs->r().abs().max().item<double>(), 1e-4);
      EXPECT_GT(xs->r().abs().max().item<double>(), 0);
    }
  }
}

TEST(LoraXsTest, ForwardIsBasePlusScaledBraAndOnlyRIsTrained) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "x", config_for("lora_xs", 4, 8), 3);
  // Per slot r² = 16 trained values: 6 slots.
  EXPECT_EQ(a.num_parameters(), 6 * 16);
  for (const auto& [module, layer] : a.layers) {
    ASSERT_EQ(layer->parameters().size(), 1u);
    EXPECT_EQ(layer->parameters()[0].first, "lora_R.weight");
  }
  randomize(a, 1);
  const std::string module = "model.layers.1.mlp.down_proj";
  nn::LinearSlot& slot = model.slot(module);
  std::shared_ptr<BraAdapter> xs = layer_at(a, module);
  const at::Tensor x = input(slot.in_features());
  const at::Tensor w = slot.base().dense_weight() + 2.0 * at::matmul(at::matmul(xs->b(), xs->r()), xs->a());
  EXPECT_LE(max_abs_diff(slot.forward(x), at::matmul(x, w.t())), 1e-5);
  std::vector<AttachedAdapter> all{a};
  merge_adapters(model, all);
  EXPECT_LE(max_abs_diff(slot.base().dense_weight(), w), 1e-6);
}

TEST(LoraXsTest, GradientOfRMatchesAutogradOfTheClosedForm) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "x", config_for("lora_xs", 4, 8), 3);
  randomize(a, 2);
  const std::string module = "model.layers.0.self_attn.q_proj";
  nn::LinearSlot& slot = model.slot(module);
  std::shared_ptr<BraAdapter> xs = layer_at(a, module);
  at::Tensor R = xs->r();
  R.requires_grad_(true);
  const at::Tensor x = input(slot.in_features());
  slot.forward(x).pow(2).sum().backward();
  EXPECT_FALSE(xs->a().requires_grad());
  EXPECT_FALSE(xs->b().requires_grad());
  const at::Tensor R2 = R.detach().clone().requires_grad_(true);
  const at::Tensor w = slot.base().dense_weight() + 2.0 * at::matmul(at::matmul(xs->b(), R2), xs->a());
  at::matmul(x, w.t()).pow(2).sum().backward();
  EXPECT_LE(max_abs_diff(R.grad(), R2.grad()), 1e-4 * R2.grad().abs().max().item<double>());
}

TEST(LoraXsTest, FileHoldsBRAAndReproducesDeltaWithoutTheBaseWeights) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "x", config_for("lora_xs", 4, 8), 3);
  randomize(a, 3);
  testing::TempDir dir;
  const AdapterConfig saved = save_adapter(a, dir.path());
  EXPECT_EQ(saved.peft_type, "LOWRANK_LORA_XS");
  const SafetensorsFile file = SafetensorsFile::open(dir / "adapter_model.safetensors");
  const std::string v = "base_model.model.model.layers.1.self_attn.v_proj.";
  const at::Tensor A = file.load(v + "lora_A.weight"), B = file.load(v + "lora_B.weight"),
                   R = file.load(v + "lora_R.weight");
  EXPECT_EQ(R.sizes(), (std::vector<int64_t>{4, 4}));
  // A base with other weights: Δ comes from the file alone.
  nn::Model other = tiny(99);
  AttachedAdapter loaded = load_adapter(other, dir.path());
  EXPECT_EQ(loaded.config.method, "lora_xs");
  const nn::LinearSlot& slot = other.slot("model.layers.1.self_attn.v_proj");
  EXPECT_LE(max_abs_diff(layer_at(loaded, slot.name())->delta_weight(slot.base()),
                         2.0 * at::matmul(at::matmul(B, R), A)),
            1e-6);
  // Round trip on the same base: identical logits.
  nn::Model same = tiny();
  load_adapter(same, dir.path());
  const at::Tensor ids = token_ids();
  EXPECT_LE(max_abs_diff(logits_of(same, ids), logits_of(model, ids)), 1e-6);
}

}  // namespace
}  // namespace lowrank::adapt
