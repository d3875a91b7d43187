// The optimizers of gradnorm_lorp.h against oracles written here with plain tensor math.
// gradnormlorp (the paper's): one step on the factors and magnitude of GradNormLoRP's weights,
// computed by hand in float64 (an independent SVD of each factor's gradient, the projected Adam
// step with α, AdamW on the magnitude); the preset's defaults.
// wngalore (the weight-normalised GaLore on dense weights): with a full-rank coordinate projector (a
// permutation, so element-wise Adam is unchanged) three steps equal the unprojected weight-normalised update
// (row norms g, ∇g = ⟨G_i, v̂_i⟩, ∇V = G − ∇g·v̂, GaLore's Adam on ∇V with α, Adam on g, W = g'·V'/‖V'‖); a
// gradient parallel to each row moves only the row norms; the code's variant (∇V = G); a zero row takes the
// plain update; a state round trip gives bit-identical next steps with the SVD projector; bad options are
// refused with messages naming them.
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "lowrank/optim/gradnorm_lorp.h"
#include "lowrank/optim/methods.h"
#include "tests/optim/optim_testing.h"
#include "tests/testing.h"

namespace lowrank::optim {
namespace {

using testing::max_abs_diff;

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed, double scale = 1.0) {
  return testing_support::randn(std::move(shape), seed, scale, at::kDouble);
}
using testing_support::clone_params;

// The oracle: one weight's unprojected GradNormLoRP steps, GaLore's ε placement.
struct Oracle {
  Oracle(const AdamConfig& adam, double alpha, double wd, bool orthogonal, at::Tensor w)
      : beta1(adam.beta1),
        beta2(adam.beta2),
        eps(adam.eps),
        alpha(alpha),
        wd(wd),
        orthogonal(orthogonal),
        w(std::move(w)) {}
  double beta1, beta2, eps, alpha, wd;
  bool orthogonal;
  at::Tensor w, m, v, mg, vg;
  int64_t t = 0;

  void step(const at::Tensor& G, double lr) {
    const at::Tensor g = w.pow(2).sum(1, true).sqrt();  // ‖W_i‖
    const at::Tensor unit = w / g;
    const at::Tensor grad_g = (G * unit).sum(1, true);
    const at::Tensor grad_v = orthogonal ? G - grad_g * unit : G;
    if (!m.defined()) {
      m = at::zeros_like(grad_v);
      v = at::zeros_like(grad_v);
      mg = at::zeros_like(grad_g);
      vg = at::zeros_like(grad_g);
    }
    ++t;
    m = beta1 * m + (1 - beta1) * grad_v;
    v = beta2 * v + (1 - beta2) * grad_v * grad_v;
    mg = beta1 * mg + (1 - beta1) * grad_g;
    vg = beta2 * vg + (1 - beta2) * grad_g * grad_g;
    const double s = lr * std::sqrt(1 - std::pow(beta2, t)) / (1 - std::pow(beta1, t));
    const at::Tensor V = w - s * alpha * (m / (v.sqrt() + eps));
    const at::Tensor g_new = g - s * (mg / (vg.sqrt() + eps));
    w = g_new * V / V.pow(2).sum(1, true).sqrt();
    w = w - lr * wd * w;
  }
};

// One GaLore step on a factor F [p, q] with gradient D, by hand: the top-r singular vectors of D
// on F's short side (left P = U[:, :r] when p < q, right Q = Vh[:r] otherwise), the first Adam
// step on R with ε added to √V, α on the back-projection. The sign of each singular vector
// cancels (N is odd in R).
at::Tensor hand_factor_step(const at::Tensor& f, const at::Tensor& d, int64_t r, const AdamConfig& adam,
                            double alpha, double lr) {
  const auto [u, sv, vh] = at::linalg_svd(d, /*full_matrices=*/false);
  const bool left = f.size(0) < f.size(1);
  const at::Tensor basis = left ? u.slice(1, 0, r) : vh.slice(0, 0, r);
  const at::Tensor R = left ? at::matmul(basis.t(), d) : at::matmul(d, basis.t());
  const at::Tensor M = (1 - adam.beta1) * R, V = (1 - adam.beta2) * R * R;
  const at::Tensor N = M / (V.sqrt() + adam.eps);
  const double step = lr * std::sqrt(1 - adam.beta2) / (1 - adam.beta1);
  return f - step * alpha * (left ? at::matmul(basis, N) : at::matmul(N, basis));
}

TEST(GradNormLoRPTest, OneStepOnTheFactorsAndMagnitudeMatchesTheHandComputation) {
  // GradNormLoRP's trained tensors of one slot (train/gradnorm_lorp.h): A [r, in], B [out, r], m.
  const std::string slot = "model.layers.0.self_attn.q_proj.";
  const NamedTensors params = {{slot + "lowrank_a", randn({4, 9}, 1, 0.3)},
                               {slot + "lowrank_b", randn({7, 4}, 2, 0.3)},
                               {slot + "magnitude", randn({7}, 3).abs() + 0.5}};
  const NamedTensors before = clone_params(params);
  // The preset's α, ε and β; projection rank 2 < the factors' short side 4.
  LowRankAdam opt = make_optimizer("gradnormlorp", params, {{"rank", 2}});
  const LowRankConfig& c = opt.config();
  EXPECT_FALSE(c.weight_norm);
  EXPECT_FALSE(opt.is_projected(slot + "magnitude"));
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    grads.push_back(randn(params[i].second.sizes().vec(), 10 + i));
    params[i].second.mutable_grad() = grads.back().clone();
  }
  const double lr = 0.01;
  opt.step(lr);
  for (size_t i = 0; i < 2; ++i) {
    const at::Tensor want = hand_factor_step(before[i].second, grads[i], 2, c.adam, 0.25, lr);
    EXPECT_LT(max_abs_diff(params[i].second, want), 1e-9) << params[i].first;
    EXPECT_GT(max_abs_diff(params[i].second, before[i].second), 1e-4) << params[i].first;
  }
  // The magnitude: AdamW's first step, m − η·ĝ/(|ĝ| + ε) with ĝ the bias-corrected moments' ratio.
  const at::Tensor g = grads[2];
  const at::Tensor want = before[2].second - lr * g / (g.abs() + c.adam.eps);
  EXPECT_LT(max_abs_diff(params[2].second, want), 1e-12);
  // Defaults: the code's pre-training scripts (GaLore's).
  const LowRankConfig d = method_config("gradnormlorp");
  EXPECT_EQ(d.rank, 128);
  EXPECT_EQ(d.update_gap, 200);
  EXPECT_DOUBLE_EQ(d.scale, 0.25);
  EXPECT_DOUBLE_EQ(d.adam.eps, 1e-6);
  EXPECT_DOUBLE_EQ(d.adam.beta2, 0.999);
}

