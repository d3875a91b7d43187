// The training loop: gradient accumulation equals one large batch, checkpoints are atomic and
// complete, an interrupted run resumed from its checkpoint reproduces the uninterrupted run's
// losses bitwise, and the loss falls on a learnable stream.
#include <filesystem>

#include <gtest/gtest.h>

#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/trainer.h"
#include "tests/testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::train {
namespace {
namespace fs = std::filesystem;

using testing_support::pattern_stream;
using testing_support::small_config;
using testing_support::tiny_model;

TEST(WindowSamplerTest, IsDeterministicAndResumable) {
  WindowSampler a(3, 100, 10), b(3, 100, 10);
  std::vector<int64_t> seq;
  for (int i = 0; i < 20; ++i) {
    seq.push_back(a.next());
    EXPECT_GE(seq.back(), 0);
    EXPECT_LE(seq.back(), 90);
  }
  b.set_counter(10);
  for (int i = 10; i < 20; ++i) EXPECT_EQ(b.next(), seq[i]);
  EXPECT_THROW(WindowSampler(0, 5, 10), InvalidArgument);
}

TEST(TrainerTest, AccumulatedMicroBatchesEqualOneLargeBatch) {
  nn::Model model = tiny_model(1);
  std::vector<at::Tensor> params;
  for (auto& [n, t] : model.named_tensors()) params.push_back(t.requires_grad_(true));
  TokenStream data = pattern_stream(300);
  WindowSampler sampler(9, data.size, 11);
  const int64_t k = 3, b = 2;
  at::Tensor windows = sample_windows(data, sampler, k * b, 10);
  lm_loss(model, windows).backward();
  std::vector<at::Tensor> big;
  for (auto& p : params) {
    big.push_back(p.grad().clone());
    p.mutable_grad().reset();
  }
  for (int64_t i = 0; i < k; ++i) (lm_loss(model, windows.slice(0, i * b, (i + 1) * b)) / k).backward();
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_LT(testing::max_abs_diff(params[i].grad(), big[i]),
              1e-6 + 1e-5 * big[i].abs().max().item<double>())
        << i;
}

TEST(TrainerTest, LossFallsOnALearnableStream) {
  nn::Model model = tiny_model(2);
  testing::TempDir dir;
  TrainerConfig c = small_config();
  // 20 steps at lr 2e-2 end at about a third of the first loss (as 40 steps at 1e-2 did).
  c.steps = 20;
  c.warmup_steps = 4;
  c.lr = 2e-2;
  c.min_lr = 2e-3;
  c.adam.weight_decay = 0;
  const TrainResult r = train(model, pattern_stream(500), c, dir.path(), false);
  ASSERT_TRUE(r.finished);
  ASSERT_EQ(r.steps.size(), 20u);
  EXPECT_LT(r.steps.back().loss, 0.6 * r.steps.front().loss);
  const auto metrics = testing::read_jsonl(dir / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 20u);
  for (const char* key : {"step", "loss", "lr", "grad_norm", "tokens_per_s"})
    EXPECT_TRUE(metrics[0].contains(key));
  EXPECT_EQ(metrics[19]["step"].get<int64_t>(), 20);
}

TEST(TrainerTest, CheckpointIsCompleteAndLatestPointsAtIt) {
  nn::Model model = tiny_model(3);
  testing::TempDir dir;
  TrainerConfig c = small_config();
  c.steps = 4;
  c.checkpoint_every = 2;
  train(model, pattern_stream(200), c, dir.path(), false);
  const auto latest = latest_checkpoint(dir.path());
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->filename(), "step-00000004");
  for (const char* f : {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(*latest / f)) << f;
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints")) {
    ++entries;
    EXPECT_FALSE(e.path().filename().string().starts_with(".")) << e.path();  // no temp dirs left
  }
  EXPECT_EQ(entries, 2);  // latest + step-00000004 (older ones dropped)
  // The checkpoint's model loads as an HF directory.
  nn::Model loaded = nn::Model::load(*latest);
  EXPECT_EQ(testing::max_abs_diff(loaded.named_tensors()[0].second, model.named_tensors()[0].second), 0.0);
}

