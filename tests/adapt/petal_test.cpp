// PETALface: per-row mixture q·hi + (1 − q)·lo of two LoRAs, checked against the dense weights
// of each LoRA computed here; save/load round trip; clear errors without scores.
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

}  // namespace
}  // namespace lowrank::adapt
