// SALT against oracles computed here in float64 from the official layer's equations
// (BioMedIA-MBZUAI/SALT, prompt_adapted_SAM2/modeling/Adapters/SALT.py):
//   new_s = diag(σ) with its top r × r block replaced by diag(a ⊙ σ_r + b) and X Y added to the
//   remaining block; W' = U ReLU(new_s) Vᵀ (ReLU on every entry of the k × k matrix);
//   R = ‖diag(a ⊙ σ_r + b − σ_r)‖_F + ‖X Y‖_F, its gradient by central finite differences;
//   the parameter count 2r + 2 (k − r) r_lora; the initialisation a = 1, b = 0, Y = 0,
//   X ~ U(±√(6 / r_lora)) and so W' = W. The stored U, σ, Vᵀ are checked to be an SVD of W.
// Save/load, merge and training are AdapterContractTest's.
#include <cmath>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "lowrank/adapt/salt.h"
#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;
using testing::max_abs_diff;

constexpr int64_t kRank = 4;
constexpr int64_t kLoraRank = 2;
constexpr int64_t kSpectrum = 16;  // min(in, out) of every targeted slot of tiny()

AdapterConfig salt_config() {
  AdapterConfig c = config_for("salt", kRank);
  c.target_modules = {"q_proj", "v_proj", "up_proj", "down_proj"};  // square, out > in and out < in
  c.options["lora_rank"] = kLoraRank;
  return c;
}

at::Tensor d(const at::Tensor& t) {
  return t.detach().to(at::kDouble);
}

// The official new_s [k, k] before the ReLU, from the layer's stored σ and trained tensors.
at::Tensor new_singular_block(const nn::Adapter& layer) {
  const at::Tensor s = d(tensor_of(layer, "salt_sigma"));
  const int64_t k = s.size(0);
  at::Tensor new_s = at::diag(s);
  const at::Tensor top =
      d(tensor_of(layer, "salt_scale")) * s.slice(0, 0, kRank) + d(tensor_of(layer, "salt_shift"));
  new_s.slice(0, 0, kRank).slice(1, 0, kRank).copy_(at::diag(top));
  new_s.slice(0, kRank, k).slice(1, kRank, k) +=
      at::matmul(d(tensor_of(layer, "salt_X")), d(tensor_of(layer, "salt_Y")));
  return new_s;
}

at::Tensor oracle_weight(const nn::Adapter& layer) {
  return at::matmul(at::matmul(d(tensor_of(layer, "salt_U")), at::relu(new_singular_block(layer))),
                    d(tensor_of(layer, "salt_V")));
}

TEST(SaltTest, StartsAtTheBaseWithTheOfficialInitialisationAndParameterCount) {
  nn::Model model = tiny();
  const at::Tensor ids = token_ids();
  const at::Tensor base = logits_of(model, ids);
  AttachedAdapter a = create_adapter(model, "s", salt_config(), 7);
  EXPECT_EQ(a.config.peft_type, "LOWRANK_SALT");
  EXPECT_TRUE(logits_of(model, ids).equal(base));
  // Per slot: a, b [r] and X [k - r, r_lora], Y [r_lora, k - r], with k = 16 on every slot.
  EXPECT_EQ(a.num_parameters(), 8 * (2 * kRank + 2 * (kSpectrum - kRank) * kLoraRank));
  std::map<std::string, int> kinds;
  for (const auto& [name, t] : a.parameters()) ++kinds[name.substr(name.rfind('.') + 1)];
  EXPECT_EQ(kinds,
            (std::map<std::string, int>{{"salt_X", 8}, {"salt_Y", 8}, {"salt_scale", 8}, {"salt_shift", 8}}));
  const double bound = std::sqrt(6.0 / kLoraRank);  // kaiming_uniform_, gain √2 for "relu", fan_in r_lora
  at::Tensor all_x = at::empty({0}, at::kDouble);
  for (const auto& [module, layer] : a.layers) {
    EXPECT_TRUE(tensor_of(*layer, "salt_scale").equal(at::ones({kRank})));
    EXPECT_TRUE(tensor_of(*layer, "salt_shift").equal(at::zeros({kRank})));
    EXPECT_TRUE(tensor_of(*layer, "salt_Y").equal(at::zeros({kLoraRank, kSpectrum - kRank})));
    const at::Tensor x = d(tensor_of(*layer, "salt_X"));
    EXPECT_EQ(x.sizes(), (at::IntArrayRef{kSpectrum - kRank, kLoraRank}));
    EXPECT_LE(x.abs().max().item<double>(), bound) << module;
    all_x = at::cat({all_x, x.flatten()});
    EXPECT_LE(at::count_nonzero(layer->delta_weight(model.slot(module).base())).item<int64_t>(), 0) << module;
  }
  // 192 draws of U(±b): the largest is near b and the variance near b²/3 (a bound of 1/√fan_in,
  // or X = N(0, 0.01²) as in the SAM 1 draft, fails both).
  EXPECT_GT(all_x.abs().max().item<double>(), 0.9 * bound);
  EXPECT_NEAR(all_x.var().item<double>(), bound * bound / 3, 0.25 * bound * bound / 3);
}

