// SNNK adapter: the forward equals s·Ψ·ReLU(Gx)/√m from the raw tensors; with the paper's
// kernel initialisation, ΨΦ(x) estimates the degree-1 arc-cosine kernel (closed form, Cho & Saul
// 2009) with an error that shrinks like 1/√m.
#include <cmath>

#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;

TEST(SnnkTest, ForwardIsScaledRandomReluFeatures) {
  nn::Model model = tiny();
  AdapterConfig c = config_for("snnk");
  c.options["features"] = 6;
  AttachedAdapter a = create_adapter(model, "k", c, 1);
  nn::LinearSlot& slot = model.slot("model.layers.0.self_attn.q_proj");
  const at::Tensor x = input(slot.in_features());
  EXPECT_TRUE(slot.forward(x).equal(slot.base().forward(x)));  // Ψ = 0
  randomize(a, 3);
  const nn::Adapter& layer = *slot.adapter("k");
  const at::Tensor g = tensor_of(layer, "snnk_G.weight"), psi = tensor_of(layer, "snnk_Psi.weight");
  ASSERT_EQ(g.sizes(), (at::IntArrayRef{6, 16}));
  const at::Tensor expected =
      slot.base().forward(x) +
      (8.0 / 6.0) * at::matmul(at::relu(at::matmul(x, g.t())) / std::sqrt(6.0), psi.t());
  EXPECT_LE(testing::max_abs_diff(slot.forward(x), expected), 1e-5);
  // Only Ψ is trained: out·m per slot.
  EXPECT_EQ(a.num_parameters(), 2 * (16 * 6 + 16 * 6 + 16 * 6));
  testing::TempDir dir;
  save_adapter(a, dir.path());
  nn::Model fresh = tiny();
  load_adapter(fresh, dir.path());
  EXPECT_LE(testing::max_abs_diff(logits_of(fresh, token_ids()), logits_of(model, token_ids())), 1e-6);
}

// E[ReLU(gᵀw) ReLU(gᵀx)] for g ~ N(0, I).
double arc_cosine(const at::Tensor& w, const at::Tensor& x) {
  const double nw = w.norm().item<double>(), nx = x.norm().item<double>();
  const double cos = std::clamp((w * x).sum().item<double>() / (nw * nx), -1.0, 1.0);
  const double theta = std::acos(cos);
  return nw * nx * (std::sin(theta) + (M_PI - theta) * cos) / (2 * M_PI);
}

TEST(SnnkTest, KernelInitialisationEstimatesTheArcCosineKernel) {
  nn::Model model = tiny();
  const nn::LinearSlot& slot = model.slot("model.layers.0.self_attn.q_proj");
  const at::Tensor w = slot.base().dense_weight();
  const at::Tensor x = input(slot.in_features()).reshape({-1, slot.in_features()}).slice(0, 0, 4);
  at::Tensor exact = at::empty({4, w.size(0)}, at::kDouble);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t k = 0; k < w.size(0); ++k) exact[i][k] = arc_cosine(w[k], x[i]);
  std::vector<double> errors;
  for (int64_t m : {64, 4096}) {
    nn::Model fresh = tiny();
    AdapterConfig c = config_for("snnk");
    c.options["features"] = m;
    c.options["init"] = "kernel";
    c.lora_alpha = static_cast<double>(m);  // s = 1
    create_adapter(fresh, "k", c, 5);
    const nn::LinearSlot& s = fresh.slot("model.layers.0.self_attn.q_proj");
    at::NoGradGuard g;
    const at::Tensor estimate = (s.forward(x) - s.base().forward(x)).to(at::kDouble);
    errors.push_back(testing::rel_fro_error(estimate, exact));
  }
  EXPECT_LT(errors[1], 0.1);
  EXPECT_LT(errors[1], errors[0] / 3);  // 64× the features: error about 8× smaller
}

}  // namespace
}  // namespace lowrank::adapt
