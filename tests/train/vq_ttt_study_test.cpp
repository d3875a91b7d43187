// The visual-quality study (train/vq_ttt_study.h) on a tiny image task: the clean set's frozen
// accuracy equals evaluate_accuracy's; each set's improved / worsened rows account for the change
// from clean; restoration and VQ-TTT run; bad input is refused before any file is written.
#include "lowrank/train/vq_ttt_study.h"

#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/nn/image_classifier.h"
#include "tests/testing.h"
#include "tests/train/image_task_testing.h"

namespace lowrank::train {
namespace {

namespace fs = std::filesystem;

// A tiny random classifier saved to `dir`, its head 50x its init so that its predictions depend on
// the image (a random tiny model's logits are nearly flat) and a degradation can flip them.
fs::path save_model(const fs::path& dir) {
  const Json c{{"architectures", {"LowrankMixerForImageClassification"}},
               {"model_type", "lowrank_mixer"},
               {"image_size", 8},
               {"num_channels", 1},
               {"patch_size", 2},
               {"num_labels", 2},
               {"stages",
                {{{"depth", 1}, {"hidden_size", 8}, {"mixer", "attention"}, {"num_attention_heads", 2}},
                 {{"depth", 1}, {"hidden_size", 16}, {"mixer", "attention"}}}}};
  nn::ImageClassifier model = nn::ImageClassifier::random(nn::ImageClassifierConfig::from_json(c, "test"), 5);
  for (const auto& [name, t] : model.named_tensors())
    if (name == "score.weight") {
      at::NoGradGuard no_grad;
      t.mul_(50);
    }
  model.save(dir);
  return dir;
}

TEST(VqTttStudyTest, CleanAccuracyMatchesEvaluationAndFlipsAccountForEachSet) {
  testing::TempDir dir;
  VqTttStudyOptions o;
  o.task = testing::write_image_task(dir / "task", 8, 32, 24);
  o.model = save_model(dir / "model");
  o.degradations = {"noise:5", "gamma:5", "blur:5"};
  o.ttt.steps = 2;
  o.ttt.batch_size = 8;
  o.ttt.lora_layers = 1;
  o.out = dir / "out";
  const VqTttStudy study = run_vq_ttt_study(o);
  ASSERT_EQ(study.sets.size(), 4u);
  EXPECT_EQ(study.sets[0].degradation, "clean");
  const AccuracyResult want = evaluate_accuracy(
      nn::ImageClassifier::load(o.model), data::tasks::TaskDataset::open(o.task), data::tasks::Split::kTest);
  EXPECT_EQ(study.sets[0].frozen.correct, want.correct);
  EXPECT_EQ(study.sets[0].frozen.examples, 24);
  int64_t flips = 0;
  for (const VqTttSetResult& r : study.sets) {
    flips += static_cast<int64_t>(r.improved.size() + r.worsened.size());
    EXPECT_EQ(r.frozen.correct, study.sets[0].frozen.correct + static_cast<int64_t>(r.improved.size()) -
                                    static_cast<int64_t>(r.worsened.size()))
        << r.degradation;
    EXPECT_EQ(r.ttt_losses.size(), 2u);
    EXPECT_EQ(r.class_accuracy.size(), 2u);
  }
  EXPECT_GT(flips, 0);  // the identity above is exercised
  EXPECT_EQ(study.sets[1].restoration, "denoise");
  EXPECT_EQ(study.sets[2].restoration, "autocontrast");
  EXPECT_EQ(study.sets[3].restoration, "deblur");
  const Json report = read_json_file(o.out / "report.json");
  EXPECT_EQ(report["sets"].size(), 4u);
  EXPECT_EQ(report["sets"][1]["degradation"], "noise:5");
}

TEST(VqTttStudyTest, BadInputIsRefusedBeforeAnyFile) {
  testing::TempDir dir;
  VqTttStudyOptions o;
  o.model = save_model(dir / "model");
  o.task = testing::write_image_task(dir / "task", 8, 4, 4);
  o.out = dir / "out";
  o.degradations = {"blur:2", "haze:1"};
  EXPECT_THROW(
      {
        try {
          run_vq_ttt_study(o);
        } catch (const InvalidArgument& e) {
          EXPECT_NE(std::string(e.what()).find("unknown kind \"haze\""), std::string::npos) << e.what();
          throw;
        }
      },
      InvalidArgument);
  o.degradations = {"blur:2"};
  o.ttt.lora_layers = 5;  // the model has 2
  EXPECT_THROW(run_vq_ttt_study(o), InvalidArgument);
  o.ttt.lora_layers = 1;
  o.task = testing::write_image_task(dir / "task16", 16, 4, 4);
  EXPECT_THROW(run_vq_ttt_study(o), InvalidArgument);  // 16x16 images, the model reads 8x8
  EXPECT_FALSE(fs::exists(o.out));
}

}  // namespace
}  // namespace lowrank::train
