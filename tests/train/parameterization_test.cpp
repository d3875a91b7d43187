// Low-rank parameterisations (train/parameterization.h): each operator's forward equals the
// method's formula written out in this file from the operator's tensors ((α/r)·B·A, + S placed by
// index_put, W0 + (α/r)·B·A, U diag(σ) Vᵀ with the active vectors in place, W, B·A,
// diag(m/‖V‖_row)·V); SLTrain's and low-rank BA's gradients equal autograd of the dense form
// (α/r)BA + S built independently;
// ReLoRA's merge-and-restart keeps the model's function, zeroes B, draws a new A and prunes the
// moments of A and B; training through each parameterisation lowers the loss and resumes
// bitwise; the densified model is a plain HF model; bad names, options and ranks fail early
// with messages that name the method, option or slot. SST: the operator is the SVD of the init,
// the sampled vectors get the enhanced gradients, a step leaves the other vectors bitwise
// unchanged, the re-SVD restores orthonormal factors and keeps the product. Low-rank BA's
// refactorisation keeps the product, balances the factors and zeroes every moment. TRP and
// Maestro have their own files (trp_test.cpp, maestro_test.cpp).
#include <cmath>
#include <filesystem>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "lowrank/catalog.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/mix/registry.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/lowrank_ba.h"
#include "lowrank/train/parameterization.h"
#include "lowrank/train/relora.h"
#include "lowrank/train/sltrain.h"
#include "lowrank/train/sst.h"
#include "lowrank/train/trainer.h"
#include "tests/registry_testing.h"
#include "tests/testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::train {
namespace {
namespace fs = std::filesystem;

using testing_support::lm_step;
using testing_support::make_trainable;
using testing_support::pattern_stream;
using testing_support::small_config;
using testing_support::tiny_model;

// Small options for the tiny model (hidden 16, intermediate 32): rank 4, ReLoRA restarting every
// 3 steps with one step of re-warmup; SST re-SVD every 4 steps and a fresh draw every 2; TRP
// pruning every 3 steps.
Json small_options(const std::string& method) {
  if (method == "sst")
    return Json{{"rank", 4}, {"reset_every", 4}, {"resample_every", 2}, {"restart_warmup", 1}};
  if (method == "trp") return Json{{"nuclear_weight", 1e-3}, {"energy", 0.98}, {"prune_every", 3}};
  // Maestro: a threshold above every importance cuts each slot to one component after step 3, so
  // the resume below starts from a checkpoint whose factors are smaller than a fresh operator's.
  if (method == "maestro") return Json{{"rank", 4}, {"shrink_every", 3}, {"shrink_threshold", 1e9}};
  Json o{{"rank", 4}, {"alpha", 8}};
  if (method == "sltrain") o["density"] = 0.1;
  if (method == "relora") {
    o["reset_every"] = 3;
    o["restart_warmup"] = 1;
  }
  return o;
}

// The name of one trained tensor of each operator in a checkpoint.
std::string trained_name(const std::string& method) {
  if (method == "sst") return "sst_u_active";
  if (method == "trp") return "weight";
  return "lowrank_a";
}

at::Tensor sample_ids(int64_t batch, int64_t len, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randint(0, 24, {batch, len}, gen, at::kLong);
}

// Gives every zero-initialised B a random value so that the low-rank path contributes.
void randomize_b(const AppliedParameterization& applied) {
  at::NoGradGuard no_grad;
  uint64_t seed = 100;
  for (const auto& [name, op] : applied.operators)
    for (auto& [n, t] : op->trainable())
      if (n == "lowrank_b") t.copy_(at::randn(t.sizes(), at::detail::createCPUGenerator(seed++)) * 0.1);
}

at::Tensor dense_sparse(const at::Tensor& indices, const at::Tensor& values, int64_t out, int64_t in);

// The contract every parameterisation of parameterization_registry() passes (the suite runs the
// registry's own list, so a registered method is tested without touching this file).
class ParameterizationMethodTest : public ::testing::TestWithParam<std::string> {};

// The parameter tensors of `op` by name (trained and frozen).
at::Tensor named(const ParameterizedOperator& op, const std::string& name) {
  for (const auto& [n, t] : op.tensors())
    if (n == name) return t.detach();
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

// The dense weight of `method`'s operator by the method's own formula, written out here from the
// operator's tensors (small_options: α = 8, r = 4, so α/r = 2).
at::Tensor written_out_weight(const std::string& method, const ParameterizedOperator& op) {
  const double scale = 8.0 / 4.0;
  const int64_t out = op.out_features(), in = op.in_features();
  if (method == "trp") return named(op, "weight");
  if (method == "sst") {
    // U diag(σ) Vᵀ with the trained columns U[:, I] = U_active, V[:, I] = V_active.
    const at::Tensor indices = named(op, "sst_indices");
    at::Tensor u = named(op, "sst_u").clone(), v = named(op, "sst_v").clone();
    const at::Tensor ua = named(op, "sst_u_active"), va = named(op, "sst_v_active");
    for (int64_t j = 0; j < indices.size(0); ++j) {
      const int64_t col = indices[j].item<int64_t>();
      u.select(1, col).copy_(ua.select(1, j));
      v.select(1, col).copy_(va.select(1, j));
    }
    return at::matmul(at::matmul(u, at::diag(named(op, "sst_sigma"))), v.t());
  }
  const at::Tensor ba = at::matmul(named(op, "lowrank_b"), named(op, "lowrank_a"));
  if (method == "maestro") return ba;  // W = B·A, no scale, at the full rank outside a step
  if (method == "lowrank") return scale * ba;
  if (method == "relora") return named(op, "weight") + scale * ba;
  if (method == "gradnormlorp") {  // diag(m / ‖V_row‖)·V, V = W0 + (α/r)·B·A
    const at::Tensor v = named(op, "base_weight") + scale * ba;
    return (named(op, "magnitude") / v.norm(2, {1})).unsqueeze(1) * v;
  }
  if (method == "sltrain")
    return scale * ba + dense_sparse(named(op, "sparse_indices"), named(op, "sparse_values"), out, in);
  ADD_FAILURE() << "no written-out formula for " << method;
  return at::zeros({out, in});
}

TEST_P(ParameterizationMethodTest, ForwardEqualsTheMethodsFormulaWrittenOut) {
  const std::string method = GetParam();
  nn::Model model = tiny_model(1);
  const AppliedParameterization applied = apply_parameterization(model, method, small_options(method), 7);
  // q, k, v, o, gate, up, down of both layers; lm_head stays dense.
  ASSERT_EQ(applied.operators.size(), 14u);
  EXPECT_EQ(model.slot("lm_head").base().kind(), "dense");
  for (const auto& [name, op] : applied.operators) {
    EXPECT_TRUE(is_parameterized_slot(name)) << name;
    EXPECT_EQ(model.slot(name).base().kind(), method) << name;
  }
  at::NoGradGuard no_grad;
  // Every trained tensor moved off its init (B = 0, SST's active vectors equal to the frozen
  // copies), so that each term of the formula shows in the output.
  uint64_t seed = 100;
  for (const auto& [name, op] : applied.operators)
    for (auto& [n, t] : op->trainable())
      t.add_(at::randn(t.sizes(), at::detail::createCPUGenerator(seed++)) * 0.1);
  const at::Tensor x = at::randn({3, 5, 16}, at::detail::createCPUGenerator(3));
  for (const auto& [name, op] : applied.operators) {
    if (op->in_features() != 16) continue;
    at::Tensor expected = at::matmul(x, written_out_weight(method, *op).t());
    if (op->bias().defined()) expected = expected + op->bias();
    EXPECT_LT(testing::max_abs_diff(op->forward(x), expected), 1e-5) << name;
  }
  // The whole model before and after densify().
  const at::Tensor ids = sample_ids(2, 9, 4);
  const at::Tensor before = model.forward(ids);
  densify(model);
  for (const nn::LinearSlot* s : model.slots()) EXPECT_EQ(s->base().kind(), "dense") << s->name();
  EXPECT_LT(testing::max_abs_diff(model.forward(ids), before), 1e-4);
}

// A short run lowers the loss, and a run stopped after step 5 and resumed from its checkpoint at
// step 4 logs the same losses and ends with the same tensors, bit for bit.
TEST_P(ParameterizationMethodTest, TrainingLowersTheLossAndResumesBitwise) {
  const std::string method = GetParam();
  const TokenStream data = pattern_stream(400);
  TrainerConfig c = small_config();
  c.steps = 8;
  c.lr = 2e-2;
  c.min_lr = 2e-3;
  c.checkpoint_every = 2;
  c.parameterization = method;
  c.parameterization_options = small_options(method);
  testing::TempDir straight_dir, resumed_dir;
  nn::Model straight = tiny_model(4);
  const TrainResult full = train(straight, data, c, straight_dir.path(), false);
  ASSERT_TRUE(full.finished);
  // Plain low-rank BA learns slowest (3.17 -> 2.91 here; SLTrain and ReLoRA reach about 0.75x).
  EXPECT_LT(full.steps.back().loss, 0.95 * full.steps.front().loss);
  // The checkpoint holds the factors (and the frozen state) under the slot names.
  const fs::path ckpt = *latest_checkpoint(straight_dir.path());
  const SafetensorsFile weights = SafetensorsFile::open(ckpt / "model.safetensors");
  EXPECT_TRUE(weights.contains("model.layers.0.self_attn.q_proj." + trained_name(method)));
  EXPECT_TRUE(weights.contains("model.layers.1.mlp.down_proj." + trained_name(method)));
  EXPECT_EQ(weights.contains("model.layers.0.mlp.up_proj.sparse_indices"), method == "sltrain");
  EXPECT_EQ(weights.contains("model.layers.0.mlp.up_proj.weight"), method == "relora" || method == "trp");
  EXPECT_EQ(weights.contains("model.layers.0.mlp.up_proj.sst_indices"), method == "sst");
  EXPECT_EQ(weights.contains("model.layers.0.mlp.up_proj.sst_u"), method == "sst");
  EXPECT_TRUE(weights.contains("model.embed_tokens.weight"));
  // The memory report counts every tensor of the run once: the checkpoint holds exactly the
  // trained and the frozen ones (ReLoRA's and GradNormLoRP's W0, SLTrain's and SST's indices; TRP trains its
  // dense W, low-rank BA and Maestro only factors), at their own dtypes (float32 and int64 here).
  int64_t checkpoint_bytes = 0;
  for (const TensorInfo& info : weights.tensors()) checkpoint_bytes += static_cast<int64_t>(info.nbytes());
  ASSERT_FALSE(full.memory.is_null());
  // Maestro's shrinking after step 3 leaves the last checkpoint smaller than the memory report,
  // which counts the run's tensors before it.
  if (method == "maestro") {
    EXPECT_GT(full.memory["weights"].get<int64_t>() + full.memory["frozen"].get<int64_t>(), checkpoint_bytes);
  } else {
    EXPECT_EQ(full.memory["weights"].get<int64_t>() + full.memory["frozen"].get<int64_t>(), checkpoint_bytes);
  }
  EXPECT_EQ(full.memory["frozen"].get<int64_t>() > 0,
            method == "sltrain" || method == "relora" || method == "sst" || method == "gradnormlorp");
  EXPECT_EQ(full.memory["total"].get<int64_t>(),
            full.memory["weights"].get<int64_t>() + full.memory["frozen"].get<int64_t>() +
                full.memory["grads"].get<int64_t>() + full.memory["optimizer_states"].get<int64_t>() +
                full.memory["projectors"].get<int64_t>());

  {
    nn::Model first = tiny_model(4);
    TrainerConfig killed = c;
    killed.stop_after = 5;
    const TrainResult part = train(first, data, killed, resumed_dir.path(), false);
    EXPECT_FALSE(part.finished);
  }
  nn::Model second = tiny_model(99);  // different init: everything must come from the checkpoint
  const TrainResult rest = train(second, data, c, resumed_dir.path(), true);
  ASSERT_TRUE(rest.finished);
  EXPECT_EQ(rest.steps.front().step, 5);
  testing::expect_same_metrics(straight_dir / "metrics.jsonl", resumed_dir / "metrics.jsonl");
  const auto ta = straight.named_tensors(), tb = second.named_tensors();
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) {
    EXPECT_EQ(ta[i].first, tb[i].first);
    EXPECT_TRUE(at::equal(ta[i].second, tb[i].second)) << ta[i].first;
  }
  // Another parameterisation cannot resume this run.
  TrainerConfig other = c;
  other.parameterization = method == "lowrank" ? "sltrain" : "lowrank";
  other.parameterization_options = Json{{"rank", 4}};
  nn::Model third = tiny_model(4);
  EXPECT_THROW(train(third, data, other, resumed_dir.path(), true), InvalidArgument);
}

// The densified model saved as an HF directory loads back as a plain dense model with the same
// logits.
TEST_P(ParameterizationMethodTest, DensifiedModelIsAPlainHfModel) {
  const std::string method = GetParam();
  nn::Model model = tiny_model(2);
  randomize_b(apply_parameterization(model, method, small_options(method), 3));
  densify(model);
  testing::TempDir dir;
  model.save(dir.path());
  const nn::Model loaded = nn::Model::load(dir.path());
  at::NoGradGuard no_grad;
  const at::Tensor ids = sample_ids(1, 7, 2);
  EXPECT_TRUE(at::equal(model.forward(ids), loaded.forward(ids)));
  for (const auto& [name, t] : loaded.named_tensors()) {
    EXPECT_EQ(name.find("lowrank"), std::string::npos) << name;
    EXPECT_EQ(name.find("sst_"), std::string::npos) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Registered, ParameterizationMethodTest,
                         ::testing::ValuesIn(testing::registered_names(parameterization_registry())),
                         testing::method_test_name);

// The sparse part placed at (row, col) = (idx / in, idx % in) by index_put: an independent dense S.
at::Tensor dense_sparse(const at::Tensor& indices, const at::Tensor& values, int64_t out, int64_t in) {
  at::Tensor s = at::zeros({out, in}, values.options().requires_grad(false));
  return s.index_put({at::floor_divide(indices, in), at::remainder(indices, in)}, values);
}

TEST(SlTrainTest, BackwardEqualsAutogradOfTheDenseForm) {
  const int64_t out = 7, in = 5, r = 3;
  const double scale = 2.0 / r;
  auto gen = at::detail::createCPUGenerator(11);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor b = at::randn({out, r}, gen, f64).requires_grad_(true);
  at::Tensor a = at::randn({r, in}, gen, f64).requires_grad_(true);
  at::Tensor indices = std::get<0>(at::randperm(out * in, gen, at::kLong).slice(0, 0, 9).sort());
  at::Tensor values = at::randn({9}, gen, f64).requires_grad_(true);
  at::Tensor bias = at::randn({out}, gen, f64).requires_grad_(true);
  const SlTrainOperator op(b, a, scale, indices, values, bias);
  const at::Tensor x = at::randn({2, 4, in}, gen, f64);
  const at::Tensor g = at::randn({2, 4, out}, gen, f64);
  (op.forward(x) * g).sum().backward();

  // Oracle: leaves of their own, W = (α/r)·B·A + S, y = x Wᵀ + b.
  at::Tensor b2 = b.detach().clone().requires_grad_(true), a2 = a.detach().clone().requires_grad_(true);
  at::Tensor v2 = values.detach().clone().requires_grad_(true),
             bias2 = bias.detach().clone().requires_grad_(true);
  const at::Tensor w = scale * at::matmul(b2, a2) + dense_sparse(indices, v2, out, in);
  (at::matmul(x, w.t()).add(bias2) * g).sum().backward();
  EXPECT_LT(testing::max_abs_diff(a.grad(), a2.grad()), 1e-12);
  EXPECT_LT(testing::max_abs_diff(b.grad(), b2.grad()), 1e-12);
  EXPECT_LT(testing::max_abs_diff(values.grad(), v2.grad()), 1e-12);
  EXPECT_LT(testing::max_abs_diff(bias.grad(), bias2.grad()), 1e-12);
  // And the values' gradient is dW gathered at the support, dW = Σ gᵀx.
  const at::Tensor dw = at::matmul(g.reshape({-1, out}).t(), x.reshape({-1, in}));
  EXPECT_LT(testing::max_abs_diff(values.grad(), dw.reshape({-1}).index_select(0, indices)), 1e-12);
  EXPECT_LT(testing::max_abs_diff(op.dense_weight(), w), 1e-12);
}

TEST(SlTrainTest, InitialisationFollowsTheReference) {
  nn::Model model = tiny_model(1);
  const AppliedParameterization applied =
      apply_parameterization(model, "sltrain", {{"rank", 4}, {"density", 0.25}}, 9);
  const auto& op = dynamic_cast<const SlTrainOperator&>(model.slot("model.layers.0.mlp.up_proj").base());
  EXPECT_EQ(op.indices().numel(), 32 * 16 / 4);
  EXPECT_TRUE(at::equal(std::get<0>(op.indices().sort()), op.indices()));
  EXPECT_EQ(std::get<0>(at::_unique(op.indices())).numel(), op.indices().numel());
  EXPECT_EQ(op.b().abs().max().item<double>(), 0.0);
  EXPECT_LE(op.a().abs().max().item<double>(), 1.0 / 4.0);  // U(±1/√in), in = 16
  EXPECT_LE(op.values().abs().max().item<double>(), 1.0 / 4.0);
  EXPECT_DOUBLE_EQ(op.scale(), 32.0 / 4);
  // Trainable: factors and values; frozen: the support.
  bool indices_frozen = false;
  for (const auto& [n, t] : applied.target.frozen)
    indices_frozen |= n == "model.layers.0.mlp.up_proj.sparse_indices";
  EXPECT_TRUE(indices_frozen);
  for (const auto& [n, t] : applied.target.params)
    EXPECT_EQ(n.find("sparse_indices"), std::string::npos) << n;
}

TEST(LowRankBaTest, GradientsEqualTheChainRuleThroughW) {
  const int64_t out = 6, in = 5, r = 2;
  const double scale = 4.0 / r;
  auto gen = at::detail::createCPUGenerator(5);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor b = at::randn({out, r}, gen, f64).requires_grad_(true);
  at::Tensor a = at::randn({r, in}, gen, f64).requires_grad_(true);
  const LowRankBaOperator op(b, a, scale);
  const at::Tensor x = at::randn({3, in}, gen, f64);
  const at::Tensor g = at::randn({3, out}, gen, f64);
  (op.forward(x) * g).sum().backward();
  // dL/dW = gᵀx; W = s·B·A  =>  dB = s·dW·Aᵀ, dA = s·Bᵀ·dW.
  const at::Tensor dw = at::matmul(g.t(), x);
  EXPECT_LT(testing::max_abs_diff(b.grad(), scale * at::matmul(dw, a.detach().t())), 1e-12);
  EXPECT_LT(testing::max_abs_diff(a.grad(), scale * at::matmul(b.detach().t(), dw)), 1e-12);
  // A central finite difference on one entry of A.
  at::NoGradGuard no_grad;
  const double h = 1e-6;
  at::Tensor ap = a.detach().clone(), am = a.detach().clone();
  ap[1][3] += h;
  am[1][3] -= h;
  const double fd = ((LowRankBaOperator(b.detach(), ap, scale).forward(x) * g).sum().item<double>() -
                     (LowRankBaOperator(b.detach(), am, scale).forward(x) * g).sum().item<double>()) /
                    (2 * h);
  EXPECT_NEAR(a.grad()[1][3].item<double>(), fd, 1e-6);
}

TEST(LowRankBaTest, InitialisationGivesNonZeroFactorsOfTheReferenceScale) {
  nn::Model model = tiny_model(1);
  apply_parameterization(model, "lowrank", {{"rank", 4}}, 2);
  const auto& op = dynamic_cast<const LowRankBaOperator&>(model.slot("model.layers.0.mlp.down_proj").base());
  EXPECT_EQ(op.a().sizes().vec(), (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(op.b().sizes().vec(), (std::vector<int64_t>{16, 4}));
  EXPECT_GT(op.b().abs().max().item<double>(), 0.0);
  EXPECT_LE(op.a().abs().max().item<double>(), 1.0 / std::sqrt(32.0));  // U(±1/√in)
  EXPECT_LE(op.b().abs().max().item<double>(), 1.0 / 2.0);              // U(±1/√r)
}

TEST(LowRankBaTest, RefactorisationKeepsTheProductBalancesTheFactorsAndResetsTheMoments) {
  nn::Model model = tiny_model(8);
  AppliedParameterization applied = apply_parameterization(
      model, "lowrank", {{"rank", 4}, {"refactor_every", 2}, {"recovery_steps", 1}}, 3);
  TrainTarget& target = applied.target;
  ASSERT_TRUE(target.after_update && target.lr_factor);
  make_trainable(target);
  optim::AdamW optimizer(target.params, optim::AdamConfig{});
  const TokenStream data = pattern_stream(200);
  WindowSampler sampler(2, data.size, 9);
  for (int64_t step = 0; step < 2; ++step) {
    lm_step(model, data, sampler, optimizer, 1e-2);
    if (step == 0) target.after_update(step, optimizer);  // not a refactorisation step
  }
  const auto& op = dynamic_cast<const LowRankBaOperator&>(model.slot("model.layers.0.mlp.up_proj").base());
  const at::Tensor w = op.dense_weight().detach().clone();
  target.after_update(1, optimizer);
  EXPECT_LT(testing::max_abs_diff(op.dense_weight(), w), 1e-5);
  // Balanced: BᵀB = A Aᵀ = diag(σ_r) of B·A.
  const at::Tensor s = at::linalg_svdvals(at::matmul(op.b(), op.a())).narrow(0, 0, 4);
  EXPECT_LT(testing::max_abs_diff(at::matmul(op.b().t(), op.b()), at::diag(s)), 1e-5);
  EXPECT_LT(testing::max_abs_diff(at::matmul(op.a(), op.a().t()), at::diag(s)), 1e-5);
  for (const auto& [n, t] : optimizer.state_tensors()) EXPECT_EQ(t.abs().max().item<double>(), 0.0) << n;
  EXPECT_EQ(target.lr_factor(1), 1.0);
  EXPECT_DOUBLE_EQ(target.lr_factor(2), 0.001);
  EXPECT_EQ(target.lr_factor(3), 1.0);
  EXPECT_DOUBLE_EQ(jagged_lr_factor(12, 10, 4, 0.001), 0.001 + 0.999 * 0.5);
  EXPECT_THROW(parameterization_config("lowrank", {{"refactor_every", 5}, {"recovery_steps", 5}}),
               InvalidArgument);
  // Without the option: no hooks.
  nn::Model plain = tiny_model(8);
  EXPECT_FALSE(apply_parameterization(plain, "lowrank", {{"rank", 4}}, 3).target.after_update);
}

TEST(ReloraTest, MergeKeepsTheFunctionZeroesBAndPrunesTheMoments) {
  nn::Model model = tiny_model(6);
  const Json options{{"rank", 4}, {"reset_every", 2}, {"restart_warmup", 1}, {"prune_ratio", 0.75}};
  AppliedParameterization applied = apply_parameterization(model, "relora", options, 1);
  TrainTarget& target = applied.target;
  ASSERT_TRUE(target.after_update && target.lr_factor);
  // W0 is frozen; it is not among the trained tensors.
  for (const auto& [n, t] : target.params) EXPECT_FALSE(n.ends_with("q_proj.weight")) << n;
  EXPECT_FALSE(target.frozen.empty());
  make_trainable(target);
  optim::AdamW optimizer(target.params, optim::AdamConfig{});
  const at::Tensor ids = sample_ids(2, 8, 3);
  const TokenStream data = pattern_stream(200);
  WindowSampler sampler(1, data.size, 9);
  for (int64_t step = 0; step < 2; ++step) {
    lm_step(model, data, sampler, optimizer, 1e-2);
    if (step == 0) {
      target.after_update(step, optimizer);  // not a restart step: nothing happens
      EXPECT_GT(applied.operators[0].second->trainable()[1].second.abs().max().item<double>(), 0.0);
    }
  }
  const auto& op = dynamic_cast<const ReloraOperator&>(model.slot("model.layers.0.self_attn.q_proj").base());
  const at::Tensor w0_before = op.w0().clone(), a_before = op.a().clone();
  const at::Tensor dense_before = op.dense_weight().detach().clone();
  at::Tensor logits_before;
  {
    at::NoGradGuard no_grad;
    logits_before = model.forward(ids);
  }
  target.after_update(1, optimizer);  // step 2 done: merge and restart
  at::NoGradGuard no_grad;
  EXPECT_LT(testing::max_abs_diff(model.forward(ids), logits_before), 1e-5);
  EXPECT_EQ(op.b().abs().max().item<double>(), 0.0);
  EXPECT_FALSE(at::equal(op.a(), a_before));
  EXPECT_FALSE(at::equal(op.w0(), w0_before));
  EXPECT_LT(testing::max_abs_diff(op.w0(), dense_before), 1e-6);
  // A's and B's moments keep at most a quarter of their entries; the lm_head's are untouched.
  for (const auto& [n, t] : optimizer.state_tensors()) {
    const double nonzero = t.ne(0).sum().item<double>() / static_cast<double>(t.numel());
    if (n.find(".lowrank_") != std::string::npos) {
      EXPECT_LE(nonzero, 0.25 + 1e-9) << n;
    } else if (n.starts_with("lm_head")) {
      EXPECT_GT(nonzero, 0.25) << n;
    }
  }
  // Jagged schedule: after each restart (every 2 steps) one step at factor 0.
  EXPECT_EQ(target.lr_factor(0), 1.0);
  EXPECT_EQ(target.lr_factor(1), 1.0);
  EXPECT_EQ(target.lr_factor(2), 0.0);
  EXPECT_EQ(target.lr_factor(3), 1.0);
  EXPECT_EQ(jagged_lr_factor(13, 10, 4), 0.75);
  EXPECT_EQ(jagged_lr_factor(5, 10, 4), 1.0);
}

TEST(ReloraTest, MagnitudePruneZeroesTheSmallestEntries) {
  at::Tensor t = at::tensor({0.5, -4.0, 1.0, -0.1, 3.0, 2.0, -0.2, 0.05, 6.0, -7.0});
  optim::magnitude_prune_(t, 0.5);
  EXPECT_TRUE(at::equal(t.ne(0), at::tensor({0, 1, 0, 0, 1, 1, 0, 0, 1, 1}).to(at::kBool)));
  at::Tensor u = at::ones({4});
  optim::magnitude_prune_(u, 1.0);
  EXPECT_EQ(u.abs().sum().item<double>(), 0.0);
  at::Tensor v = at::ones({4});
  optim::magnitude_prune_(v, 0.0);
  EXPECT_EQ(v.sum().item<double>(), 4.0);
}

// ---- SST ----

// Columns of `a` [n, d] equal to those of `b` bitwise at the positions where `same` is true.
void expect_columns(const at::Tensor& a, const at::Tensor& b, const std::vector<bool>& same,
                    const char* what) {
  for (int64_t j = 0; j < a.size(1); ++j) {
    const bool eq = at::equal(a.select(1, j), b.select(1, j));
    EXPECT_EQ(eq, static_cast<bool>(same[static_cast<size_t>(j)])) << what << " column " << j;
  }
}

TEST(SstTest, InitIsTheSvdAndForwardIsTheSpectralProduct) {
  nn::Model model = tiny_model(3);
  const at::Tensor w = model.slot("model.layers.0.mlp.up_proj").base().dense_weight().detach().clone();
  apply_parameterization(model, "sst", {{"rank", 4}}, 5);
  const auto& op = dynamic_cast<const SstOperator&>(model.slot("model.layers.0.mlp.up_proj").base());
  EXPECT_EQ(op.sigma().numel(), 16);  // d = min(32, 16)
  EXPECT_EQ(op.indices().numel(), 4);
  EXPECT_LT(testing::max_abs_diff(op.dense_weight(), w), 1e-5);  // zero distortion at init
  at::NoGradGuard no_grad;
  // With the active vectors moved off the SVD, forward = x·(U diag(σ) Vᵀ)ᵀ of the full factors.
  op.u_active().add_(at::randn(op.u_active().sizes(), at::detail::createCPUGenerator(1)) * 0.1);
  op.v_active().add_(at::randn(op.v_active().sizes(), at::detail::createCPUGenerator(2)) * 0.1);
  const at::Tensor x = at::randn({3, 16}, at::detail::createCPUGenerator(3));
  const at::Tensor wd = at::matmul(op.full_u() * op.sigma(), op.full_v().t());
  EXPECT_LT(testing::max_abs_diff(op.forward(x), at::matmul(x, wd.t())), 1e-5);
  EXPECT_TRUE(at::equal(op.full_u().index_select(1, op.indices()), op.u_active()));
}

TEST(SstTest, SampledVectorsGetTheEnhancedGradients) {
  const int64_t out = 7, in = 5;
  auto gen = at::detail::createCPUGenerator(21);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  auto [u, s, vh] = at::linalg_svd(at::randn({out, in}, gen, f64), false);
  const at::Tensor v = vh.t().contiguous();
  const at::Tensor idx = at::tensor({3, 1}, at::kLong);
  at::Tensor sigma = s.clone().requires_grad_(true);
  at::Tensor ua = u.index_select(1, idx).requires_grad_(true),
             va = v.index_select(1, idx).requires_grad_(true);
  const SstOperator op(u.clone(), sigma, v.clone(), idx.clone(), ua, va);
  const at::Tensor x = at::randn({2, 3, in}, gen, f64), g = at::randn({2, 3, out}, gen, f64);
  const at::Tensor y = op.forward(x);
  EXPECT_LT(testing::max_abs_diff(y, at::matmul(x, op.dense_weight().t())), 1e-12);
  (y * g).sum().backward();
  // G = ∂L/∂W = Σ gᵀx. σ_i: u_iᵀ G v_i for all i; U_I: G V_I and V_I: Gᵀ U_I, without σ_I.
  const at::Tensor gw = at::matmul(g.reshape({-1, out}).t(), x.reshape({-1, in}));
  EXPECT_LT(testing::max_abs_diff(sigma.grad(), (u * at::matmul(gw, v)).sum(0)), 1e-12);
  EXPECT_LT(testing::max_abs_diff(ua.grad(), at::matmul(gw, v.index_select(1, idx))), 1e-12);
  EXPECT_LT(testing::max_abs_diff(va.grad(), at::matmul(gw.t(), u.index_select(1, idx))), 1e-12);
}

TEST(SstTest, AStepChangesOnlyTheSampledVectorsAndReinitKeepsTheProduct) {
  nn::Model model = tiny_model(6);
  AppliedParameterization applied = apply_parameterization(
      model, "sst", {{"rank", 3}, {"reset_every", 2}, {"resample_every", 1}, {"restart_warmup", 1}}, 4);
  TrainTarget& target = applied.target;
  ASSERT_TRUE(target.after_update && target.lr_factor);
  for (const auto& [n, t] : target.params) EXPECT_FALSE(n.ends_with(".sst_u")) << n;
  make_trainable(target);
  optim::AdamW optimizer(target.params, optim::AdamConfig{});
  const auto& op = dynamic_cast<const SstOperator&>(model.slot("model.layers.1.self_attn.o_proj").base());
  const at::Tensor u0 = op.full_u(), v0 = op.full_v(), sigma0 = op.sigma().clone(),
                   idx0 = op.indices().clone();
  const TokenStream data = pattern_stream(200);
  WindowSampler sampler(1, data.size, 9);
  lm_step(model, data, sampler, optimizer, 1e-2);
  target.after_update(0, optimizer);  // renormalise, write back and draw a new subset
  // The vectors trained in the step changed; the others are bitwise the same.
  std::vector<bool> same(16, true);
  for (int64_t i = 0; i < idx0.numel(); ++i) same[static_cast<size_t>(idx0[i].item<int64_t>())] = false;
  expect_columns(op.full_u(), u0, same, "U");
  expect_columns(op.full_v(), v0, same, "V");
  EXPECT_GT((op.sigma() - sigma0).abs().min().item<double>(), 0.0);  // every σ trained
  EXPECT_GE(op.sigma().min().item<double>(), 0.0);
  for (int64_t i = 0; i < idx0.numel(); ++i) {  // renormalised
    const int64_t j = idx0[i].item<int64_t>();
    EXPECT_NEAR(op.full_u().select(1, j).norm().item<double>(), 1.0, 1e-6);
  }
  // The active moments were reset with the new draw.
  for (const auto& [n, t] : optimizer.state_tensors())
    if (n.find("sst_u_active") != std::string::npos) {
      EXPECT_EQ(t.abs().max().item<double>(), 0.0) << n;
    }

  // Step 2 ends the round: re-SVD. The product is kept, U and V are orthonormal again.
  lm_step(model, data, sampler, optimizer, 1e-2);
  op.project();  // as the hook does first (idempotent up to rounding)
  const at::Tensor w_before = op.dense_weight().clone();
  EXPECT_GT(testing::max_abs_diff(at::matmul(op.full_u().t(), op.full_u()), at::eye(16)), 1e-6);
  target.after_update(1, optimizer);
  const at::Tensor eye = at::eye(16);
  EXPECT_LT(testing::max_abs_diff(op.dense_weight(), w_before), 1e-5);
  EXPECT_LT(testing::max_abs_diff(at::matmul(op.full_u().t(), op.full_u()), eye), 1e-5);
  EXPECT_LT(testing::max_abs_diff(at::matmul(op.full_v().t(), op.full_v()), eye), 1e-5);
  EXPECT_TRUE(at::equal(std::get<0>(op.sigma().sort(0, /*descending=*/true)), op.sigma()));
  EXPECT_EQ(target.lr_factor(2), 0.0);  // one step of re-warmup after the round
  EXPECT_EQ(target.lr_factor(3), 1.0);
}

// The sampler's distribution is tested against the paper's rule in sst_test.cpp.

TEST(ParameterizationTest, BadInputFailsWithAClearError) {
  using testing::error_of;
  EXPECT_THROW(parameterization_config("nope", Json::object()), NotFound);
  const std::string unknown = error_of([] { parameterization_config("nope", Json::object()); });
  for (const char* name : {"lowrank", "sltrain", "relora"})
    EXPECT_NE(unknown.find(name), std::string::npos) << unknown;
  EXPECT_NE(error_of([] {
              parameterization_config("lowrank", {{"density", 0.1}});
            }).find("density"),
            std::string::npos);
  EXPECT_THROW(parameterization_config("sltrain", {{"density", 0.0}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("sltrain", {{"rank", 0}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("relora", {{"reset_every", 0}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("relora", {{"reset_every", 5}, {"restart_warmup", 5}}),
               InvalidArgument);
  EXPECT_THROW(parameterization_config("relora", {{"prune_ratio", 1.5}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("lowrank", Json::array()), InvalidArgument);
  EXPECT_THROW(parameterization_config("sst", {{"alpha", 8}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("sst", {{"resample_every", -1}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("trp", {{"rank", 4}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("trp", {{"energy", 0.0}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("trp", {{"energy", 1.5}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("trp", {{"prune_every", 0}}), InvalidArgument);
  EXPECT_THROW(parameterization_config("trp", {{"nuclear_weight", -1.0}}), InvalidArgument);

  nn::Model model = tiny_model(1);
  const std::string too_big = error_of([&] { apply_parameterization(model, "lowrank", {{"rank", 17}}, 0); });
  EXPECT_NE(too_big.find("model.layers.0.self_attn.q_proj"), std::string::npos) << too_big;
  EXPECT_NE(too_big.find("rank 17"), std::string::npos) << too_big;
  for (const nn::LinearSlot* s : model.slots()) EXPECT_EQ(s->base().kind(), "dense");  // nothing applied
  EXPECT_THROW(apply_parameterization(model, "sst", {{"rank", 17}}, 0), InvalidArgument);
  EXPECT_THROW(apply_parameterization(model, "maestro", {{"rank", 17}}, 0), InvalidArgument);
  apply_parameterization(model, "lowrank", {{"rank", 4}}, 0);
  EXPECT_THROW(apply_parameterization(model, "sltrain", {{"rank", 4}}, 0), InvalidArgument);

  TrainerConfig c = small_config();
  c.parameterization = "sltrain";
  c.optimizer = "galore";
  EXPECT_THROW(c.validate(), InvalidArgument);
}

// Token mixers other than attention keep their projections under model.layers.N.mixer.*
// (token_mixer.h): a parameterisation must see them as it sees self_attn.*.
TEST(ParameterizationTest, MixerSlotsAreParameterized) {
  EXPECT_TRUE(is_parameterized_slot("model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(is_parameterized_slot("model.layers.3.mixer.q_proj"));
  EXPECT_TRUE(is_parameterized_slot("model.layers.1.mixer.out_proj"));
  EXPECT_TRUE(is_parameterized_slot("model.layers.1.mlp.down_proj"));
  EXPECT_FALSE(is_parameterized_slot("lm_head"));
  EXPECT_FALSE(is_parameterized_slot("score"));
  EXPECT_FALSE(is_parameterized_slot("model.mixer.q_proj"));  // not inside a decoder layer
}

// MambaForCausalLM keeps its layers under backbone.layers.N.mixer.* (transformers' names): a
// parameterisation reaches its four projections in every layer, and leaves lm_head alone.
TEST(ParameterizationTest, MambaMixerSlotsAreParameterized) {
  (void)mix::registry();  // registers the mamba mixer
  const Json config{{"architectures", {"MambaForCausalLM"}},
                    {"model_type", "mamba"},
                    {"vocab_size", 16},
                    {"hidden_size", 8},
                    {"num_hidden_layers", 2},
                    {"state_size", 4},
                    {"conv_kernel", 3},
                    {"time_step_rank", 2}};
  nn::Model model = nn::Model::random(nn::ModelConfig::from_json(config, "tiny mamba"), 1);
  const AppliedParameterization applied =
      apply_parameterization(model, "lowrank", Json{{"rank", 2}, {"alpha", 4}}, 7);
  std::set<std::string> names;
  for (const auto& [name, op] : applied.operators) names.insert(name);
  std::set<std::string> want;
  for (const int layer : {0, 1})
    for (const char* proj : {"in_proj", "x_proj", "dt_proj", "out_proj"})
      want.insert(str("backbone.layers.", layer, ".mixer.", proj));
  EXPECT_EQ(names, want);
  EXPECT_EQ(model.slot("backbone.layers.1.mixer.x_proj").base().kind(), "lowrank");
  EXPECT_EQ(model.slot("lm_head").base().kind(), "dense");
}

TEST(ParameterizationTest, MethodsAreListedInTheCatalog) {
  for (const MethodFamily& f : method_families()) {
    if (f.name != "parameterization") continue;
    std::vector<std::string> names;
    for (const MethodInfo& m : f.methods) names.push_back(m.name);
    EXPECT_EQ(names, (std::vector<std::string>{"gradnormlorp", "lowrank", "maestro", "relora", "sltrain",
                                               "sst", "trp"}));
    return;
  }
  FAIL() << "no parameterization family";
}

// `lowrank pretrain --parameterization`: early errors, and a short run whose exported model
// `lowrank eval` reads as a plain HF model (Maestro's, whose discovered ranks are in pretrain.json).
TEST(ParameterizationCliTest, PretrainExportsADenseModelAndRejectsBadInput) {
  testing::TempDir dir;
  const fs::path corpus = testing::write_word_corpus(dir / "corpus.txt", 60);
  const std::string base = testing::lowrank_binary().string() +
                           " --threads 2 --quiet pretrain --preset tiny --corpus " + corpus.string() +
                           " --max-documents 30 --seed 1 --steps 2 --out ";
  auto r = testing::run_command(base + (dir / "bad").string() + " --parameterization nope");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("sltrain"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "bad" / "tokenizer"));  // failed before any work
  r = testing::run_command(base + (dir / "bad").string() + " --parameterization lowrank --rank 999");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("model.layers.0.self_attn.q_proj"), std::string::npos) << r.out;
  r = testing::run_command(base + (dir / "bad").string() + " --parameterization-options '{\"rank\": 4}'");
  EXPECT_EQ(r.exit_code, 1) << r.out;

  // Maestro with a threshold every component misses: one component per slot after the first step,
  // and pretrain.json records the discovered ranks.
  r = testing::run_command(base + (dir / "run").string() +
                           " --parameterization maestro --rank 4 --parameterization-options "
                           "'{\"shrink_every\": 1, \"shrink_threshold\": 1e9}'");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json summary = read_json_file(dir / "run/pretrain.json");
  EXPECT_EQ(summary["parameterization"]["method"], "maestro") << summary.dump();
  const Json& ranks = summary["parameterization"]["ranks"];
  EXPECT_EQ(ranks.size(), 7 * summary["model"]["num_hidden_layers"].get<size_t>()) << ranks.dump();
  for (const auto& entry : ranks.items()) EXPECT_EQ(entry.value().get<int64_t>(), 1) << entry.key();
  const SafetensorsFile weights = SafetensorsFile::open(dir / "run/model/model.safetensors");
  EXPECT_TRUE(weights.contains("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(weights.contains("model.layers.0.self_attn.q_proj.lowrank_a"));
  r = testing::run_command(testing::lowrank_binary().string() + " --threads 2 --quiet --json eval --model " +
                           (dir / "run/model").string() + " --data " + corpus.string() +
                           " --seq-len 32 --max-tokens 500");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_GT(Json::parse(r.out.substr(r.out.find('{')))["perplexity"].get<double>(), 1.0);
}

}  // namespace
}  // namespace lowrank::train