// Straight N steps vs a run "killed" after step 5 (its last checkpoint at step 4, one metrics
// line past it) and resumed in a fresh model: identical metrics and weights, bit for bit. For
// AdamW and for the low-rank optimizers, whose projector state (refreshed every 3 steps, so once
// before and once after the checkpoint; GradNormLoRP also its magnitude moments) must come back
// from the checkpoint too.
class TrainerResumeTest : public ::testing::TestWithParam<const char*> {};

TEST_P(TrainerResumeTest, ResumeAfterInterruptionReproducesTheLossesBitwise) {
  const TokenStream data = pattern_stream(400);
  TrainerConfig c = small_config();
  c.checkpoint_every = 2;
  c.optimizer = GetParam();
  if (c.optimizer != "adamw") c.optimizer_options = {{"rank", 4}, {"update_gap", 3}};
  if (c.optimizer == "frugal") c.optimizer_options = {{"density", 0.25}, {"update_gap", 3}};
  testing::TempDir straight_dir, resumed_dir;
  nn::Model straight = tiny_model(4);
  const TrainResult full = train(straight, data, c, straight_dir.path(), false);
  ASSERT_TRUE(full.finished);

  {
    nn::Model first = tiny_model(4);
    TrainerConfig killed = c;
    killed.stop_after = 5;
    const TrainResult part = train(first, data, killed, resumed_dir.path(), false);
    EXPECT_FALSE(part.finished);
    EXPECT_EQ(part.step, 5);
    EXPECT_EQ(testing::read_jsonl(resumed_dir / "metrics.jsonl").size(), 5u);
  }
  nn::Model second = tiny_model(99);  // different init: everything must come from the checkpoint
  const TrainResult rest = train(second, data, c, resumed_dir.path(), true);
  ASSERT_TRUE(rest.finished);
  EXPECT_EQ(rest.steps.front().step, 5);

  EXPECT_EQ(testing::read_jsonl(resumed_dir / "metrics.jsonl").size(), static_cast<size_t>(c.steps));
  testing::expect_same_metrics(straight_dir / "metrics.jsonl", resumed_dir / "metrics.jsonl");
  const auto ta = straight.named_tensors(), tb = second.named_tensors();
  for (size_t i = 0; i < ta.size(); ++i) EXPECT_TRUE(at::equal(ta[i].second, tb[i].second)) << ta[i].first;
  // The run accounts for its training memory: weights and gradients of every tensor, and for the
  // low-rank optimizers states smaller than AdamW's two full moments.
  ASSERT_FALSE(full.memory.is_null());
  int64_t weight_bytes = 0;
  for (const auto& [n, t] : ta) weight_bytes += t.numel() * static_cast<int64_t>(t.element_size());
  EXPECT_EQ(full.memory["weights"].get<int64_t>(), weight_bytes);
  EXPECT_EQ(full.memory["grads"].get<int64_t>(), weight_bytes);
  EXPECT_EQ(full.memory["frozen"].get<int64_t>(), 0);  // every tensor is trained
  if (c.optimizer == "adamw")
    EXPECT_EQ(full.memory["optimizer_states"].get<int64_t>(), 2 * weight_bytes);
  else
    EXPECT_LT(full.memory["optimizer_states"].get<int64_t>(), 2 * weight_bytes);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, TrainerResumeTest,
                         ::testing::Values("adamw", "galore", "fira", "frugal", "dct", "gradnormlorp"));

// Per-layer updates step each parameter inside backward() from its own gradient, which is what
// the ordinary step does after backward(): the runs must agree bit for bit, for AdamW and for the
// low-rank optimizers (projector refreshes included), while at most one parameter's gradient is
// resident at a time.
class PerLayerUpdatesTest : public ::testing::TestWithParam<const char*> {};