TEST(SaltTest, StoredFactorsAreAnSvdOfTheBaseWeight) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "s", salt_config(), 7);
  for (const auto& [module, layer] : a.layers) {
    const at::Tensor w = d(model.slot(module).base().dense_weight());
    const at::Tensor u = d(tensor_of(*layer, "salt_U")), s = d(tensor_of(*layer, "salt_sigma")),
                     vh = d(tensor_of(*layer, "salt_V"));
    EXPECT_LE(max_abs_diff(at::matmul(u * s.unsqueeze(0), vh), w), 1e-5) << module;
    EXPECT_LE(max_abs_diff(at::matmul(u.t(), u), at::eye(kSpectrum, at::kDouble)), 1e-5) << module;
    EXPECT_LE(max_abs_diff(at::matmul(vh, vh.t()), at::eye(kSpectrum, at::kDouble)), 1e-5) << module;
    EXPECT_LE(max_abs_diff(s, at::linalg_svdvals(w)), 1e-5) << module;
  }
}

TEST(SaltTest, ForwardAndMergeMatchTheOfficialWeight) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "s", salt_config(), 7);
  randomize(a, 1);  // scale ~ N(0, 0.09): some a σ + b are negative; X Y has negative entries
  int64_t clipped_off_diagonal = 0;
  for (const auto& [module, layer] : a.layers) {
    const at::Tensor rest = new_singular_block(*layer).slice(0, kRank).slice(1, kRank);
    clipped_off_diagonal += at::count_nonzero(rest.lt(0)).item<int64_t>();
  }
  EXPECT_GT(clipped_off_diagonal, 0);  // the ReLU acts on the residual block too
  expect_forward_and_merge_match(
      model, a, [](const nn::LinearSlot&, const nn::Adapter& layer) { return oracle_weight(layer); }, 1e-4);
}

// R of the official forward, in float64 from raw values.
double regularizer_by_hand(const at::Tensor& sigma, const at::Tensor& scale, const at::Tensor& shift,
                           const at::Tensor& x, const at::Tensor& y) {
  const at::Tensor top = sigma.slice(0, 0, kRank);
  const double scale_shift = std::sqrt(at::pow(scale * top + shift - top, 2).sum().item<double>());
  const double lora = std::sqrt(at::pow(at::matmul(x, y), 2).sum().item<double>());
  return scale_shift + lora;
}

