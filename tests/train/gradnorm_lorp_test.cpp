// GradNormLoRP's weights (train/gradnorm_lorp.h) against the paper's W = M·(W₀ + IJ)/‖W₀ + IJ‖_c
// written out here in float64 with per-element loops: the forward weight and output, and the
// gradients of m, A and B — autograd of the written-out formula and the hand derivation
// ∂L/∂m_i = ⟨G_i, V̂_i⟩, ∂L/∂B = s·diag(m/n)·G·Aᵀ, ∂L/∂A = s·Bᵀ·diag(m/n)·G (the norm constant in
// backward, as the code's PEFT DoRA; the undifferentiated-norm gradient is shown to differ).
// Init gives W = W₀ with the code's r = 8, α = 16; the optimizer projects the factors only; the
// CLI pairing check names the flag.
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "lowrank/optim/methods.h"
#include "lowrank/train/gradnorm_lorp.h"
#include "lowrank/train/parameterization.h"
#include "tests/testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::train {
namespace {

using testing::max_abs_diff;

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::kDouble);
}

// W_ij = m_i·V_ij/‖V_i‖ with V = W₀ + s·B·A, element by element. `detach_norm`: the row norms as
// constants (PEFT's DoRA) or differentiated.
at::Tensor written_out_weight(const at::Tensor& w0, const at::Tensor& b, const at::Tensor& a,
                              const at::Tensor& m, double s, bool detach_norm) {
  const int64_t out = w0.size(0), in = w0.size(1), r = a.size(0);
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < out; ++i) {
    std::vector<at::Tensor> v;
    for (int64_t j = 0; j < in; ++j) {
      at::Tensor vij = w0[i][j];
      for (int64_t k = 0; k < r; ++k) vij = vij + s * b[i][k] * a[k][j];
      v.push_back(vij);
    }
    at::Tensor sq = at::zeros({}, at::kDouble);
    for (const at::Tensor& e : v) sq = sq + e * e;
    const at::Tensor n = detach_norm ? sq.detach().sqrt() : sq.sqrt();
    std::vector<at::Tensor> row;
    for (const at::Tensor& e : v) row.push_back(m[i] * e / n);
    rows.push_back(at::stack(row));
  }
  return at::stack(rows);
}

struct Case {
  at::Tensor w0 = randn({5, 7}, 1);
  at::Tensor b = randn({5, 3}, 2).mul_(0.3);
  at::Tensor a = randn({3, 7}, 3).mul_(0.3);
  at::Tensor m = randn({5}, 4).abs_().add_(0.5);
  at::Tensor bias = randn({5}, 5);
  at::Tensor x = randn({4, 7}, 6);
  at::Tensor c = randn({4, 5}, 7);  // L = Σ c ⊙ y
  double s = 16.0 / 3;
};

TEST(GradNormLorpWeightTest, ForwardIsTheWeightNormalisedLowRankWeight) {
  const Case k;
  const GradNormLorpOperator op(k.w0.clone(), k.b.clone(), k.a.clone(), k.m.clone(), k.s, k.bias.clone());
  const at::Tensor w = written_out_weight(k.w0, k.b, k.a, k.m, k.s, true);
  EXPECT_LT(max_abs_diff(op.dense_weight(), w), 1e-13);
  EXPECT_LT(max_abs_diff(op.forward(k.x), at::matmul(k.x, w.t()) + k.bias), 1e-12);
  // Each output row of W has norm m_i (the norm is taken over the input dimension).
  EXPECT_LT(max_abs_diff(at::linalg_vector_norm(op.dense_weight(), 2, {1}), k.m), 1e-13);
}

TEST(GradNormLorpWeightTest, GradientsOfMagnitudeAndFactorsMatchTheFormula) {
  const Case k;
  const at::Tensor b = k.b.clone().requires_grad_(true), a = k.a.clone().requires_grad_(true),
                   m = k.m.clone().requires_grad_(true);
  const GradNormLorpOperator op(k.w0.clone(), b, a, m, k.s, k.bias.clone());
  (op.forward(k.x) * k.c).sum().backward();

  // Autograd of the written-out formula.
  const at::Tensor b2 = k.b.clone().requires_grad_(true), a2 = k.a.clone().requires_grad_(true),
                   m2 = k.m.clone().requires_grad_(true);
  (at::matmul(k.x, written_out_weight(k.w0, b2, a2, m2, k.s, true).t()) * k.c).sum().backward();
  EXPECT_LT(max_abs_diff(m.grad(), m2.grad()), 1e-12);
  EXPECT_LT(max_abs_diff(b.grad(), b2.grad()), 1e-12);
  EXPECT_LT(max_abs_diff(a.grad(), a2.grad()), 1e-12);

  // The hand derivation: G = cᵀx = ∂L/∂W, V = W₀ + s·B·A, n = ‖V‖_row.
  const at::Tensor G = at::matmul(k.c.t(), k.x);
  const at::Tensor V = k.w0 + k.s * at::matmul(k.b, k.a);
  const at::Tensor n = V.pow(2).sum(1).sqrt();
  const at::Tensor dV = G * (k.m / n).unsqueeze(1);
  EXPECT_LT(max_abs_diff(m.grad(), (G * V / n.unsqueeze(1)).sum(1)), 1e-12);
  EXPECT_LT(max_abs_diff(b.grad(), k.s * at::matmul(dV, k.a.t())), 1e-12);
  EXPECT_LT(max_abs_diff(a.grad(), k.s * at::matmul(k.b.t(), dV)), 1e-12);

  // Differentiating the norm as well gives other factor gradients (same magnitude gradient).
  const at::Tensor b3 = k.b.clone().requires_grad_(true), a3 = k.a.clone().requires_grad_(true),
                   m3 = k.m.clone().requires_grad_(true);
  (at::matmul(k.x, written_out_weight(k.w0, b3, a3, m3, k.s, false).t()) * k.c).sum().backward();
  EXPECT_LT(max_abs_diff(m.grad(), m3.grad()), 1e-12);
  EXPECT_GT(max_abs_diff(b.grad(), b3.grad()), 1e-3);
}