TEST(WnGaloreTest, FullRankCoordinateProjectorMatchesTheUnprojectedUpdate) {
  for (bool orthogonal : {true, false}) {
    const NamedTensors params = {{"model.layers.0.mlp.up_proj.weight", randn({6, 4}, 1, 0.5)},
                                 {"model.layers.0.self_attn.o_proj.weight", randn({4, 6}, 2, 0.5)}};
    LowRankAdam opt = make_optimizer("wngalore", params,
                                     {{"projector", "columns"},
                                      {"rank", 64},
                                      {"update_gap", 1000},
                                      {"scale", 0.5},
                                      {"weight_decay", 0.1},
                                      {"orthogonal_grad", orthogonal}});
    const LowRankConfig& c = opt.config();
    EXPECT_TRUE(c.weight_norm);
    std::vector<Oracle> oracles;
    for (const auto& [name, p] : params)
      oracles.emplace_back(c.adam, 0.5, 0.1, orthogonal, p.detach().clone());
    const double lr = 0.02;
    for (int step = 0; step < 3; ++step) {
      for (size_t i = 0; i < params.size(); ++i) {
        const at::Tensor g = randn(params[i].second.sizes().vec(), 100 + 10 * step + i);
        params[i].second.mutable_grad() = g.clone();
        oracles[i].step(g, lr);
      }
      opt.step(lr);
    }
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_LT(max_abs_diff(params[i].second, oracles[i].w), 1e-12) << params[i].first << " " << orthogonal;
      EXPECT_GT(max_abs_diff(params[i].second, randn(params[i].second.sizes().vec(), i + 1, 0.5)), 1e-3);
    }
  }
}

TEST(WnGaloreTest, GradientAlongEachRowMovesOnlyTheRowNorms) {
  const at::Tensor w0 = randn({5, 8}, 3);
  const NamedTensors params = {{"l.mlp.w", w0.clone().requires_grad_(true)}};
  LowRankAdam opt = make_optimizer("wngalore", params, {{"rank", 2}, {"update_gap", 1}});
  // G_i = c_i·W_i: ∇V = 0, so the direction stays and each norm moves against c_i.
  const at::Tensor c = at::tensor({1.0, -2.0, 0.5, 3.0, -1.0}, at::kDouble).unsqueeze(1);
  params[0].second.mutable_grad() = c * w0;
  opt.step(0.1);
  const at::Tensor w = params[0].second.detach();
  const at::Tensor n0 = w0.pow(2).sum(1, true).sqrt(), n1 = w.pow(2).sum(1, true).sqrt();
  EXPECT_LT(max_abs_diff(w / n1, w0 / n0), 1e-9);
  // The first Adam step moves each norm by lr·sign(∇g) (ε aside).
  EXPECT_LT(max_abs_diff(n1 - n0, -0.1 * c.sign()), 1e-5);
}

