// SALT against an oracle built here from at::linalg_svd of each base weight (float64):
//   W' = U_r diag(ReLU(a ⊙ σ_r + b)) V_rᵀ + U_rest diag(σ_rest) V_restᵀ
//        + (I − U_r U_rᵀ) B A (I − V_r V_rᵀ),
// with a, b, A, B the trained tensors. Also: Δ = 0 at initialisation, the LoRA term stays in
// the complement of the top-r singular subspaces, the documented tensors are the only
// parameters. Save/load, merge and training are AdapterContractTest's.
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

AdapterConfig salt_config() {
  AdapterConfig c = config_for("salt", kRank);
  c.target_modules = {"q_proj", "v_proj", "up_proj", "down_proj"};  // square, out > in and out < in
  c.options["lora_rank"] = kLoraRank;
  return c;
}

at::Tensor d(const at::Tensor& t) {
  return t.to(at::kDouble);
}

at::Tensor oracle_weight(const at::Tensor& w, const nn::Adapter& layer) {
  auto [u, s, vh] = at::linalg_svd(d(w), /*full_matrices=*/false);
  const at::Tensor ur = u.slice(1, 0, kRank), vr = vh.slice(0, 0, kRank).t();
  const at::Tensor top =
      at::relu(d(tensor_of(layer, "salt_scale")) * s.slice(0, 0, kRank) + d(tensor_of(layer, "salt_shift")));
  const at::Tensor spectrum = at::cat({top, s.slice(0, kRank)});
  const at::Tensor svd_part = at::matmul(u * spectrum.unsqueeze(0), vh);
  const at::Tensor pu = at::eye(w.size(0), at::kDouble) - at::matmul(ur, ur.t());
  const at::Tensor pv = at::eye(w.size(1), at::kDouble) - at::matmul(vr, vr.t());
  const at::Tensor lora = at::matmul(at::matmul(pu, d(tensor_of(layer, "salt_lora_B"))),
                                     at::matmul(d(tensor_of(layer, "salt_lora_A")), pv));
  return svd_part + lora;
}

TEST(SaltTest, StartsAtTheBaseWithScaleShiftAndLoraAsItsOnlyParameters) {
  nn::Model model = tiny();
  const at::Tensor ids = token_ids();
  const at::Tensor base = logits_of(model, ids);
  AttachedAdapter a = create_adapter(model, "s", salt_config(), 7);
  EXPECT_EQ(a.config.peft_type, "LOWRANK_SALT");
  EXPECT_TRUE(logits_of(model, ids).equal(base));
  // Per layer: a, b [4] each, plus A [2, in] and B [out, 2]: q and v 16x16, up 32x16, down 16x32.
  EXPECT_EQ(a.num_parameters(), 2 * (2 * (2 * kRank + kLoraRank * 32) + 2 * (2 * kRank + kLoraRank * 48)));
  std::map<std::string, int> kinds;
  for (const auto& [name, t] : a.parameters()) ++kinds[name.substr(name.rfind('.') + 1)];
  EXPECT_EQ(kinds, (std::map<std::string, int>{
                       {"salt_lora_A", 8}, {"salt_lora_B", 8}, {"salt_scale", 8}, {"salt_shift", 8}}));
}

TEST(SaltTest, ForwardAndMergeMatchTheSvdOracle) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "s", salt_config(), 7);
  randomize(a, 1);  // scale ~ N(0, 0.09): some a σ + b are negative, so the ReLU acts
  expect_forward_and_merge_match(
      model, a,
      [](const nn::LinearSlot& slot, const nn::Adapter& layer) {
        return oracle_weight(slot.base().dense_weight(), layer);
      },
      1e-4);
}

TEST(SaltTest, TheLoraTermStaysOutOfTheTopSingularSubspaces) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "s", salt_config(), 7);
  {
    at::NoGradGuard g;  // the LoRA pair only: scale and shift keep their identity values
    at::Generator gen = at::detail::createCPUGenerator(3);
    for (auto& [name, t] : a.parameters())
      if (name.find("lora") != std::string::npos) t.copy_(at::randn(t.sizes(), gen));
  }
  for (const auto& [module, layer] : a.layers) {
    const nn::LinearSlot& slot = model.slot(module);
    const at::Tensor delta = d(layer->delta_weight(slot.base()));
    auto [u, s, vh] = at::linalg_svd(d(slot.base().dense_weight()), false);
    EXPECT_GT(delta.abs().max().item<double>(), 0.1) << module;
    EXPECT_LE(at::matmul(u.slice(1, 0, kRank).t(), delta).abs().max().item<double>(), 1e-4) << module;
    EXPECT_LE(at::matmul(delta, vh.slice(0, 0, kRank).t()).abs().max().item<double>(), 1e-4) << module;
  }
}

}  // namespace
}  // namespace lowrank::adapt