TEST_P(PerLayerUpdatesTest, MatchTheOrdinaryStepBitwiseWithOneGradientResident) {
  const TokenStream data = pattern_stream(400);
  TrainerConfig c = small_config();
  c.grad_accum = 1;
  c.clip_norm = 0;
  c.optimizer = GetParam();
  if (c.optimizer != "adamw") c.optimizer_options = {{"rank", 4}, {"update_gap", 3}};
  if (c.optimizer == "frugal") c.optimizer_options = {{"density", 0.25}, {"update_gap", 3}};
  testing::TempDir whole_dir, layered_dir;
  nn::Model whole = tiny_model(4);
  const TrainResult a = train(whole, data, c, whole_dir.path(), false);
  TrainerConfig layered_config = c;
  layered_config.per_layer_updates = true;
  nn::Model layered = tiny_model(4);
  const TrainResult b = train(layered, data, layered_config, layered_dir.path(), false);
  ASSERT_TRUE(a.finished && b.finished);
  // Same losses and learning rates; the global gradient norm is summed in hook order instead of
  // parameter order, so it may differ in the last bits.
  const std::vector<Json> ma = testing::read_jsonl(whole_dir / "metrics.jsonl");
  const std::vector<Json> mb = testing::read_jsonl(layered_dir / "metrics.jsonl");
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(ma[i]["loss"], mb[i]["loss"]) << "step " << i + 1;
    EXPECT_EQ(ma[i]["lr"], mb[i]["lr"]) << "step " << i + 1;
    EXPECT_NEAR(ma[i]["grad_norm"].get<double>(), mb[i]["grad_norm"].get<double>(),
                1e-12 * ma[i]["grad_norm"].get<double>())
        << "step " << i + 1;
  }
  const auto ta = whole.named_tensors(), tb = layered.named_tensors();
  int64_t largest = 0;
  for (size_t i = 0; i < ta.size(); ++i) {
    EXPECT_TRUE(at::equal(ta[i].second, tb[i].second)) << ta[i].first;
    largest = std::max(largest, ta[i].second.numel() * static_cast<int64_t>(ta[i].second.element_size()));
  }
  EXPECT_EQ(b.memory["grads"].get<int64_t>(), largest);
  EXPECT_LT(b.memory["grads"].get<int64_t>(), a.memory["grads"].get<int64_t>());
  EXPECT_EQ(b.memory["optimizer_states"], a.memory["optimizer_states"]);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, PerLayerUpdatesTest,
                         ::testing::Values("adamw", "galore", "fira", "frugal"));

TEST(TrainerTest, PerLayerUpdatesRefuseAccumulationAndClipping) {
  TrainerConfig c = small_config();
  c.per_layer_updates = true;
  c.clip_norm = 0;
  EXPECT_NE(testing::error_of([&] { c.validate(); }).find("grad_accum must be 1"), std::string::npos);
  c.grad_accum = 1;
  c.clip_norm = 1;
  EXPECT_NE(testing::error_of([&] { c.validate(); }).find("cannot clip"), std::string::npos);
  c.clip_norm = 0;
  EXPECT_NO_THROW(c.validate());
  EXPECT_TRUE(TrainerConfig::from_json(c.to_json(), "test").per_layer_updates);
}

// autocast is bf16 or fp16; fp16's loss scaling needs every gradient before a step, so it is
// refused with per-layer updates; the initial loss scale must be positive. All before any step.
TEST(TrainerTest, AutocastValuesAreChecked) {
  TrainerConfig c = small_config();
  c.autocast = "fp8";
  EXPECT_NE(testing::error_of([&] { c.validate(); }).find("autocast \"fp8\""), std::string::npos);
  for (const char* mode : {"bf16", "fp16"}) {
    c.autocast = mode;
    EXPECT_NO_THROW(c.validate());
    EXPECT_EQ(TrainerConfig::from_json(c.to_json(), "test").autocast, mode);
  }
  EXPECT_FALSE(small_config().to_json().contains("autocast"));
  EXPECT_FALSE(small_config().to_json().contains("initial_loss_scale"));
  c.initial_loss_scale = 1024;
  EXPECT_EQ(TrainerConfig::from_json(c.to_json(), "test").initial_loss_scale, 1024);
  c.initial_loss_scale = 0;
  EXPECT_NE(testing::error_of([&] { c.validate(); }).find("initial_loss_scale"), std::string::npos);
  c.initial_loss_scale = 65536;
  c.grad_accum = 1;
  c.clip_norm = 0;
  c.per_layer_updates = true;
  EXPECT_NE(testing::error_of([&] { c.validate(); }).find("per-layer updates"), std::string::npos);
  c.autocast = "bf16";
  EXPECT_NO_THROW(c.validate());
}

TEST(TrainerTest, ResumeRejectsAnotherBatchShape) {
  const TokenStream data = pattern_stream(200);
  TrainerConfig c = small_config();
  c.steps = 2;
  testing::TempDir dir;
  nn::Model m = tiny_model(5);
  train(m, data, c, dir.path(), false);
  c.batch_size = 3;
  c.steps = 4;
  EXPECT_THROW(train(m, data, c, dir.path(), true), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::train
