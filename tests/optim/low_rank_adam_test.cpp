// The low-rank optimizers against the oracles of docs/optimizers.md ("Tests"): FRUGAL's coordinate
// projector at full rank (ρ = 1, gap > steps) is AdamW bit for bit; GaLore with r = d and
// an SGD core is SGD; GaLore's step recomputed by hand from its equations; Fira's residual from
// its formula and its limiter's bound ‖S_t‖ ≤ 1.01·‖S_{t−1}‖; a state round trip gives identical
// next steps for every method; every method lowers a tiny least-squares loss; byte accounting,
// FRUGAL's block selection and the registry.
#include <cmath>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "lowrank/optim/adamw.h"
#include "lowrank/optim/fira.h"
#include "lowrank/optim/frugal.h"
#include "lowrank/optim/low_rank_adam.h"
#include "lowrank/optim/methods.h"
#include "lowrank/optim/projector.h"
#include "tests/optim/optim_testing.h"
#include "tests/testing.h"

namespace lowrank::optim {
namespace {

using testing::max_abs_diff;

using testing_support::clone_params;
using testing_support::randn;

// A tiny least-squares problem: a tall and a wide projected weight, an embedding-like 2-D weight
// that is not projected, and a 1-D norm weight.
struct Problem {
  at::Tensor x1, y1, x2, y2, x3, y3;
  NamedTensors initial;

