// LoRA, rsLoRA, DoRA and PiSSA against closed forms computed here from the raw tensors, and
// extract against a known low-rank difference.
#include <array>

#include <gtest/gtest.h>

#include "lowrank/adapt/lora.h"
#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/safetensors.h"
#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

// Not the whole namespace: this file's randomize (below) differs from method_testing::randomize.
using method_testing::config_for;
using method_testing::input;
using method_testing::logits_of;
using method_testing::tiny;
using method_testing::token_ids;
using testing::max_abs_diff;

// Gives every trainable tensor random values so that Δ ≠ 0.
void randomize(const AttachedAdapter& a, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::NoGradGuard g;
  for (auto& [name, t] : a.parameters())
    t.copy_(at::randn(t.sizes(), gen) * 0.3 + (name.ends_with("vector") ? 1 : 0));
}

TEST(LoraTest, ForwardIsBasePlusScaledLowRankProductAndStartsAtZero) {
  for (bool rslora : {false, true}) {
    nn::Model model = tiny();
    AdapterConfig c = config_for("lora");
    c.use_rslora = rslora;
    nn::LinearSlot& slot = model.slot("model.layers.1.self_attn.v_proj");
    const at::Tensor x = input(slot.in_features());
    const at::Tensor base_y = slot.forward(x);
    AttachedAdapter a = create_adapter(model, "a", c, 7);
    EXPECT_TRUE(slot.forward(x).equal(base_y));  // B = 0
    randomize(a, 1);
    const auto* lora = dynamic_cast<const LoraAdapter*>(slot.adapter("a"));
    ASSERT_NE(lora, nullptr);
    const double s = rslora ? 8.0 / 2.0 : 8.0 / 4.0;
    const at::Tensor w = slot.base().dense_weight() + s * at::matmul(lora->b(), lora->a());
    EXPECT_LE(max_abs_diff(slot.forward(x), at::matmul(x, w.t())), 1e-5);
    // Per layer: q and v 16→16 (4·16 + 16·4 each), down 32→16 (4·32 + 16·4); 2 layers.
    EXPECT_EQ(a.num_parameters(), 2 * (128 + 128 + 192));
  }
}

TEST(LoraTest, DoraMatchesTheMagnitudeDirectionWeight) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "d", config_for("dora"), 5);
  nn::LinearSlot& slot = model.slot("model.layers.0.mlp.down_proj");
  const at::Tensor x = input(slot.in_features());
  EXPECT_LE(max_abs_diff(slot.forward(x), at::matmul(x, slot.base().dense_weight().t())), 1e-5);  // m = ‖W‖
  randomize(a, 2);
  at::Tensor A, B, m;
  for (auto& [n, t] : slot.adapter("d")->tensors()) {
    if (n == "lora_A.weight") A = t;
    if (n == "lora_B.weight") B = t;
    if (n == "lora_magnitude_vector") m = t;
  }
  const at::Tensor v = slot.base().dense_weight() + 2.0 * at::matmul(B, A);
  const at::Tensor w = m.unsqueeze(1) * v / at::sqrt((v * v).sum(1, true));
  EXPECT_LE(max_abs_diff(slot.forward(x), at::matmul(x, w.t())), 1e-5);
  // Merging gives the same dense weight.
  std::vector<AttachedAdapter> all{a};
  merge_adapters(model, all);
  EXPECT_LE(max_abs_diff(slot.base().dense_weight(), w), 1e-6);
}

