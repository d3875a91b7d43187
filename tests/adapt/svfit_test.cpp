// SVFit against an oracle built here from at::linalg_svd of each base weight (float64):
// W' = W + U_r diag(σ − σ_r) V_rᵀ with σ the trained values. Also: Δ = 0 at initialisation,
// only the r singular values are trained. Save/load, merge and training are
// AdapterContractTest's.

#include <gtest/gtest.h>

#include "lowrank/adapt/svfit.h"
#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;
using testing::max_abs_diff;

constexpr int64_t kRank = 4;

AdapterConfig svfit_config() {
  AdapterConfig c = config_for("svfit", kRank);
  c.target_modules = {"q_proj", "v_proj", "up_proj", "down_proj"};  // square, out > in and out < in
  return c;
}

// W + U_r diag(σ − σ_r) V_rᵀ from the exact SVD of W.
at::Tensor oracle_weight(const at::Tensor& w, const at::Tensor& sigma) {
  const at::Tensor wd = w.to(at::kDouble);
  auto [u, s, vh] = at::linalg_svd(wd, /*full_matrices=*/false);
  const at::Tensor change = sigma.to(at::kDouble) - s.slice(0, 0, kRank);
  return wd + at::matmul(u.slice(1, 0, kRank) * change.unsqueeze(0), vh.slice(0, 0, kRank));
}

TEST(SvfitTest, StartsAtTheBaseWithTheTopSingularValuesAsItsOnlyParameters) {
  nn::Model model = tiny();
  const at::Tensor ids = token_ids();
  const at::Tensor base = logits_of(model, ids);
  AttachedAdapter a = create_adapter(model, "s", svfit_config(), 7);
  EXPECT_EQ(a.config.peft_type, "LOWRANK_SVFIT");
  EXPECT_TRUE(logits_of(model, ids).equal(base));
  // 4 slots per layer, 2 layers, r values each; nothing else is trained.
  ASSERT_EQ(a.layers.size(), 8u);
  EXPECT_EQ(a.num_parameters(), 8 * kRank);
  for (const auto& [name, t] : a.parameters()) EXPECT_TRUE(name.ends_with(".svfit_sigma")) << name;
  for (const auto& [module, layer] : a.layers) {
    auto [u, s, vh] = at::linalg_svd(model.slot(module).base().dense_weight().to(at::kDouble), false);
    EXPECT_LE(max_abs_diff(tensor_of(*layer, "svfit_sigma"), s.slice(0, 0, kRank)), 1e-4) << module;
    EXPECT_TRUE(tensor_of(*layer, "svfit_sigma").equal(tensor_of(*layer, "svfit_sigma0"))) << module;
  }
}

TEST(SvfitTest, ForwardAndMergeMatchTheSvdOracle) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "s", svfit_config(), 7);
  randomize(a, 1);
  expect_forward_and_merge_match(
      model, a,
      [](const nn::LinearSlot& slot, const nn::Adapter& layer) {
        return oracle_weight(slot.base().dense_weight(), tensor_of(layer, "svfit_sigma"));
      },
      1e-4);
  for (const auto& [module, layer] : a.layers) EXPECT_FALSE(model.slot(module).has_adapters()) << module;
}

}  // namespace
}  // namespace lowrank::adapt
