// LoLDU against an oracle built here from at::linalg_lu of each base weight (float64):
// W = P L U' with D = diag(U'), U = U'/D, and
//   W' = W + s·P L_r diag(z) U_r − s₀·P L_r diag(D_r) U_r,  s₀ = α/r,
// with z and s the trained values. Also: z starts at D_r and s at α/r (Δ = 0), only z and s are
// trained. Save/load, merge and training are AdapterContractTest's.

#include <gtest/gtest.h>

#include "lowrank/adapt/loldu.h"
#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;
using testing::max_abs_diff;

constexpr int64_t kRank = 4;
constexpr double kAlpha = 8;

AdapterConfig loldu_config() {
  AdapterConfig c = config_for("loldu", kRank, kAlpha);
  c.target_modules = {"q_proj", "v_proj", "up_proj", "down_proj"};  // square, out > in and out < in
  return c;
}

struct LduOracle {
  at::Tensor pl, u, d;  // P L_r [out, r], U_r [r, in], D_r [r]
};

LduOracle ldu_oracle(const at::Tensor& w) {
  auto [p, l, u_full] = at::linalg_lu(w.to(at::kDouble));  // W = P L U'
  const at::Tensor d = u_full.diagonal();
  const at::Tensor u = u_full / d.unsqueeze(1);
  return {at::matmul(p, l.slice(1, 0, kRank)), u.slice(0, 0, kRank), d.slice(0, 0, kRank)};
}

at::Tensor oracle_weight(const at::Tensor& w, const at::Tensor& z, const at::Tensor& s) {
  const LduOracle f = ldu_oracle(w);
  const double s0 = kAlpha / kRank;
  auto product = [&](const at::Tensor& diag) { return at::matmul(f.pl * diag.unsqueeze(0), f.u); };
  return w.to(at::kDouble) + s.to(at::kDouble) * product(z.to(at::kDouble)) - s0 * product(f.d);
}

TEST(LolduTest, StartsAtTheBaseWithThePivotsAndScaleAsItsOnlyParameters) {
  nn::Model model = tiny();
  const at::Tensor ids = token_ids();
  const at::Tensor base = logits_of(model, ids);
  AttachedAdapter a = create_adapter(model, "l", loldu_config(), 7);
  EXPECT_EQ(a.config.peft_type, "LOWRANK_LOLDU");
  EXPECT_TRUE(logits_of(model, ids).equal(base));
  ASSERT_EQ(a.layers.size(), 8u);
  EXPECT_EQ(a.num_parameters(), 8 * (kRank + 1));  // z [r] and s per slot
  for (const auto& [name, t] : a.parameters())
    EXPECT_TRUE(name.ends_with(".loldu_z") || name.ends_with(".loldu_s")) << name;
  for (const auto& [module, layer] : a.layers) {
    const LduOracle f = ldu_oracle(model.slot(module).base().dense_weight());
    EXPECT_LE(max_abs_diff(tensor_of(*layer, "loldu_z"), f.d), 1e-5) << module;
    EXPECT_LE(testing::rel_fro_error(tensor_of(*layer, "loldu_L"), f.pl), 1e-5) << module;
    EXPECT_LE(testing::rel_fro_error(tensor_of(*layer, "loldu_U"), f.u), 1e-5) << module;
    EXPECT_EQ(tensor_of(*layer, "loldu_s").item<double>(), kAlpha / kRank) << module;
  }
}

TEST(LolduTest, ForwardAndMergeMatchTheLuOracle) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "l", loldu_config(), 7);
  randomize(a, 1);
  expect_forward_and_merge_match(
      model, a,
      [](const nn::LinearSlot& slot, const nn::Adapter& layer) {
        return oracle_weight(slot.base().dense_weight(), tensor_of(layer, "loldu_z"),
                             tensor_of(layer, "loldu_s"));
      },
      1e-4);
}

}  // namespace
}  // namespace lowrank::adapt