// DoRA's gradients, written out here in float64 from eq. 5 with n = ‖W + sBA‖_row, the loss
// L = Σ y over a batch. Returns ∂L/∂A, ∂L/∂B, ∂L/∂m; `detach_norm` treats n as a constant, as the
// paper's §4.3 and PEFT's dora.py do.
std::array<at::Tensor, 3> dora_gradients_f64(const at::Tensor& w0, const at::Tensor& a, const at::Tensor& b,
                                             const at::Tensor& m, const at::Tensor& x, double s,
                                             bool detach_norm) {
  at::Tensor A = a.detach().to(at::kDouble).requires_grad_(true);
  at::Tensor B = b.detach().to(at::kDouble).requires_grad_(true);
  at::Tensor M = m.detach().to(at::kDouble).requires_grad_(true);
  const at::Tensor v = w0.detach().to(at::kDouble) + s * at::matmul(B, A);
  at::Tensor n = at::sqrt((v * v).sum(1, true));
  if (detach_norm) n = n.detach();
  at::matmul(x.to(at::kDouble), (M.unsqueeze(1) * v / n).t()).sum().backward();
  return {A.grad(), B.grad(), M.grad()};
}

TEST(LoraTest, DoraNormIsDetachedAsInThePaperAndTheMagnitudeGradientIsExact) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "d", config_for("dora"), 5);
  randomize(a, 3);
  nn::LinearSlot& slot = model.slot("model.layers.0.self_attn.q_proj");
  const at::Tensor x = input(slot.in_features());
  at::Tensor A, B, m;
  for (auto& [n, t] : slot.adapter("d")->tensors()) {
    if (n == "lora_A.weight") A = t;
    if (n == "lora_B.weight") B = t;
    if (n == "lora_magnitude_vector") m = t;
  }
  for (at::Tensor* t : {&A, &B, &m}) t->requires_grad_(true);
  slot.forward(x).sum().backward();
  const at::Tensor w0 = slot.base().dense_weight();
  const auto detached = dora_gradients_f64(w0, A, B, m, x, 2.0, true);
  const auto through_norm = dora_gradients_f64(w0, A, B, m, x, 2.0, false);
  const std::array<at::Tensor, 3> got{A.grad(), B.grad(), m.grad()};
  const char* names[] = {"dL/dA", "dL/dB", "dL/dm"};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(got[i].defined()) << names[i];
    EXPECT_LE(testing::rel_max_error(got[i], detached[i]), 1e-5) << names[i];
  }
  // The detachment matters here: letting the gradient through n moves ∂L/∂A and ∂L/∂B by far
  // more than the tolerance above, so a norm left in the graph fails the checks above.
  EXPECT_GT(testing::rel_max_error(through_norm[0], detached[0]), 1e-2);
  EXPECT_GT(testing::rel_max_error(through_norm[1], detached[1]), 1e-2);
  // n does not depend on m: ∂L/∂m_i = Σ_x (W' x)_i / m_i = Σ_x (v_i · x) / n_i either way, also in
  // closed form.
  const at::Tensor v =
      w0.to(at::kDouble) + 2.0 * at::matmul(B.detach().to(at::kDouble), A.detach().to(at::kDouble));
  const at::Tensor closed =
      at::matmul(x.to(at::kDouble).reshape({-1, x.size(-1)}), v.t()).sum(0) / at::sqrt((v * v).sum(1));
  EXPECT_LE(testing::rel_max_error(detached[2], closed), 1e-12);
  EXPECT_LE(testing::rel_max_error(through_norm[2], closed), 1e-12);
}