TEST(SaltTest, BeforeStepAddsTheRegularisersGradientTimesItsWeight) {
  nn::Model model = tiny();
  AdapterConfig c = salt_config();
  c.target_modules = {"up_proj"};
  c.options["reg_weight"] = 0.5;
  AttachedAdapter a = create_adapter(model, "s", c, 7);
  randomize(a, 2);
  auto layer = std::dynamic_pointer_cast<SaltAdapter>(a.layers.front().second);
  ASSERT_NE(layer, nullptr);
  std::map<std::string, at::Tensor> values;
  for (const auto& [name, t] : layer->parameters()) {
    values[name] = d(t);
    t.requires_grad_(true);
  }
  const at::Tensor sigma = d(tensor_of(*layer, "salt_sigma"));
  auto reg_at = [&](const std::map<std::string, at::Tensor>& v) {
    return 0.5 *
           regularizer_by_hand(sigma, v.at("salt_scale"), v.at("salt_shift"), v.at("salt_X"), v.at("salt_Y"));
  };
  EXPECT_NEAR(layer->regularizer().item<double>() * 0.5, reg_at(values), 1e-5);

  layer->before_step(-1);  // the evaluation form adds nothing
  for (const auto& [name, t] : layer->parameters()) EXPECT_FALSE(t.grad().defined()) << name;
  layer->before_step(0);
  const double h = 1e-6;
  for (const auto& [name, t] : layer->parameters()) {
    ASSERT_TRUE(t.grad().defined()) << name;
    const at::Tensor grad = d(t.grad()).flatten();
    for (int64_t i = 0; i < values[name].numel(); ++i) {
      std::map<std::string, at::Tensor> plus = values, minus = values;
      plus[name] = values[name].clone();
      minus[name] = values[name].clone();
      plus[name].view({-1})[i] += h;
      minus[name].view({-1})[i] -= h;
      const double numeric = (reg_at(plus) - reg_at(minus)) / (2 * h);
      EXPECT_NEAR(grad[i].item<double>(), numeric, 1e-4) << name << "[" << i << "]";
    }
  }
  // A second step's hook adds to whatever the trainer left (it zeroes them first).
  const at::Tensor once = layer->parameters()[0].second.grad().clone();
  layer->before_step(1);
  EXPECT_LE(max_abs_diff(layer->parameters()[0].second.grad(), 2 * once), 1e-6);
}

TEST(SaltTest, RegulariserGradientIsZeroAtInitialisationAndOffWithWeightZero) {
  nn::Model model = tiny();
  AdapterConfig c = salt_config();
  c.target_modules = {"q_proj"};
  AttachedAdapter a = create_adapter(model, "s", c, 7);
  for (const auto& [module, layer] : a.layers) {
    for (const auto& [name, t] : layer->parameters()) t.requires_grad_(true);
    layer->before_step(0);  // both norms are 0 at the official initialisation: subgradient 0, no NaN
    for (const auto& [name, t] : layer->parameters()) {
      ASSERT_TRUE(t.grad().defined()) << name;
      EXPECT_EQ(at::count_nonzero(t.grad()).item<int64_t>(), 0) << name;
    }
  }
  c.options["reg_weight"] = 0.0;
  nn::Model other = tiny();
  AttachedAdapter off = create_adapter(other, "s", c, 7);
  randomize(off, 2);
  for (const auto& [module, layer] : off.layers) {
    for (const auto& [name, t] : layer->parameters()) t.requires_grad_(true);
    layer->before_step(0);
    for (const auto& [name, t] : layer->parameters()) EXPECT_FALSE(t.grad().defined()) << name;
  }
}

TEST(SaltTest, BadOptionsNameTheOptionAndValue) {
  nn::Model model = tiny();
  AdapterConfig c = salt_config();
  c.options["reg_weight"] = -1.0;
  std::string message = testing::error_of([&] { create_adapter(model, "s", c, 7); });
  EXPECT_NE(message.find("reg_weight"), std::string::npos) << message;
  EXPECT_NE(message.find("-1"), std::string::npos) << message;
  c = salt_config();
  c.r = kSpectrum;  // no residual subspace left
  message = testing::error_of([&] { create_adapter(model, "s", c, 7); });
  EXPECT_NE(message.find("r (16"), std::string::npos) << message;
}

}  // namespace
}  // namespace lowrank::adapt
