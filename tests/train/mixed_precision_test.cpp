// Mixed-precision training (nn/autocast.h, train/loss_scaler.h, TrainerConfig::autocast):
// - the loss scale follows GradScaler's rule, written out by hand here: ×0.5 and a reset on a
//   non-finite step, ×2 after `growth_interval` clean steps in a row;
// - unscale divides every gradient by the scale and reports an inf or a NaN;
// - the trainer under CPU bf16 / fp16 autocast tracks its float32 twin without equalling it, an
//   fp16 run whose first scales overflow skips those steps (weights untouched), halves the scale
//   each time, logs it, and resumes from a checkpoint to the same metrics.
#include "lowrank/train/loss_scaler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "lowrank/core/error.h"
#include "tests/testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank::train {
namespace {

using namespace testing_support;
namespace fs = std::filesystem;

TEST(MixedPrecisionTest, LossScaleFollowsGradScalersRule) {
  LossScalerOptions o;
  o.init_scale = 1024;
  o.growth_interval = 3;
  LossScaler s(o);
  EXPECT_EQ(s.scale(), 1024);
  // Clean, clean, clean → growth; inf → backoff and reset; clean ×2, inf → backoff (the two clean
  // steps do not count any more); clean ×3 → growth.
  const bool found[] = {false, false, false, true, false, false, true, false, false, false};
  const double want[] = {1024, 1024, 2048, 1024, 1024, 1024, 512, 512, 512, 1024};
  const int64_t tracker[] = {1, 2, 0, 0, 1, 2, 0, 1, 2, 0};
  for (size_t i = 0; i < std::size(found); ++i) {
    s.update(found[i]);
    EXPECT_EQ(s.scale(), want[i]) << "update " << i;
    EXPECT_EQ(s.growth_tracker(), tracker[i]) << "update " << i;
  }
  s.set_state(4096, 2);
  s.update(false);
  EXPECT_EQ(s.scale(), 8192);
  EXPECT_EQ(s.growth_tracker(), 0);
  o.backoff_factor = 1.5;
  EXPECT_THROW(LossScaler{o}, InvalidArgument);
}

TEST(MixedPrecisionTest, UnscaleDividesTheGradientsAndFindsNonFinite) {
  LossScalerOptions o;
  o.init_scale = 8;
  const LossScaler s(o);
  at::Tensor a = at::zeros({3}).requires_grad_(true), b = at::zeros({2, 2}).requires_grad_(true);
  at::Tensor unused = at::zeros({4}).requires_grad_(true);  // no gradient: left alone
  a.mutable_grad() = at::tensor({8.f, 16.f, -4.f});
  b.mutable_grad() = at::full({2, 2}, 2.f);
  EXPECT_EQ(s.scale_loss(at::tensor(1.5f)).item<float>(), 12.f);
  EXPECT_FALSE(s.unscale(std::vector<at::Tensor>{a, b, unused}));
  EXPECT_TRUE(at::equal(a.grad(), at::tensor({1.f, 2.f, -0.5f})));
  EXPECT_TRUE(at::equal(b.grad(), at::full({2, 2}, 0.25f)));
  b.mutable_grad()[1][0] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(s.unscale(std::vector<at::Tensor>{a, b}));
  b.mutable_grad()[1][0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(s.unscale(std::vector<at::Tensor>{b}));
}

TEST(MixedPrecisionTest, CpuAutocastTrainingTracksFloat32) {
  const TokenStream data = pattern_stream(400);
  TrainerConfig c = small_config();
  testing::TempDir dir;
  nn::Model reference = tiny_model(3);
  const TrainResult fp32 = train(reference, data, c, dir / "fp32", false);
  for (const char* mode : {"bf16", "fp16"}) {
    c.autocast = mode;
    nn::Model m = tiny_model(3);
    const TrainResult r = train(m, data, c, dir / mode, false);
    ASSERT_EQ(r.steps.size(), fp32.steps.size());
    bool differs = false;
    for (size_t i = 0; i < r.steps.size(); ++i) {
      EXPECT_NEAR(r.steps[i].loss, fp32.steps[i].loss, 0.02 * fp32.steps[i].loss) << mode << " step " << i;
      differs = differs || r.steps[i].loss != fp32.steps[i].loss;
      EXPECT_EQ(r.steps[i].loss_scale, std::string(mode) == "fp16" ? 65536 : 0) << mode;
      EXPECT_FALSE(r.steps[i].skipped);
    }
    EXPECT_TRUE(differs) << mode << ": the losses equal float32's bit for bit; autocast did not engage";
    EXPECT_LT(r.steps.back().loss, r.steps.front().loss) << mode;
  }
}

TEST(MixedPrecisionTest, Fp16OverflowSkipsStepsAndResumesExactly) {
  const TokenStream data = pattern_stream(400);
  TrainerConfig c = small_config();
  c.autocast = "fp16";
  c.initial_loss_scale = std::ldexp(1.0, 24);  // the first scaled gradients overflow float16
  c.checkpoint_every = 2;
  c.steps = 8;
  testing::TempDir straight_dir, resumed_dir;
  nn::Model straight = tiny_model(4);
  const auto before = straight.named_tensors();
  std::vector<at::Tensor> initial;
  for (const auto& [n, t] : before) initial.push_back(t.clone());
  const TrainResult full = train(straight, data, c, straight_dir.path(), false);
  ASSERT_TRUE(full.finished);
  ASSERT_TRUE(full.steps.front().skipped);
  double scale = c.initial_loss_scale;
  int64_t skipped = 0;
  for (const StepRecord& r : full.steps) {
    if (r.skipped) {
      scale *= 0.5;
      ++skipped;
    }
    EXPECT_EQ(r.loss_scale, scale) << "step " << r.step;
  }
  EXPECT_GE(skipped, 1);
  EXPECT_LT(skipped, c.steps) << "every step overflowed";
  // The metrics log carries the scale and the skips.
  const auto lines = testing::read_jsonl(straight_dir / "metrics.jsonl");
  ASSERT_EQ(lines.size(), static_cast<size_t>(c.steps));
  EXPECT_TRUE(lines.front().at("skipped").get<bool>());
  EXPECT_EQ(lines.back().at("loss_scale").get<double>(), full.steps.back().loss_scale);
  // A run whose every step is skipped leaves the weights as they were.
  {
    TrainerConfig all = c;
    all.steps = 2;
    all.initial_loss_scale = std::ldexp(1.0, 120);
    testing::TempDir d;
    nn::Model m = tiny_model(4);
    const TrainResult r = train(m, data, all, d.path(), false);
    EXPECT_TRUE(r.steps[0].skipped && r.steps[1].skipped);
    const auto after = m.named_tensors();
    for (size_t i = 0; i < after.size(); ++i)
      EXPECT_TRUE(at::equal(after[i].second, initial[i])) << after[i].first;
  }
  // Stopped after 5 steps (last checkpoint at 4) and resumed: the same metrics and weights.
  {
    nn::Model first = tiny_model(4);
    TrainerConfig killed = c;
    killed.stop_after = 5;
    EXPECT_FALSE(train(first, data, killed, resumed_dir.path(), false).finished);
  }
  nn::Model second = tiny_model(99);
  ASSERT_TRUE(train(second, data, c, resumed_dir.path(), true).finished);
  testing::expect_same_metrics(straight_dir / "metrics.jsonl", resumed_dir / "metrics.jsonl");
  const auto ta = straight.named_tensors(), tb = second.named_tensors();
  for (size_t i = 0; i < ta.size(); ++i) EXPECT_TRUE(at::equal(ta[i].second, tb[i].second)) << ta[i].first;
}

}  // namespace
}  // namespace lowrank::train