  Problem() {
    x1 = randn({32, 8}, 1);
    y1 = at::matmul(x1, randn({12, 8}, 2, 0.5).t());  // W1* [12, 8]: tall
    x2 = randn({32, 12}, 3);
    y2 = at::matmul(x2, randn({8, 12}, 4, 0.5).t());  // W2* [8, 12]: wide
    x3 = randn({32, 8}, 5);
    y3 = at::matmul(x3, randn({6, 8}, 6, 0.5).t());  // E* [6, 8]: not a target
    initial = {{"model.layers.0.mlp.up_proj.weight", randn({12, 8}, 7, 0.1)},
               {"model.layers.0.self_attn.q_proj.weight", randn({8, 12}, 8, 0.1)},
               {"model.embed_tokens.weight", randn({6, 8}, 9, 0.1)},
               {"model.norm.weight", at::ones({8})}};
  }
  NamedTensors params() const { return clone_params(initial); }
  // Sets .grad() of `params` to the loss's gradient; returns the loss.
  double backward(const NamedTensors& params) const {
    for (const auto& [n, p] : params)
      if (p.grad().defined()) p.mutable_grad().reset();
    const at::Tensor& w1 = params[0].second;
    const at::Tensor& w2 = params[1].second;
    const at::Tensor& e = params[2].second;
    const at::Tensor& g = params[3].second;
    at::Tensor loss = (at::matmul(x1, w1.t()) - y1).pow(2).mean() +
                      (at::matmul(x2, w2.t()) - y2).pow(2).mean() +
                      (at::matmul(x3 * g, e.t()) - y3).pow(2).mean();
    loss.backward();
    return loss.item<double>();
  }
  // The loss of the two projected weights alone.
  double projected_loss(const NamedTensors& params) const {
    at::NoGradGuard no_grad;
    const at::Tensor& w1 = params[0].second;
    const at::Tensor& w2 = params[1].second;
    return ((at::matmul(x1, w1.t()) - y1).pow(2).mean() + (at::matmul(x2, w2.t()) - y2).pow(2).mean())
        .item<double>();
  }
};

TEST(FrugalTest, FullRankCoordinateProjectorReproducesAdamWBitForBit) {
  for (const char* coords : {"columns", "rows", "randk"}) {
    const NamedTensors initial = {{"model.layers.0.mlp.up_proj.weight", randn({6, 4}, 1)},
                                  {"model.layers.0.self_attn.o_proj.weight", randn({4, 6}, 2)},
                                  {"model.embed_tokens.weight", randn({10, 4}, 3)},
                                  {"model.norm.weight", randn({4}, 4)}};
    const NamedTensors ours = clone_params(initial), theirs = clone_params(initial);
    LowRankAdam mine = make_optimizer("frugal", ours,
                                      {{"projector", coords},
                                       {"density", 1.0},
                                       {"update_gap", 1000},
                                       {"beta2", 0.95},
                                       {"weight_decay", 0.1}});
    EXPECT_TRUE(mine.is_projected("model.layers.0.mlp.up_proj.weight"));
    EXPECT_FALSE(mine.is_projected("model.embed_tokens.weight"));
    EXPECT_FALSE(mine.is_projected("model.norm.weight"));
    AdamConfig c = mine.config().adam;
    AdamW reference(theirs, c);
    const double lr = 1e-2;
    for (int step = 0; step < 6; ++step) {
      for (size_t i = 0; i < ours.size(); ++i) {
        const at::Tensor g = randn(ours[i].second.sizes().vec(), 100 + 10 * step + i);
        ours[i].second.mutable_grad() = g.clone();
        theirs[i].second.mutable_grad() = g.clone();
      }
      mine.step(lr);
      reference.step(lr);
    }
    for (size_t i = 0; i < ours.size(); ++i)
      EXPECT_TRUE(at::equal(ours[i].second, theirs[i].second))
          << coords << " " << ours[i].first << " differs by "
          << max_abs_diff(ours[i].second, theirs[i].second);
  }
}

TEST(GaLoreTest, FullRankWithSgdCoreIsSgd) {
  const NamedTensors initial = {{"a.mlp.w", randn({8, 5}, 1)}, {"a.self_attn.w", randn({5, 8}, 2)}};
  const NamedTensors params = clone_params(initial);
  LowRankAdam opt =
      make_optimizer("galore", params, {{"rank", 5}, {"core", "sgd"}, {"scale", 1.0}, {"update_gap", 2}});
  std::vector<at::Tensor> expected;
  for (const auto& [n, p] : initial) expected.push_back(p.detach().clone());
  const double lr = 0.1;
  for (int step = 0; step < 5; ++step) {
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor g = randn(params[i].second.sizes().vec(), 50 + 10 * step + i);
      params[i].second.mutable_grad() = g;
      expected[i] -= lr * g;
    }
    opt.step(lr);
  }
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_LE(max_abs_diff(params[i].second, expected[i]), 1e-5) << i;
}

TEST(GaLoreTest, TwoStepsMatchTheEquationsRecomputedHere) {
  // Both of GaLore's sides: right (Q [r, n] for m >= n) and left (P [m, r] for m < n).
  for (const bool right : {true, false}) {
    const int64_t m = right ? 8 : 5, n = right ? 5 : 8;
    const at::Tensor W0 = randn({m, n}, 1);
    const NamedTensors params = {{"l.mlp.w", W0.clone().requires_grad_(true)}};
    const double lr = 0.01, wd = 0.1, alpha = 0.25, b1 = 0.9, b2 = 0.999, eps = 1e-6;
    LowRankAdam opt = make_optimizer("galore", params, {{"rank", 2}, {"weight_decay", wd}});
    const at::Tensor G1 = randn({m, n}, 2), G2 = randn({m, n}, 3);
    params[0].second.mutable_grad() = G1;
    opt.step(lr);
    params[0].second.mutable_grad() = G2;
    opt.step(lr);
    // The projector spans the top-2 right (or left) singular vectors of G1.
    const auto* P = dynamic_cast<const MatrixProjector*>(opt.projector("l.mlp.w"));
    ASSERT_NE(P, nullptr);
    const at::Tensor B = P->matrix().to(at::kDouble);  // Q [2, n] or P [m, 2]
    ASSERT_EQ(B.sizes(), right ? (std::vector<int64_t>{2, n}) : (std::vector<int64_t>{m, 2}));
    auto [u, s, vh] = at::linalg_svd(G1.to(at::kDouble), false);
    if (right) {
      EXPECT_LE(max_abs_diff(at::matmul(B.t(), B), at::matmul(vh.slice(0, 0, 2).t(), vh.slice(0, 0, 2))),
                1e-5);
    } else {
      EXPECT_LE(max_abs_diff(at::matmul(B, B.t()), at::matmul(u.slice(1, 0, 2), u.slice(1, 0, 2).t())), 1e-5);
    }
    // GaLoreAdamW by hand, in float64.
    at::Tensor W = W0.to(at::kDouble);
    at::Tensor M = at::zeros(right ? std::vector<int64_t>{m, 2} : std::vector<int64_t>{2, n}, at::kDouble);
    at::Tensor V = at::zeros_like(M);
    int t = 0;
    for (const at::Tensor& G : {G1, G2}) {
      ++t;
      const at::Tensor R =
          right ? at::matmul(G.to(at::kDouble), B.t()) : at::matmul(B.t(), G.to(at::kDouble));
      M = b1 * M + (1 - b1) * R;
      V = b2 * V + (1 - b2) * R * R;
      const at::Tensor N = M / (V.sqrt() + eps);
      const double step_size = lr * std::sqrt(1 - std::pow(b2, t)) / (1 - std::pow(b1, t));
      W = W - step_size * alpha * (right ? at::matmul(N, B) : at::matmul(B, N));
      W = W - lr * wd * W;  // after the update, without α
    }
    EXPECT_LE(max_abs_diff(params[0].second, W), 2e-6) << (right ? "right" : "left");
  }
}

TEST(FiraTest, ResidualIsTheNormScaledAlphaResidual) {
  // Tall: R [m, r], φ per row of G; wide: R [r, n], φ per column.
  for (bool tall : {true, false}) {
    const int64_t m = tall ? 8 : 4, n = tall ? 4 : 8;
    const at::Tensor G = randn({m, n}, 1), sub = randn({m, n}, 2);
    const at::Tensor R = tall ? randn({m, 2}, 3) : randn({2, n}, 3);
    const at::Tensor N = tall ? randn({m, 2}, 4) : randn({2, n}, 4);
    const FiraResidual f = fira_residual(G, R, N, sub, std::nullopt);
    at::Tensor expected = at::empty({m, n});
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const double phi =
            tall ? N[i].norm().item<double>() / (R[i].norm().item<double>() + 1e-8)
                 : N.select(1, j).norm().item<double>() / (R.select(1, j).norm().item<double>() + 1e-8);
        expected[i][j] = (G[i][j].item<double>() - sub[i][j].item<double>()) * phi;
      }
    EXPECT_LE(max_abs_diff(f.s, expected), 1e-5) << tall;
    EXPECT_NEAR(f.norm, expected.norm().item<double>(), 1e-4);
  }
  // The code's α-residual: with r = d, G − α·P Pᵀ G = (1 − α)·G, not zero.
  const at::Tensor G = randn({6, 4}, 5);
  const NamedTensors params = {{"l.mlp.w", randn({6, 4}, 6).requires_grad_(true)}};
  LowRankAdam opt = make_optimizer("fira", params, {{"rank", 4}});
  params[0].second.mutable_grad() = G;
  opt.step(0.01);
  const auto* P = dynamic_cast<const MatrixProjector*>(opt.projector("l.mlp.w"));
  ASSERT_NE(P, nullptr);
  const at::Tensor R = P->down(G);
  const at::Tensor N = R * 0.1 / ((R * R * 0.001).sqrt() + 1e-6);  // the first step's M / (√V + ε)
  const FiraResidual f = fira_residual(G, R, N, 0.25 * P->up(R), std::nullopt);
  const double phi_g = fira_residual(G, R, N, at::zeros_like(G), std::nullopt).norm;
  EXPECT_NEAR(f.norm, 0.75 * phi_g, 1e-3 * phi_g);
  EXPECT_NEAR(*opt.fira_norm("l.mlp.w"), f.norm, 1e-3 * f.norm);
}