TEST(GradNormLorpWeightTest, InitKeepsTheDenseWeightsWithTheCodesRankAndAlpha) {
  nn::Model model = testing_support::tiny_model(3);
  const at::Tensor w0 = model.slot("model.layers.0.mlp.up_proj").base().dense_weight().detach().clone();
  const AppliedParameterization applied = apply_parameterization(model, "gradnormlorp", Json::object(), 11);
  EXPECT_EQ(applied.config.rank, 8);
  EXPECT_DOUBLE_EQ(applied.config.alpha, 16);
  const auto& op = dynamic_cast<const GradNormLorpOperator&>(model.slot("model.layers.0.mlp.up_proj").base());
  EXPECT_DOUBLE_EQ(op.scale(), 2.0);
  EXPECT_EQ(op.b().size(1), 8);
  EXPECT_TRUE(at::equal(op.b(), at::zeros_like(op.b())));
  const double bound = 1.0 / std::sqrt(static_cast<double>(op.in_features()));  // kaiming_uniform(a=√5)
  EXPECT_LE(op.a().abs().max().item<double>(), bound);
  EXPECT_GT(op.a().abs().max().item<double>(), 0.5 * bound);
  EXPECT_TRUE(at::equal(op.base(), w0));
  EXPECT_LT(max_abs_diff(op.magnitude(), at::linalg_vector_norm(w0, 2, {1})), 1e-6);
  EXPECT_LT(max_abs_diff(op.dense_weight(), w0), 1e-6);
  // Trained: the factors and the magnitude; W₀ is frozen state.
  bool has_magnitude = false, has_base = false;
  for (const auto& [name, t] : applied.target.params) {
    has_magnitude |= name == "model.layers.0.mlp.up_proj.magnitude";
    has_base |= name == "model.layers.0.mlp.up_proj.base_weight";
  }
  EXPECT_TRUE(has_magnitude);
  EXPECT_FALSE(has_base);
  ASSERT_FALSE(applied.target.frozen.empty());
  // The optimizer projects the 2-D factors of the attention/MLP slots, not the magnitude.
  const optim::LowRankAdam opt = optim::make_optimizer("gradnormlorp", applied.target.params);
  EXPECT_TRUE(opt.is_projected("model.layers.0.mlp.up_proj.lowrank_a"));
  EXPECT_TRUE(opt.is_projected("model.layers.0.mlp.up_proj.lowrank_b"));
  EXPECT_FALSE(opt.is_projected("model.layers.0.mlp.up_proj.magnitude"));
  EXPECT_FALSE(opt.is_projected("model.embed_tokens.weight"));
}

TEST(GradNormLorpWeightTest, OptimizerNeedsTheWeightFormAndBadInputFails) {
  EXPECT_NO_THROW(
      check_gradnorm_lorp_pairing("gradnormlorp", "--parameterization", "gradnormlorp", "gradnormlorp"));
  EXPECT_NO_THROW(check_gradnorm_lorp_pairing("galore", "--parameterization", "", "gradnormlorp"));
  const std::string message = testing::error_of(
      [] { check_gradnorm_lorp_pairing("gradnormlorp", "--parameterization", "", "gradnormlorp"); });
  EXPECT_NE(message.find("--parameterization gradnormlorp (got none)"), std::string::npos) << message;
  const std::string finetune =
      testing::error_of([] { check_gradnorm_lorp_pairing("gradnormlorp", "--method", "lora", "dora"); });
  EXPECT_NE(finetune.find("--method dora (got lora)"), std::string::npos) << finetune;
  EXPECT_THROW(parameterization_config("gradnormlorp", {{"density", 0.1}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("gradnormlorp", {{"alpha", 0}}), InvalidArgument);
  EXPECT_THROW(
      GradNormLorpOperator(at::zeros({4, 6}), at::zeros({4, 2}), at::zeros({3, 6}), at::ones({4}), 1.0),
      InvalidArgument);
  EXPECT_THROW(
      GradNormLorpOperator(at::zeros({4, 6}), at::zeros({4, 2}), at::zeros({2, 6}), at::ones({5}), 1.0),
      InvalidArgument);
}

}  // namespace
}  // namespace lowrank::train
