// PETALface: per-row mixture q·hi + (1 − q)·lo of two LoRAs, checked against the dense weights
// of each LoRA computed here; save/load round trip; clear errors without scores; the text quality
// proxy (window losses of the base model, min-max bounds, the authors' 0.5 + score − threshold)
// against a hand computation.
#include "lowrank/adapt/petal.h"

#include "tests/adapt/method_testing.h"

namespace lowrank::adapt {
namespace {

using namespace method_testing;

TEST(PetalTest, EachRowMixesTheTwoLorasByItsQualityScore) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "p", config_for("petal"), 2);
  randomize(a, 6);
  nn::LinearSlot& slot = model.slot("model.layers.1.mlp.down_proj");
  const at::Tensor x = input(slot.in_features());  // [2, 5, in]
  const at::Tensor q = at::tensor({0.25, 1.0}, at::kFloat);
  set_quality_scores(a, q);
  const nn::Adapter& layer = *slot.adapter("p");
  const double s = 8.0 / 4.0;
  const at::Tensor w_hi =
      s * at::matmul(tensor_of(layer, "lora_B_hi.weight"), tensor_of(layer, "lora_A_hi.weight"));
  const at::Tensor w_lo =
      s * at::matmul(tensor_of(layer, "lora_B_lo.weight"), tensor_of(layer, "lora_A_lo.weight"));
  const at::Tensor y = slot.forward(x);
  const at::Tensor w = slot.base().dense_weight();
  for (int64_t b = 0; b < 2; ++b) {
    const double qb = q[b].item<double>();
    const at::Tensor expected = at::matmul(x[b], (w + qb * w_hi + (1 - qb) * w_lo).t());
    EXPECT_LE(testing::max_abs_diff(y[b], expected), 1e-5) << "row " << b;
  }
  // Round trip through a PEFT-style directory.
  testing::TempDir dir;
  save_adapter(a, dir.path());
  nn::Model fresh = tiny();
  AttachedAdapter loaded = load_adapter(fresh, dir.path());
  EXPECT_EQ(loaded.config.peft_type, "LOWRANK_PETAL");
  set_quality_scores(loaded, q);
  const at::Tensor ids = token_ids();
  EXPECT_LE(testing::max_abs_diff(logits_of(fresh, ids), logits_of(model, ids)), 1e-6);
}

TEST(PetalTest, RefusesToGuessWithoutScoresAndRejectsBadScores) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "p", config_for("petal"), 2);
  EXPECT_NE(testing::error_of([&] { logits_of(model, token_ids()); }).find("quality scores"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] {
              set_quality_scores(a, at::tensor({0.5, 1.5}));
            }).find("[0, 1]"),
            std::string::npos);
  set_quality_scores(a, at::tensor({0.5, 0.5, 0.5}));
  EXPECT_NE(testing::error_of([&] { logits_of(model, token_ids()); }).find("3 quality scores"),
            std::string::npos);
  std::vector<AttachedAdapter> all{a};
  EXPECT_NE(testing::error_of([&] { merge_adapters(model, all); }).find("cannot be merged"),
            std::string::npos);
}

TEST(PetalTest, TrainingWithFixedScoresReducesTheLoss) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "p", config_for("petal"), 2);
  set_quality_scores(a, at::full({4}, 0.7));  // the trainer's batch size (short_run)
  testing::TempDir dir;
  // Evaluation uses 16 windows: give every row a score for both uses.
  a.set_training(true);
  train::TrainTarget target = target_of(a);
  const auto before_scores = at::full({16}, 0.7);
  set_quality_scores(a, before_scores);
  const double before = eval_loss(model);
  set_quality_scores(a, at::full({4}, 0.7));
  train::train(model, target, pattern_stream(), short_run(40, 1e-2), dir.path(), false);
  set_quality_scores(a, before_scores);
  EXPECT_LT(eval_loss(model), before - 0.005);
}

TEST(PetalTest, QualityWeightsFollowTheLossBoundsAndTheThreshold) {
  const at::Tensor losses = at::tensor({2.0, 3.0, 4.0, 5.0}, at::kDouble);
  // score = clamp((4.5 − L) / 2, 0, 1) = 1, 0.75, 0.25, 0; threshold 0.5: q = score.
  QualityCalibration c{2.5, 4.5, 0.5};
  const std::vector<double> expected_half{1.0, 0.75, 0.25, 0.0};
  const std::vector<double> expected_low{1.0, 0.95, 0.45, 0.2};  // threshold 0.3: q = score + 0.2, clamped
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_NEAR(quality_from_losses(losses, c)[i].item<double>(), expected_half[i], 1e-7);
  c.threshold = 0.3;
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_NEAR(quality_from_losses(losses, c)[i].item<double>(), expected_low[i], 1e-7);
  const QualityCalibration from = calibrate_quality(losses, 0.5);
  EXPECT_EQ(from.loss_min, 2.0);
  EXPECT_EQ(from.loss_max, 5.0);
  EXPECT_NE(testing::error_of([&] { calibrate_quality(losses, 1.5); }).find("quality_threshold"),
            std::string::npos);
}

TEST(PetalTest, ReferenceLossesAreTheBaseModelsMeanNextTokenLossPerWindow) {
  nn::Model model = tiny();
  AttachedAdapter a = create_adapter(model, "p", config_for("petal"), 2);
  randomize(a, 6);  // the adapter changes the logits, the reference pass must not see it
  const at::Tensor windows = at::arange(18, at::kLong).reshape({2, 9}) * 5 % 24;
  const at::Tensor losses = reference_losses(model, a, windows);
  nn::Model base = tiny();
  const at::Tensor logits = logits_of(base, windows.slice(1, 0, 8)).to(at::kDouble);
  for (int64_t b = 0; b < 2; ++b) {
    double sum = 0;
    for (int64_t t = 0; t < 8; ++t) {
      const at::Tensor row = logits[b][t];
      const double max = row.max().item<double>();
      const double log_z = max + std::log(at::exp(row - max).sum().item<double>());
      sum += log_z - row[windows[b][t + 1].item<int64_t>()].item<double>();
    }
    EXPECT_NEAR(losses[b].item<double>(), sum / 8, 1e-5) << b;
  }
  // The adapter is attached again afterwards, and scoring sets one weight per row.
  score_windows(model, a, windows, calibrate_quality(losses, 0.5));
  EXPECT_NO_THROW(logits_of(model, windows.slice(1, 0, 8)));
  EXPECT_GT(testing::max_abs_diff(logits_of(model, windows.slice(1, 0, 8)),
                                  logits_of(base, windows.slice(1, 0, 8))),
            1e-4);
}

}  // namespace
}  // namespace lowrank::adapt