TEST(FiraTest, LimiterKeepsResidualNormGrowthWithinGamma) {
  const at::Tensor R = randn({8, 2}, 3), N = randn({8, 2}, 4);
  std::optional<double> previous;
  for (int t = 0; t < 6; ++t) {
    // Gradients that grow 3× per step: the limiter must cap the growth at γ = 1.01.
    const at::Tensor G = randn({8, 4}, 10 + t, std::pow(3.0, t));
    const FiraResidual f = fira_residual(G, R, N, at::zeros_like(G), previous);
    EXPECT_NEAR(f.norm, f.s.to(at::kDouble).norm().item<double>(), 1e-6 * f.norm);
    if (previous) {
      EXPECT_LE(f.norm, 1.01 * (*previous + 1e-8) * (1 + 1e-9)) << t;
      EXPECT_GE(f.norm, 1.0 * *previous) << t;  // it was growing faster, so it sits at the cap
    }
    previous = f.norm;
  }
  // Shrinking residuals pass unchanged.
  const at::Tensor G = randn({8, 4}, 30, 1e-3);
  const FiraResidual f = fira_residual(G, R, N, at::zeros_like(G), previous);
  EXPECT_TRUE(at::equal(f.s, fira_residual(G, R, N, at::zeros_like(G), std::nullopt).s));

  // Inside the optimizer, with growing gradients.
  const NamedTensors params = {{"l.mlp.w", randn({8, 4}, 6).requires_grad_(true)}};
  LowRankAdam opt = make_optimizer("fira", params, {{"rank", 2}, {"update_gap", 3}});
  std::optional<double> last;
  for (int t = 0; t < 7; ++t) {
    params[0].second.mutable_grad() = randn({8, 4}, 40 + t, std::pow(2.0, t));
    opt.step(1e-3);
    const std::optional<double> now = opt.fira_norm("l.mlp.w");
    ASSERT_TRUE(now.has_value());
    if (last) {
      EXPECT_LE(*now, 1.01 * (*last + 1e-8) * (1 + 1e-9)) << t;
    }
    last = now;
  }
}

