// Trained Rank Pruning (train/trp.h): the regulariser gradient is autograd of Σσ (svdvals), the
// truncation keeps the energy threshold and has rank k, and the training hooks truncate W and
// seed its gradient every m steps. The hooks' oracle is computed here in float64 from LAPACK's
// SVD of the weight (at::linalg_svd in double): k is counted by hand from Σ σ_i², the truncation
// is U_k diag(σ_k) V_kᵀ and the seeded gradient λ·U_k V_kᵀ.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "lowrank/train/parameterization.h"
#include "lowrank/train/trp.h"
#include "tests/testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::train {
namespace {

using testing_support::tiny_model;

TEST(TrpTest, SubgradientIsAutogradOfTheSumOfSingularValues) {
  auto gen = at::detail::createCPUGenerator(8);
  at::Tensor w = at::randn({6, 4}, gen, at::TensorOptions().dtype(at::kDouble)).requires_grad_(true);
  at::linalg_svdvals(w).sum().backward();
  const at::Tensor sub = nuclear_norm_subgradient(w.detach());
  EXPECT_LT(testing::max_abs_diff(sub, w.grad()), 1e-10);
  auto [u, s, vh] = at::linalg_svd(w.detach(), false);
  EXPECT_LT(testing::max_abs_diff(sub, at::matmul(u, vh)), 1e-10);
  // A rank-2 matrix: only the two non-zero singular directions.
  const at::Tensor low = at::matmul(at::randn({6, 2}, gen, at::kDouble), at::randn({2, 4}, gen, at::kDouble));
  auto [ul, sl, vhl] = at::linalg_svd(low, false);
  EXPECT_LT(testing::max_abs_diff(nuclear_norm_subgradient(low),
                                  at::matmul(ul.narrow(1, 0, 2), vhl.narrow(0, 0, 2))),
            1e-10);
}

TEST(TrpTest, TruncationKeepsTheEnergyThresholdAndHasRankK) {
  auto gen = at::detail::createCPUGenerator(9);
  const at::Tensor w = at::randn({8, 6}, gen, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor s = at::linalg_svdvals(w);
  const at::Tensor cum = s.square().cumsum(0) / s.square().sum();
  for (double e : {0.5, 0.9, 0.98}) {
    const TruncatedSvd t = energy_truncated_svd(w, e);
    const at::Tensor wk = t.product();
    const int64_t k = t.rank();
    ASSERT_GE(k, 1);
    EXPECT_GE(cum[k - 1].item<double>(), e);
    if (k > 1) {
      EXPECT_LT(cum[k - 2].item<double>(), e);  // the smallest such k
    }
    const at::Tensor sk = at::linalg_svdvals(wk);
    EXPECT_LT(testing::max_abs_diff(sk.narrow(0, 0, k), s.narrow(0, 0, k)), 1e-10);
    if (k < 6) {
      EXPECT_LT(sk.narrow(0, k, 6 - k).max().item<double>(), 1e-10 * s[0].item<double>());
    }
  }
  EXPECT_EQ(energy_rank(s, 1.0), 6);
  EXPECT_EQ(energy_rank(at::zeros({3}), 0.9), 0);
}

// TRP's step preparation by hand, in float64: the SVD of W, the smallest k whose leading σ_i²
// hold the fraction `energy` of Σ σ_i² (a running sum), W_k = U_k diag(σ_k) V_kᵀ and the
// nuclear-norm subgradient U_k V_kᵀ of W_k.
struct HandTruncation {
  int64_t k = 0;
  at::Tensor truncated;    // U_k diag(σ_k) V_kᵀ
  at::Tensor subgradient;  // U_k V_kᵀ
};
HandTruncation truncate_by_hand(const at::Tensor& weight, double energy) {
  auto [u, s, vh] = at::linalg_svd(weight.detach().to(at::kDouble), /*full_matrices=*/false);
  double total = 0;
  for (int64_t i = 0; i < s.size(0); ++i) total += s[i].item<double>() * s[i].item<double>();
  HandTruncation h;
  double kept = 0;
  while (h.k < s.size(0) && kept < energy * total) {
    kept += s[h.k].item<double>() * s[h.k].item<double>();
    ++h.k;
  }
  const at::Tensor uk = u.narrow(1, 0, h.k), vhk = vh.narrow(0, 0, h.k);
  h.truncated = at::matmul(uk * s.narrow(0, 0, h.k), vhk);
  h.subgradient = at::matmul(uk, vhk);
  return h;
}

TEST(TrpTest, HooksTruncateAndSeedTheRegulariserEveryMSteps) {
  nn::Model model = tiny_model(7);
  AppliedParameterization applied =
      apply_parameterization(model, "trp", {{"nuclear_weight", 0.5}, {"energy", 0.6}, {"prune_every", 2}}, 1);
  TrainTarget& target = applied.target;
  ASSERT_TRUE(target.before_step);
  const auto& op = dynamic_cast<const TrpOperator&>(model.slot("model.layers.0.mlp.gate_proj").base());
  // Step 0: W ← its energy truncation, grad ← λ·U_k V_kᵀ.
  at::Tensor before = op.weight().detach().clone();
  HandTruncation hand = truncate_by_hand(before, 0.6);
  ASSERT_GT(hand.k, 1);
  ASSERT_LT(hand.k, 16);
  target.before_step(0);
  EXPECT_LT(testing::max_abs_diff(op.weight().to(at::kDouble), hand.truncated), 1e-5);
  const at::Tensor s = at::linalg_svdvals(op.weight().detach());
  EXPECT_GT(s[hand.k - 1].item<double>(), 1e-3);
  EXPECT_LT(s.narrow(0, hand.k, 16 - hand.k).max().item<double>(), 1e-5);
  EXPECT_LT(testing::max_abs_diff(op.weight().grad().to(at::kDouble), 0.5 * hand.subgradient), 1e-5);
  // Step 1 is not a TRP step: neither W nor its (cleared) gradient is touched.
  op.weight().mutable_grad() = at::Tensor();
  {
    at::NoGradGuard no_grad;
    // An update that restores full rank (seeded: the test does not depend on the global generator).
    op.weight().add_(at::randn(op.weight().sizes(), at::detail::createCPUGenerator(17)) * 0.1);
  }
  before = op.weight().detach().clone();
  target.before_step(1);
  EXPECT_TRUE(at::equal(op.weight(), before));
  EXPECT_FALSE(op.weight().grad().defined());
  // Step 2 truncates again, from the updated weight.
  hand = truncate_by_hand(before, 0.6);
  target.before_step(2);
  EXPECT_LT(testing::max_abs_diff(op.weight().to(at::kDouble), hand.truncated), 1e-5);
  EXPECT_LT(testing::max_abs_diff(op.weight().grad().to(at::kDouble), 0.5 * hand.subgradient), 1e-5);
}

}  // namespace
}  // namespace lowrank::train