TEST(WnGaloreTest, ZeroRowTakesThePlainUpdate) {
  at::Tensor w0 = randn({4, 6}, 5);
  w0[1].zero_();  // a zero row (as a zero-initialised LoRA B)
  const NamedTensors params = {{"l.mlp.w", w0.clone().requires_grad_(true)}};
  LowRankAdam opt = make_optimizer(
      "wngalore", params, {{"projector", "columns"}, {"rank", 64}, {"update_gap", 1000}, {"scale", 1.0}});
  const at::Tensor g = randn({4, 6}, 6);
  params[0].second.mutable_grad() = g;
  opt.step(0.01);
  const at::Tensor row = params[0].second.detach()[1];
  // First Adam step of the direction with G_1 itself (∇g = 0 there): V'_1 = −s·α·N, which is
  // −lr·√(1−β2)·G/(√(1−β2)·|G| + ε) with GaLore's ε placement and α = 1.
  const LowRankConfig& c = opt.config();
  const double k = std::sqrt(1 - c.adam.beta2);
  EXPECT_LT(max_abs_diff(row, -0.01 * k * g[1] / (k * g[1].abs() + c.adam.eps)), 1e-15);
  EXPECT_TRUE(at::isfinite(params[0].second).all().item<bool>());
}

TEST(WnGaloreTest, StateRoundTripGivesBitIdenticalNextSteps) {
  const NamedTensors initial = {{"model.layers.0.mlp.up_proj.weight", randn({8, 5}, 1, 0.3)},
                                {"model.layers.0.self_attn.q_proj.weight", randn({5, 8}, 2, 0.3)},
                                {"model.norm.weight", at::ones({5}, at::kDouble)}};
  const Json options = {{"rank", 2}, {"update_gap", 2}, {"weight_decay", 0.01}};
  const NamedTensors a = clone_params(initial);
  LowRankAdam first = make_optimizer("wngalore", a, options);
  auto set_grads = [](const NamedTensors& params, int step) {
    for (size_t i = 0; i < params.size(); ++i)
      params[i].second.mutable_grad() = randn(params[i].second.sizes().vec(), 1000 + 10 * step + i);
  };
  for (int t = 0; t < 3; ++t) {
    set_grads(a, t);
    first.step(0.01);
  }
  const NamedTensors state = first.state_tensors();
  bool has_magnitude = false;
  for (const auto& [n, t] : state)
    has_magnitude |= n == "model.layers.0.mlp.up_proj.weight.magnitude.exp_avg";
  EXPECT_TRUE(has_magnitude);
  const NamedTensors b = clone_params(a);
  LowRankAdam second = make_optimizer("wngalore", b, options);
  second.load_state(state, first.steps());
  for (int t = 3; t < 7; ++t) {
    set_grads(a, t);
    first.step(0.01);
    set_grads(b, t);
    second.step(0.01);
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  // The magnitude moments count as optimizer state: [m, 1] per projected weight, twice, on top
  // of GaLore's.
  const NamedTensors c = clone_params(a);
  LowRankAdam galore = make_optimizer("galore", c, options);
  set_grads(c, 0);
  galore.step(0.01);
  EXPECT_EQ(first.bytes().optimizer_states - galore.bytes().optimizer_states, 2 * (8 + 5) * 8);
  // A state without magnitude moments' partner is refused.
  NamedTensors broken;
  for (const auto& [n, t] : state)
    if (n != "model.layers.0.mlp.up_proj.weight.magnitude.exp_avg_sq") broken.emplace_back(n, t);
  EXPECT_THROW(second.load_state(broken, 3), Corruption);
}

TEST(WnGaloreTest, BadOptionsAreRefusedNamingThem) {
  auto message = [](const Json& options) {
    return testing::error_of([&] { (void)method_config("wngalore", options); });
  };
  EXPECT_NE(message({{"rank", 0}}).find("rank must be >= 1"), std::string::npos);
  EXPECT_NE(message({{"update_gap", 0}}).find("update_gap must be >= 1"), std::string::npos);
  EXPECT_NE(message({{"residual", "fira"}}).find("weight_norm"), std::string::npos);
  EXPECT_NE(message({{"projector", "block"}, {"density", 0.5}}).find("weight_norm"), std::string::npos);
  EXPECT_NE(message({{"orthogonal_grad", "yes"}}).find("orthogonal_grad"), std::string::npos);
  EXPECT_NE(message({{"magnitude", 1}}).find("unknown option \"magnitude\""), std::string::npos);
  const LowRankConfig c = method_config("wngalore");
  EXPECT_EQ(c.rank, 128);
  EXPECT_EQ(c.update_gap, 200);
  EXPECT_DOUBLE_EQ(c.scale, 0.25);
  EXPECT_TRUE(c.orthogonal_grad);
  EXPECT_EQ(c.to_json()["weight_norm"], true);
  EXPECT_FALSE(method_config("galore").to_json().contains("weight_norm"));
}

}  // namespace
}  // namespace lowrank::optim