TEST(LoraTest, PissaStartsAtTheBaseWithThePrincipalTripletsAndSavesAsA2rLora) {
  nn::Model model = tiny();
  const at::Tensor ids = token_ids();
  const at::Tensor base_logits = logits_of(model, ids);
  AttachedAdapter a = create_adapter(model, "p", config_for("pissa"), 0);
  nn::LinearSlot& slot = model.slot("model.layers.0.self_attn.q_proj");
  // Trainable A, B start at A₀, B₀ with s·B₀A₀ the best rank-4 approximation of W.
  at::Tensor A = a.layers.front().second->parameters()[0].second,
             B = a.layers.front().second->parameters()[1].second;
  auto [u, s, vh] = at::linalg_svd(slot.base().dense_weight(), false);
  const at::Tensor best = at::matmul(u.slice(1, 0, 4) * s.slice(0, 0, 4), vh.slice(0, 0, 4));
  EXPECT_LE(max_abs_diff(2.0 * at::matmul(B, A), best), 1e-5);
  EXPECT_LE(max_abs_diff(logits_of(model, ids), base_logits), 1e-5);
  randomize(a, 4);
  const at::Tensor adapted = logits_of(model, ids);
  testing::TempDir dir;
  const AdapterConfig saved = save_adapter(a, dir.path());
  EXPECT_EQ(saved.r, 8);
  EXPECT_DOUBLE_EQ(saved.lora_alpha, 16);
  EXPECT_EQ(saved.method, "lora");
  EXPECT_TRUE(saved.init_lora_weights.is_boolean());
  nn::Model fresh = tiny();
  AttachedAdapter loaded = load_adapter(fresh, dir.path());
  EXPECT_EQ(loaded.config.method, "lora");
  EXPECT_LE(max_abs_diff(logits_of(fresh, ids), adapted), 1e-5);
  // In two halves: reading leaves the model as it was; attaching gives what load_adapter gives,
  // once only.
  nn::Model halves = tiny();
  AttachedAdapter read = read_adapter(halves, dir.path(), "r");
  EXPECT_FALSE(read.layers.empty());
  for (const nn::LinearSlot* s : halves.slots()) EXPECT_FALSE(s->has_adapters()) << s->name();
  EXPECT_LE(max_abs_diff(logits_of(halves, ids), base_logits), 1e-5);
  attach_adapter(halves, read);
  EXPECT_LE(max_abs_diff(logits_of(halves, ids), adapted), 1e-5);
  EXPECT_NE(testing::error_of([&] { attach_adapter(halves, read); }).find("already attached"),
            std::string::npos);
}

TEST(LoraTest, CreateIsAllOrNothing) {
  nn::Model model = tiny();
  create_adapter(model, "a", config_for("lora"), 0);
  AdapterConfig c = config_for("lora");
  c.target_modules = {"k_proj", "q_proj"};  // q_proj already holds "a": nothing may be attached
  EXPECT_NE(testing::error_of([&] { create_adapter(model, "a", c, 0); }).find("already attached"),
            std::string::npos);
  EXPECT_EQ(model.slot("model.layers.0.self_attn.k_proj").adapter_names().size(), 0u);
  AdapterConfig big = config_for("lora", 64);
  EXPECT_NE(testing::error_of([&] { create_adapter(model, "b", big, 0); }).find("exceeds"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] {
              create_adapter(model, "b", config_for("nope"), 0);
            }).find("unknown adapt method"),
            std::string::npos);
}

TEST(LoraTest, ExtractRecoversALowRankDifference) {
  nn::Model base = tiny();
  nn::Model tuned = tiny();
  at::Generator gen = at::detail::createCPUGenerator(9);
  {
    at::NoGradGuard g;
    for (nn::LinearSlot* slot : tuned.slots()) {
      if (slot->name().find("mlp") == std::string::npos) continue;
      const at::Tensor w = slot->base().dense_weight();
      const at::Tensor d = at::matmul(at::randn({w.size(0), 2}, gen), at::randn({2, w.size(1)}, gen)) * 0.1;
      slot->replace_base(std::make_shared<nn::DenseOperator>(w + d));
    }
  }
  testing::TempDir dir;
  const auto report = extract_lora(base, tuned, {2}, dir.path());
  ASSERT_EQ(report.size(), 3u * 2u);  // gate, up, down in each of 2 layers
  for (const ExtractedSlot& s : report) EXPECT_NEAR(s.energy, 1.0, 1e-5) << s.module;
  load_adapter(base, dir.path());
  const at::Tensor ids = token_ids();
  EXPECT_LE(max_abs_diff(logits_of(base, ids), logits_of(tuned, ids)), 1e-4);
}

}  // namespace
}  // namespace lowrank::adapt
