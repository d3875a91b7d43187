// Maestro (train/maestro.h): the forward at a cut-off is the truncated product written out; the
// hierarchical group lasso and its gradient equal the penalty Σ_b ‖A[b:]‖_F + ‖B[:, b:]‖_F written
// out here and differentiated by autograd in float64; the importance is the product of the tail
// norms; the samplers draw valid cut-offs (per_layer: at most one slot cut per step); shrinking
// cuts B, A and their Adam moments (float32 and 8-bit) to the kept components; a training run that
// shrinks keeps going and reports the discovered ranks (pretrain.json's: parameterization_test's
// CLI test); and on a planted rank-3 regression
// y = W* x, a rank-8 B·A trained with the method's hooks discovers rank exactly 3.
#include <cmath>
#include <numbers>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "lowrank/optim/adamw.h"
#include "lowrank/optim/quantized_state.h"
#include "lowrank/train/maestro.h"
#include "lowrank/train/parameterization.h"
#include "tests/testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::train {
namespace {

using testing_support::lm_step;
using testing_support::pattern_stream;
using testing_support::small_config;
using testing_support::tiny_model;

at::Tensor randn(at::IntArrayRef sizes, uint64_t seed, at::ScalarType dtype = at::kFloat) {
  return at::randn(sizes, at::detail::createCPUGenerator(seed), at::TensorOptions().dtype(dtype));
}

// The hooks the registry gives `method` for these operators (slot name, operator).
ParameterizationHooks hooks_for(
    const std::vector<std::pair<std::string, std::shared_ptr<ParameterizedOperator>>>& ops,
    const Json& options, uint64_t seed) {
  return parameterization_registry().factory("maestro").hooks(
      ops, parameterization_config("maestro", options), seed);
}

TEST(MaestroTest, ForwardAtACutOffIsTheTruncatedProductAndTruncationIsNested) {
  nn::Model model = tiny_model(2);
  const at::Tensor w = model.slot("model.layers.0.mlp.down_proj").base().dense_weight().detach().clone();
  apply_parameterization(model, "maestro", {{"rank", 4}}, 1);
  const auto& op = dynamic_cast<const MaestroOperator&>(model.slot("model.layers.0.mlp.down_proj").base());
  // Init: the best rank-4 approximation of the dense init.
  auto [u, s, vh] = at::linalg_svd(w, false);
  EXPECT_LT(testing::max_abs_diff(op.dense_weight(),
                                  at::matmul(u.narrow(1, 0, 4) * s.narrow(0, 0, 4), vh.narrow(0, 0, 4))),
            1e-5);
  at::NoGradGuard no_grad;
  const at::Tensor x = randn({2, 3, 32}, 4);
  for (int64_t b = 1; b <= 4; ++b) {
    op.set_active_rank(b);
    const at::Tensor y = op.forward(x);
    // Σ_{i<b} (x·a_i) b_i, component by component.
    at::Tensor expected = at::zeros({2, 3, 16});
    for (int64_t i = 0; i < b; ++i) expected += at::matmul(x, op.a()[i]).unsqueeze(-1) * op.b().select(1, i);
    EXPECT_LT(testing::max_abs_diff(y, expected), 1e-5) << b;
    EXPECT_TRUE(at::equal(op.truncate(b)->forward(x), y)) << b;  // nested: cut model = training at b
  }
  op.set_active_rank(4);
  EXPECT_THROW(op.set_active_rank(5), InvalidArgument);
  EXPECT_THROW(op.set_active_rank(0), InvalidArgument);
}

// The penalty written out group by group: Σ_b ‖A[b:, :]‖_F + ‖B[:, b:]‖_F.
at::Tensor written_out_penalty(const at::Tensor& b, const at::Tensor& a) {
  at::Tensor total = at::zeros({}, a.options());
  for (int64_t g = 0; g < a.size(0); ++g)
    total = total + a.narrow(0, g, a.size(0) - g).norm() + b.narrow(1, g, b.size(1) - g).norm();
  return total;
}

TEST(MaestroTest, GroupLassoAndItsGradientEqualAutogradOfTheWrittenOutPenalty) {
  const at::Tensor b0 = randn({5, 4}, 11, at::kDouble), a0 = randn({4, 6}, 12, at::kDouble);
  for (const bool zero_tail : {false, true}) {
    at::Tensor b = b0.clone(), a = a0.clone();
    if (zero_tail) {  // a removed-to-zero last component: its groups' norms are 0 (subgradient 0)
      b.select(1, 3).zero_();
      a[3].zero_();
    }
    at::Tensor bg = b.clone().requires_grad_(true), ag = a.clone().requires_grad_(true);
    const at::Tensor penalty = written_out_penalty(bg, ag);
    if (!zero_tail) penalty.backward();  // autograd of ‖0‖ is NaN: the zero case is checked by hand
    const MaestroOperator op(b.clone().requires_grad_(true), a.clone().requires_grad_(true));
    EXPECT_NEAR(op.group_lasso(), penalty.item<double>(), 1e-12);
    const double lambda = 0.3;
    op.add_group_lasso_gradient(lambda);
    if (!zero_tail) {
      EXPECT_LT(testing::max_abs_diff(op.a().grad(), lambda * ag.grad()), 1e-12);
      EXPECT_LT(testing::max_abs_diff(op.b().grad(), lambda * bg.grad()), 1e-12);
      // A second call accumulates onto the gradient already there (a loss gradient, in training).
      op.add_group_lasso_gradient(lambda);
      EXPECT_LT(testing::max_abs_diff(op.a().grad(), 2 * lambda * ag.grad()), 1e-12);
    } else {
      // The first three components by autograd of their own groups' terms; the zero one gets 0.
      at::Tensor b3 = b.narrow(1, 0, 3).clone().requires_grad_(true);
      at::Tensor a3 = a.narrow(0, 0, 3).clone().requires_grad_(true);
      written_out_penalty(b3, a3).backward();
      EXPECT_LT(testing::max_abs_diff(op.a().grad().narrow(0, 0, 3), lambda * a3.grad()), 1e-12);
      EXPECT_LT(testing::max_abs_diff(op.b().grad().narrow(1, 0, 3), lambda * b3.grad()), 1e-12);
      EXPECT_EQ(op.a().grad()[3].abs().max().item<double>(), 0.0);
      EXPECT_FALSE(at::isnan(op.b().grad()).any().item<bool>());
    }
  }
}

TEST(MaestroTest, ImportanceIsTheProductOfTheTailNormsAndShrinkingKeepsThoseAboveTheThreshold) {
  const at::Tensor b = randn({5, 4}, 21, at::kDouble), a = randn({4, 6}, 22, at::kDouble);
  const MaestroOperator op(b, a);
  const at::Tensor s = op.importance();
  ASSERT_EQ(s.size(0), 4);
  for (int64_t g = 0; g < 4; ++g) {
    const double expected =
        a.narrow(0, g, 4 - g).norm().item<double>() * b.narrow(1, g, 4 - g).norm().item<double>();
    EXPECT_NEAR(s[g].item<double>(), expected, 1e-12) << g;
  }
  EXPECT_EQ(maestro_kept_rank(s, 0.0), 4);
  EXPECT_EQ(maestro_kept_rank(s, s[2].item<double>()), 3);  // s_b >= ε keeps b
  EXPECT_EQ(maestro_kept_rank(s, s[2].item<double>() * 1.0000001), 2);
  EXPECT_EQ(maestro_kept_rank(s, 1e30), 1);  // a slot keeps one component
}

TEST(MaestroTest, SamplersDrawValidCutOffs) {
  const std::vector<int64_t> ranks{4, 2, 3};
  std::vector<int64_t> cut_slot_counts(3, 0);
  for (int64_t step = 0; step < 300; ++step) {
    const std::vector<int64_t> per_layer = maestro_cutoffs("per_layer", 7, step, ranks);
    EXPECT_EQ(per_layer, maestro_cutoffs("per_layer", 7, step, ranks));  // counter-based
    int64_t cut = 0;
    for (size_t i = 0; i < ranks.size(); ++i) {
      ASSERT_TRUE(per_layer[i] >= 1 && per_layer[i] <= ranks[i]);
      if (per_layer[i] < ranks[i]) {
        ++cut;
        ++cut_slot_counts[i];
      }
    }
    EXPECT_LE(cut, 1) << step;  // one slot at a time
    for (int64_t b : maestro_cutoffs("across_layers", 7, step, {4})) EXPECT_TRUE(b >= 1 && b <= 4);
  }
  // Pairs (slot, b) are uniform: slot 0 holds 4 of 9 pairs (3 of them cut it), slot 1 2 (1 cuts).
  EXPECT_GT(cut_slot_counts[0], cut_slot_counts[1]);
  EXPECT_GT(cut_slot_counts[1], 0);
  EXPECT_THROW(maestro_cutoffs("nope", 7, 0, ranks), InvalidArgument);
}

// An AdamW step on every factor of a fresh Maestro model, then shrinking: the shared parameter
// tensors shrink to their kept components, the moments of the kept entries are the old ones, and
// the next step runs.
void check_shrinking(const optim::AdamWStateOptions& state_options, double tolerance) {
  nn::Model model = tiny_model(5);
  AppliedParameterization applied = apply_parameterization(model, "maestro", {{"rank", 4}}, 2);
  optim::AdamConfig adam;
  adam.weight_decay = 0;
  optim::AdamW optimizer(applied.target.params, adam, state_options);
  const TokenStream data = pattern_stream(200);
  WindowSampler sampler(3, data.size, 9);
  auto step = [&] { lm_step(model, data, sampler, optimizer, 1e-2); };
  step();
  const std::string slot = "model.layers.0.mlp.up_proj";
  const auto& op = dynamic_cast<const MaestroOperator&>(model.slot(slot).base());
  auto moment = [&](const std::string& name) {
    for (const auto& [n, t] : optimizer.state_tensors())
      if (n == name) return t;
    // 8-bit: the dequantised moment
    optim::QuantizedMoments q;
    q.read_state(optimizer.state_tensors(), name.substr(0, name.rfind(".exp_avg")), at::kCPU);
    at::Tensor m, v;
    q.restore(m, v, at::kFloat);
    return name.ends_with("_sq") ? v : m;
  };
  const at::Tensor a_before = op.a().detach().clone(), b_before = op.b().detach().clone();
  const at::Tensor ma = moment(slot + ".lowrank_a.exp_avg"), vb = moment(slot + ".lowrank_b.exp_avg_sq");
  op.shrink(2);
  cut_adam_moments(optimizer, {{slot + ".lowrank_a", 0, 2}, {slot + ".lowrank_b", 1, 2}});
  EXPECT_EQ(op.rank(), 2);
  EXPECT_TRUE(at::equal(op.a(), a_before.narrow(0, 0, 2)));
  EXPECT_TRUE(at::equal(op.b(), b_before.narrow(1, 0, 2)));
  // The model, the target and the optimizer hold the same (shrunk) tensors.
  for (const auto& [n, p] : applied.target.params) {
    if (n == slot + ".lowrank_a") {
      EXPECT_EQ(p.sizes().vec(), (std::vector<int64_t>{2, 16}));
    }
  }
  for (const auto& [n, p] : optimizer.params()) {
    if (n == slot + ".lowrank_b") {
      EXPECT_EQ(p.sizes().vec(), (std::vector<int64_t>{32, 2}));
    }
  }
  EXPECT_LE(testing::max_abs_diff(moment(slot + ".lowrank_a.exp_avg"), ma.narrow(0, 0, 2)),
            tolerance * ma.abs().max().item<double>());
  EXPECT_LE(testing::max_abs_diff(moment(slot + ".lowrank_b.exp_avg_sq"), vb.narrow(1, 0, 2)),
            tolerance * vb.abs().max().item<double>());
  EXPECT_EQ(optimizer.steps(), 1);
  step();  // gradients and moments of the new shapes
  EXPECT_EQ(op.rank(), 2);
  EXPECT_FALSE(at::equal(op.a(), a_before.narrow(0, 0, 2)));
}

TEST(MaestroTest, ShrinkingCutsTheFactorsAndTheirAdamMoments) {
  check_shrinking({}, 0.0);
  // 8-bit moments are cut dequantised and quantised again: equal to the 8-bit precision.
  check_shrinking({.state_bits = 8, .min_8bit_size = 16}, 0.02);
}

TEST(MaestroTest, ATrainingRunShrinksAndReportsTheDiscoveredRanks) {
  const TokenStream data = pattern_stream(400);
  TrainerConfig c = small_config();
  c.steps = 4;
  c.parameterization = "maestro";
  // A threshold no component reaches: the first shrink (after step 2) leaves one per slot.
  c.parameterization_options = {
      {"rank", 4}, {"group_lasso", 1e-3}, {"shrink_every", 2}, {"shrink_threshold", 1e9}};
  testing::TempDir dir;
  nn::Model model = tiny_model(4);
  const TrainResult r = train(model, data, c, dir.path(), false);
  ASSERT_TRUE(r.finished);
  for (const auto& rec : r.steps) EXPECT_TRUE(std::isfinite(rec.loss));
  const OrderedJson ranks = maestro_ranks(model);
  EXPECT_EQ(ranks.size(), 14u);
  for (const auto& entry : ranks.items()) EXPECT_EQ(entry.value().get<int64_t>(), 1) << entry.key();
  EXPECT_EQ(model.slot("model.layers.1.self_attn.o_proj").base().dense_weight().sizes().vec(),
            (std::vector<int64_t>{16, 16}));
  EXPECT_TRUE(maestro_ranks(tiny_model(1)).empty());
}

// y = W* x with rank(W*) = 3 (singular values 3, 2, 1.5), W = B·A started at rank 8 from a random
// init; AdamW (β 0.9, 0.999, no decay) on the mean squared error with the method's hooks: the
// per_layer cut-off, λ_gp = 1e-2 and shrinking every 50 steps at ε = 1e-5 (documented test
// settings: λ_gp is larger than the pretraining default so that 400 steps suffice); learning rate
// 2e-2 with a cosine decay to 2e-5.
TEST(MaestroTest, APlantedRank3RegressionDiscoversRank3) {
  const int64_t n = 12, r0 = 8, steps = 400;
  at::Generator gen = at::detail::createCPUGenerator(1);
  const at::Tensor u = std::get<0>(at::linalg_qr(at::randn({n, 3}, gen)));
  const at::Tensor v = std::get<0>(at::linalg_qr(at::randn({n, 3}, gen)));
  const at::Tensor w_star = at::matmul(u * at::tensor({3.0f, 2.0f, 1.5f}), v.t());
  const at::Tensor x = at::randn({256, n}, gen);
  const at::Tensor y = at::matmul(x, w_star.t());
  auto op = std::make_shared<MaestroOperator>((at::randn({n, r0}, gen) * 0.3).requires_grad_(true),
                                              (at::randn({r0, n}, gen) * 0.3).requires_grad_(true));
  const ParameterizationHooks hooks =
      hooks_for({{"w", op}}, {{"group_lasso", 1e-2}, {"shrink_every", 50}, {"shrink_threshold", 1e-5}}, 3);
  optim::AdamConfig adam;
  adam.beta2 = 0.999;
  adam.weight_decay = 0;
  optim::AdamW optimizer({{"w.lowrank_a", op->a()}, {"w.lowrank_b", op->b()}}, adam);
  const double lr0 = 2e-2, lr_min = 2e-5;
  for (int64_t step = 0; step < steps; ++step) {
    optimizer.zero_grad();
    hooks.before_step(step);
    at::mse_loss(op->forward(x), y).backward();
    optimizer.step(lr_min + 0.5 * (lr0 - lr_min) *
                                (1 + std::cos(std::numbers::pi * static_cast<double>(step) / steps)));
    hooks.after_update(step, optimizer);
  }
  EXPECT_EQ(op->rank(), 3);
  // The three components span W*'s column and row spaces, and their product is W* up to the
  // penalty's shrinkage of the singular values (the third, in three groups of A and of B, most).
  at::NoGradGuard no_grad;
  const at::Tensor w = op->dense_weight();
  const at::Tensor inside = at::matmul(at::matmul(u, u.t()), at::matmul(w, at::matmul(v, v.t())));
  EXPECT_LT((w - inside).norm().item<double>(), 3e-2 * w.norm().item<double>());
  EXPECT_LT((w - w_star).norm().item<double>(), 0.15 * w_star.norm().item<double>());
}

TEST(MaestroTest, BadOptionsFailWithAClearError) {
  using testing::error_of;
  EXPECT_NE(error_of([] {
              parameterization_config("maestro", {{"sampler", "every"}});
            }).find("every"),
            std::string::npos);
  EXPECT_THROW(parameterization_config("maestro", {{"group_lasso", -1.0}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("maestro", {{"shrink_threshold", -1.0}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("maestro", {{"shrink_every", -1}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("maestro", {{"alpha", 8}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("lowrank", {{"group_lasso", 1e-3}}), InvalidArgument);
  const MaestroOperator op(randn({4, 3}, 1), randn({3, 5}, 2));
  EXPECT_THROW(op.shrink(0), InvalidArgument);
  EXPECT_THROW(op.shrink(4), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::train