// Each method with small ranks and a short update gap, so that refreshes happen mid-run.
std::vector<std::pair<std::string, Json>> method_variants() {
  return {
      {"galore", {{"rank", 3}, {"update_gap", 2}, {"weight_decay", 0.01}}},
      {"galore", {{"rank", 3}, {"update_gap", 2}, {"projector", "randomized_svd"}}},
      {"galore", {{"rank", 3}, {"update_gap", 2}, {"projector", "gaussian"}, {"seed", 3}}},
      {"galore", {{"rank", 3}, {"update_gap", 2}, {"state_bits", 8}, {"min_8bit_size", 0}}},
      {"fira", {{"rank", 3}, {"update_gap", 2}, {"weight_decay", 0.01}}},
      {"frugal", {{"density", 0.5}, {"update_gap", 2}, {"weight_decay", 0.01}}},
      {"frugal", {{"density", 0.5}, {"update_gap", 2}, {"projector", "random"}, {"residual", "sgd"}}},
      {"frugal", {{"density", 0.5}, {"update_gap", 2}, {"projector", "columns"}}},
      {"frugal", {{"density", 0.5}, {"update_gap", 2}, {"projector", "randk"}}},
      {"frugal", {{"density", 0.5}, {"update_gap", 2}, {"projector", "block"}, {"block_order", "random"}}},
      {"dct", {{"rank", 3}, {"weight_decay", 0.01}}},
      {"dct", {{"rank", 3}, {"update_gap", 3}, {"reset_on_refresh", true}}},
      {"gradnormlorp", {{"rank", 3}, {"update_gap", 2}, {"weight_decay", 0.01}}},
      {"wngalore", {{"rank", 3}, {"update_gap", 2}, {"weight_decay", 0.01}}},
      {"wngalore",
       {{"rank", 3}, {"update_gap", 2}, {"orthogonal_grad", false}, {"state_bits", 8}, {"min_8bit_size", 0}}},
      // 8-bit states for the other methods too (the Adam core's option, not a method's).
      {"fira", {{"rank", 3}, {"update_gap", 2}, {"state_bits", 8}, {"min_8bit_size", 0}}},
      {"frugal", {{"density", 0.5}, {"update_gap", 2}, {"state_bits", 8}, {"min_8bit_size", 0}}},
      {"dct", {{"rank", 3}, {"state_bits", 8}, {"min_8bit_size", 0}}},
  };
}

