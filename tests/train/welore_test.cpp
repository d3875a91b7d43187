// WeLore's LRC fine-tuning (train/welore.h): which tensors a step changes, the factored gradient
// against autograd through the dense product, and the written compressed directory against the
// in-memory model; the whole `finetune --method welore` pipeline on the bundled tiny Llama.
#include "lowrank/train/welore.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "lowrank/adapt/finetune.h"
#include "lowrank/compress/format.h"
#include "lowrank/compress/methods.h"
#include "lowrank/compress/pipeline.h"
#include "lowrank/core/file.h"
#include "lowrank/data/token_dataset.h"
#include "tests/finetune_testing.h"
#include "tests/testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::train {
namespace {

namespace fs = std::filesystem;
using testing_support::pattern_stream;

// A tiny model compressed by WeLore at tau = 0.175: q_proj and gate_proj are made rank 2 plus tiny
// noise (a heavy-tailed spectrum: LRCs), every other projection is random (a flat-ish spectrum
// whose kept rank saves nothing: N-LRCs).
nn::Model welore_model() {
  nn::Model model = testing::tiny_llama({}, 11);
  at::manual_seed(3);
  for (nn::LinearSlot* s : model.slots()) {
    if (!s->name().ends_with("q_proj") && !s->name().ends_with("gate_proj")) continue;
    const int64_t m = s->out_features(), n = s->in_features();
    const at::Tensor w = at::matmul(at::randn({m, 2}), at::randn({2, n})) + 1e-3 * at::randn({m, n});
    s->replace_base(std::make_shared<nn::DenseOperator>(w));
  }
  compress::CompressOptions o;
  o.method = "welore";
  o.tau = 0.175;
  (void)compress::compress_model(model, o, nullptr);
  return model;
}

std::map<std::string, at::Tensor> snapshot(const nn::Model& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : model.named_tensors()) out[name] = t.detach().clone();
  return out;
}

// One AdamW step of `target` on the pattern stream.
void one_step(const nn::Model& model, TrainTarget& target) {
  testing_support::make_trainable(target);
  TrainerConfig config = testing_support::small_config();
  auto optimizer = make_optimizer(target.params, config);
  const TokenStream data = pattern_stream(400);
  WindowSampler sampler(1, data.size, 9);
  testing_support::lm_step(model, data, sampler, *optimizer, 1e-2);
}

TEST(WeLoreFinetuneTest, AStepChangesOnlyTheLowRankFactorsAndTheNormGains) {
  for (const bool train_norms : {true, false}) {
    SCOPED_TRACE(train_norms ? "train_norms" : "factors only");
    nn::Model model = welore_model();
    const WeLoreComponents c = welore_components(model);
    ASSERT_EQ(c.lrc.size(), 4u);    // q_proj and gate_proj of both layers
    ASSERT_EQ(c.nlrc.size(), 11u);  // the other 5 projections of 2 layers, and lm_head
    TrainTarget target = welore_target(model, {.train_norms = train_norms});
    std::set<std::string> trained;
    for (const auto& [name, t] : target.params) trained.insert(name);
    // 2 factors per LRC, plus 2 norms per layer and the final one.
    EXPECT_EQ(trained.size(), 8u + (train_norms ? 5u : 0u));
    const auto before = snapshot(model);
    one_step(model, target);
    for (const auto& [name, t] : model.named_tensors()) {
      const bool is_factor = name.ends_with(".lowrank_u") || name.ends_with(".lowrank_v");
      const bool is_norm = name.ends_with("norm.weight");
      EXPECT_EQ(trained.count(name) == 1, is_factor || (train_norms && is_norm)) << name;
      if (trained.count(name))
        EXPECT_FALSE(at::equal(t, before.at(name))) << name << " did not change";
      else
        EXPECT_TRUE(at::equal(t, before.at(name))) << name << " changed but is frozen";
    }
  }
}

TEST(WeLoreFinetuneTest, FactorGradientsAreTheDenseGradientProjected) {
  // Oracle: the same loss with one LRC as a dense leaf W = U V (autograd through at::linear);
  // then dL/dU = (dL/dW) Vᵀ and dL/dV = Uᵀ (dL/dW).
  nn::Model model = welore_model();
  TrainTarget target = welore_target(model, {.train_norms = false});
  testing_support::make_trainable(target);
  const at::Tensor windows = at::remainder(at::arange(2 * 9, at::kLong).view({2, 9}) * 5, 24);
  lm_loss(model, windows).backward();
  const std::string slot = "model.layers.1.mlp.gate_proj";
  at::Tensor u, v;
  for (auto& [name, t] : target.params) {
    if (name == slot + ".lowrank_u") u = t;
    if (name == slot + ".lowrank_v") v = t;
  }
  ASSERT_TRUE(u.defined() && v.defined());
  nn::Model dense = welore_model();
  at::Tensor w = at::matmul(u.detach(), v.detach()).to(at::kDouble).to(at::kFloat).requires_grad_(true);
  for (nn::LinearSlot* s : dense.slots())
    if (s->name() == slot) s->replace_base(std::make_shared<nn::DenseOperator>(w));
  lm_loss(dense, windows).backward();
  const at::Tensor gw = w.grad().to(at::kDouble);
  EXPECT_LT(testing::rel_max_error(u.grad(), at::matmul(gw, v.detach().to(at::kDouble).t())), 1e-4);
  EXPECT_LT(testing::rel_max_error(v.grad(), at::matmul(u.detach().to(at::kDouble).t(), gw)), 1e-4);
}