TEST(LowRankAdamTest, StateRoundTripGivesIdenticalNextSteps) {
  const Problem problem;
  for (const auto& [method, options] : method_variants()) {
    const NamedTensors a = problem.params();
    LowRankAdam first = make_optimizer(method, a, options);
    for (int t = 0; t < 3; ++t) {
      problem.backward(a);
      first.step(0.01);
    }
    // A second optimizer on copies of the parameters, from the saved state only.
    const NamedTensors b = clone_params(a);
    LowRankAdam second = make_optimizer(method, b, options);
    second.load_state(first.state_tensors(), first.steps());
    EXPECT_EQ(second.steps(), 3);
    for (int t = 0; t < 4; ++t) {
      problem.backward(a);
      first.step(0.01);
      problem.backward(b);
      second.step(0.01);
    }
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_TRUE(at::equal(a[i].second, b[i].second))
          << method << " " << options.dump() << " " << a[i].first;
  }
}

TEST(LowRankAdamTest, EveryMethodLowersALeastSquaresLoss) {
  const Problem problem;
  // The variants cover every registered method (a new method joins this contract).
  std::set<std::string> covered;
  for (const auto& [method, options] : method_variants()) covered.insert(method);
  for (const MethodInfo& info : registry().list()) EXPECT_TRUE(covered.count(info.name)) << info.name;
  for (const auto& [method, options] : method_variants()) {
    const NamedTensors params = problem.params();
    LowRankAdam opt = make_optimizer(method, params, options);
    const double before = problem.backward(params);
    const double projected_before = problem.projected_loss(params);
    double after = before;
    for (int t = 0; t < 40; ++t) {
      opt.step(0.05);
      after = problem.backward(params);
    }
    EXPECT_LT(after, 0.8 * before) << method << " " << options.dump();
    // The low-rank path itself makes progress, not only the AdamW parameters.
    EXPECT_LT(problem.projected_loss(params), 0.9 * projected_before) << method << " " << options.dump();
  }
}

TEST(LowRankAdamTest, ByteAccountingCountsWeightsGradsStatesAndProjectors) {
  const NamedTensors params = {{"l.mlp.w", randn({8, 6}, 1).requires_grad_(true)},
                               {"norm.weight", at::ones({6}).requires_grad_(true)}};
  LowRankAdam opt = make_optimizer("galore", params, {{"rank", 2}});
  OptimizerBytes b = opt.bytes();
  EXPECT_EQ(b.weights, (48 + 6) * 4);
  EXPECT_EQ(b.grads, 0);
  EXPECT_EQ(b.optimizer_states, 0);
  EXPECT_EQ(b.projectors, 0);
  for (const auto& [n, p] : params) p.mutable_grad() = at::ones_like(p);
  opt.step(0.01);
  b = opt.bytes();
  EXPECT_EQ(b.grads, (48 + 6) * 4);
  // GaLore: M, V of R = G Qᵀ [8, 2]; AdamW on the norm: M, V [6]. Q is [2, 6].
  EXPECT_EQ(b.optimizer_states, 2 * 8 * 2 * 4 + 2 * 6 * 4);
  EXPECT_EQ(b.projectors, 2 * 6 * 4);
  EXPECT_EQ(b.total(), b.weights + b.grads + b.optimizer_states + b.projectors);

  // DCT: the r int64 indices per weight plus one shared basis per size d.
  const NamedTensors dct_params = {{"a.mlp.w", randn({8, 6}, 2).requires_grad_(true)},
                                   {"b.mlp.w", randn({6, 9}, 3).requires_grad_(true)},
                                   {"c.mlp.w", randn({10, 8}, 4).requires_grad_(true)}};
  LowRankAdam dct = make_optimizer("dct", dct_params, {{"rank", 2}});
  for (const auto& [n, p] : dct_params) p.mutable_grad() = randn(p.sizes().vec(), 5);
  dct.step(0.01);
  EXPECT_EQ(dct.bytes().projectors, 3 * 2 * 8 + (6 * 6 + 8 * 8) * 4);
  // Gaussian: 8 bytes (the seed) per weight.
  LowRankAdam gauss = make_optimizer("galore", dct_params, {{"rank", 2}, {"projector", "gaussian"}});
  gauss.step(0.01);
  EXPECT_EQ(gauss.bytes().projectors, 3 * 8);
}