TEST(WeLoreFinetuneTest, TheWrittenDirectoryReloadsWithTheTrainedModelsLogits) {
  nn::Model model = welore_model();
  TrainTarget target = welore_target(model, {});
  one_step(model, target);
  testing::TempDir dir;
  compress::save_compressed_model(model, dir / "m", dir.path(), at::kFloat, {{"method", "welore"}});
  const nn::Model reloaded = compress::load_model(dir / "m");
  const at::Tensor ids = at::remainder(at::arange(12, at::kLong).view({1, 12}) * 7, 24);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(reloaded.forward(ids), model.forward(ids)));
  EXPECT_EQ(welore_components(reloaded).lrc, welore_components(model).lrc);
}

TEST(WeLoreFinetuneTest, RefusesModelsWithoutLowRankComponentsOrOfAnotherMethod) {
  nn::Model dense = testing::tiny_llama({}, 1);
  EXPECT_NE(testing::error_of([&] { welore_components(dense); }).find("no low-rank slot"), std::string::npos);
  nn::Model quantized = testing::tiny_llama({}, 1);
  compress::CompressOptions o;
  o.method = "rtn";
  o.group_size = 16;
  (void)compress::compress_model(quantized, o, nullptr);
  EXPECT_NE(testing::error_of([&] { welore_components(quantized); }).find("\"quantized\" operator"),
            std::string::npos);
  testing::TempDir dir;
  EXPECT_NE(testing::error_of([&] { check_welore_directory(dir.path()); }).find("lowrank_config.json"),
            std::string::npos);
  write_json_file(dir / compress::kCompressedConfigFile, Json{{"method", "svd"}});
  EXPECT_NE(testing::error_of([&] { check_welore_directory(dir.path()); }).find("--method svd"),
            std::string::npos);
}

TEST(WeLoreFinetuneTest, FinetuneWritesACompressedDirectoryThatScoresAsTheTrainedModel) {
  testing::TempDir dir;
  const fs::path hf = testing::tiny_hf_model(dir.path());
  compress::RunOptions c;
  c.model = hf;
  c.out = dir / "welore";
  c.compress.method = "welore";
  c.compress.ratio = 0.3;
  c.progress = false;
  (void)compress::run(c);

  adapt::FinetuneOptions o = testing::two_step_finetune(dir / "welore", "welore", dir.path(), "out");
  const adapt::FinetuneSummary s = adapt::finetune(o);
  ASSERT_TRUE(s.finished);
  EXPECT_EQ(s.details["welore"]["train_norms"], true);
  const nn::Model before = compress::load_model(dir / "welore");
  const nn::Model after = compress::load_model(dir / "out/model");
  // The factors trained; the dense slots and the embedding did not.
  const WeLoreComponents c_after = welore_components(after);
  EXPECT_EQ(c_after.lrc, welore_components(before).lrc);
  const auto b = snapshot(before);
  for (const auto& [name, t] : after.named_tensors()) {
    const bool trained =
        name.ends_with(".lowrank_u") || name.ends_with(".lowrank_v") || name.ends_with("norm.weight");
    EXPECT_EQ(at::equal(t, b.at(name)), !trained) << name;
  }
  // The reloaded directory scores exactly as the model finetune held in memory.
  const data::TokenDataset dataset = data::TokenDataset::open(dir / "out/dataset");
  const auto reloaded = eval::split_perplexity(after, dataset, "validation", o.eval_tokens, 16);
  ASSERT_TRUE(reloaded.has_value());
  EXPECT_DOUBLE_EQ(reloaded->nll, s.validation.nll);
  EXPECT_EQ(read_json_file(dir / "out/model" / compress::kCompressedConfigFile)["finetuned"]["method"],
            "welore");
  // A second finetune of a non-WeLore directory fails naming the option before any work.
  o.model = hf;
  o.out = dir / "out2";
  EXPECT_NE(testing::error_of([&] { adapt::finetune(o); }).find("--method welore"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "out2"));
}

}  // namespace
}  // namespace lowrank::train