TEST(FrugalTest, BlockSelectionRunsAdamOnRhoOfTheWeightsAndFreesTheRest) {
  EXPECT_EQ(frugal_block_selection(4, 0.5, BlockOrder::kAscending, 0, 0), (std::vector<bool>{1, 1, 0, 0}));
  EXPECT_EQ(frugal_block_selection(4, 0.5, BlockOrder::kAscending, 1, 0), (std::vector<bool>{0, 0, 1, 1}));
  EXPECT_EQ(frugal_block_selection(4, 0.5, BlockOrder::kDescending, 0, 0), (std::vector<bool>{0, 0, 1, 1}));
  EXPECT_EQ(frugal_block_selection(4, 0.0, BlockOrder::kRandom, 0, 0), (std::vector<bool>{0, 0, 0, 0}));
  NamedTensors params;
  for (int i = 0; i < 4; ++i)
    params.emplace_back(str("l", i, ".mlp.w"), randn({5, 3}, i).requires_grad_(true));
  LowRankAdam opt = make_optimizer(
      "frugal", params,
      {{"projector", "block"}, {"density", 0.5}, {"update_gap", 2}, {"block_order", "ascending"}});
  auto has_moments = [&](const std::string& name) {
    for (const auto& [n, t] : opt.state_tensors())
      if (n == name + ".exp_avg") return true;
    return false;
  };
  for (int t = 0; t < 3; ++t) {
    for (const auto& [n, p] : params) p.mutable_grad() = randn({5, 3}, 10 + t);
    opt.step(0.01);
  }
  // Period 1 (steps 2-3): l2 and l3 run Adam; l0 and l1 were freed and take signSGD.
  EXPECT_FALSE(opt.is_active("l0.mlp.w"));
  EXPECT_TRUE(opt.is_active("l2.mlp.w"));
  EXPECT_FALSE(has_moments("l0.mlp.w"));
  EXPECT_TRUE(has_moments("l2.mlp.w"));
  EXPECT_EQ(opt.bytes().optimizer_states, 2 * 2 * 15 * 4);
}

TEST(OptimRegistryTest, ListsTheMethodsWithPapersAndValidatesOptions) {
  std::set<std::string> names;
  for (const MethodInfo& info : registry().list()) {
    names.insert(info.name);
    EXPECT_FALSE(info.summary.empty()) << info.name;
    EXPECT_FALSE(info.paper.empty()) << info.name;
    EXPECT_FALSE(info.options.empty()) << info.name;
  }
  EXPECT_EQ(names, (std::set<std::string>{"dct", "fira", "frugal", "galore", "gradnormlorp", "wngalore"}));
  EXPECT_EQ(registry().family(), "optim");
  // Presets carry the per-method choices.
  const LowRankConfig galore = method_config("galore");
  EXPECT_EQ(galore.decay, DecayPlacement::kAfterUpdate);
  EXPECT_EQ(galore.eps_placement, EpsPlacement::kGaLore);
  EXPECT_FALSE(galore.reset_on_refresh);
  EXPECT_DOUBLE_EQ(galore.scale, 0.25);
  const LowRankConfig frugal = method_config("frugal", {{"density", 0.5}});
  EXPECT_EQ(frugal.decay, DecayPlacement::kBeforeUpdate);
  EXPECT_TRUE(frugal.reset_on_refresh);
  EXPECT_EQ(frugal.residual, ResidualRule::kSignSgd);
  EXPECT_DOUBLE_EQ(*frugal.density, 0.5);
  EXPECT_EQ(method_config("dct").update_gap, 1);
  EXPECT_EQ(method_config("fira").residual, ResidualRule::kFira);
  EXPECT_EQ(method_config("galore", {{"projector", "dct"}}).to_json()["projector"], "dct");
  EXPECT_NE(testing::error_of([] {
              method_config("galore", {{"rnak", 3}});
            }).find("unknown option \"rnak\""),
            std::string::npos);
  EXPECT_THROW(method_config("galore", {{"residual", "nope"}}), InvalidArgument);
  EXPECT_THROW(method_config("galore", {{"update_gap", 0}}), InvalidArgument);
  EXPECT_THROW(method_config("fira", {{"projector", "randk"}}), InvalidArgument);
  EXPECT_THROW(method_config("adafactor"), NotFound);
}

}  // namespace
}  // namespace lowrank::optim
