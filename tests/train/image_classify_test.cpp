// LowrankMixerForImageClassification (nn/image_classifier.h): shapes and grids per stage, an
// all-attention one-stage model against a hand-assembled float64 computation (at::conv2d for the
// stem, the reference trunk of tests/nn/reference.h, mean pool, head), save/load, bad configs.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/data/tasks/task_format.h"
#include "lowrank/mix/registry.h"
#include "lowrank/nn/image_classifier.h"
#include "lowrank/nn/lie_group_classifier.h"
#include "lowrank/nn/token_mixer.h"
#include "lowrank/train/classify.h"
#include "tests/nn/reference.h"
#include "tests/nn/test_mixers.h"
#include "tests/testing.h"
#include "tests/train/image_task_testing.h"

namespace lowrank::nn {
namespace {

namespace fs = std::filesystem;
using testing::write_image_task;

// Records the grid each layer's mixer was given, and passes x through unchanged (y = 0 · x).
std::vector<Grid2d>& seen_grids() {
  static std::vector<Grid2d> grids;
  return grids;
}

class GridProbeMixer final : public TokenMixer {
 public:
  explicit GridProbeMixer(const MixerSpec&) {}
  std::string name() const override { return "test_grid_probe"; }
  at::Tensor forward(const at::Tensor& x, const MixerContext& context) const override {
    LR_CHECK(context.grid.has_value(), InternalError, "no grid");
    LR_CHECK(context.grid->height * context.grid->width == x.size(1), InternalError, "grid does not cover T");
    seen_grids().push_back(*context.grid);
    return x.mul(0);
  }
  bool causal() const override { return false; }
  std::vector<LinearSlot*> slots() override { return {}; }
  using TokenMixer::slots;
};

void register_grid_probe() {
  static std::once_flag once;
  std::call_once(once, [] {
    mixer_registry().add({"test_grid_probe", "records MixerContext::grid (test only)", "", {}},
                         [](const MixerSpec& spec) { return std::make_unique<GridProbeMixer>(spec); });
  });
}

Json two_stage_json(const std::string& mixer) {
  return Json{{"architectures", {"LowrankMixerForImageClassification"}},
              {"model_type", "lowrank_mixer"},
              {"image_size", {8, 12}},
              {"num_channels", 2},
              {"patch_size", 2},
              {"num_labels", 3},
              {"stages",
               {{{"depth", 2}, {"hidden_size", 8}, {"mixer", mixer}, {"num_attention_heads", 2}},
                {{"depth", 1}, {"hidden_size", 16}, {"mixer", mixer}, {"block", "prenorm"}}}},
              {"a_key_lowrank_does_not_know", "kept"}};
}

TEST(ImageClassifierTest, ShapesAndTheGridOfEveryStage) {
  register_grid_probe();
  const ImageClassifierConfig config =
      ImageClassifierConfig::from_json(two_stage_json("test_grid_probe"), "test");
  ASSERT_EQ(config.stages.size(), 2u);
  EXPECT_EQ(config.stages[0].grid.height, 4);
  EXPECT_EQ(config.stages[0].grid.width, 6);
  EXPECT_EQ(config.stages[1].grid.height, 2);
  EXPECT_EQ(config.stages[1].grid.width, 3);
  const ImageClassifier model = ImageClassifier::random(config, 7);
  seen_grids().clear();
  const at::Tensor pixels = at::randn({5, 2, 8, 12}, at::detail::createCPUGenerator(1));
  EXPECT_EQ(model.hidden_states(pixels).sizes(), at::IntArrayRef({5, 6, 16}));
  seen_grids().clear();
  EXPECT_EQ(model.forward(pixels).sizes(), at::IntArrayRef({5, 3}));
  ASSERT_EQ(seen_grids().size(), 3u);  // one per layer, stage by stage
  EXPECT_EQ(seen_grids()[0].height, 4);
  EXPECT_EQ(seen_grids()[1].width, 6);
  EXPECT_EQ(seen_grids()[2].height, 2);
  EXPECT_EQ(seen_grids()[2].width, 3);
  // Layers are numbered across stages; the head is the sequence classifier's name.
  std::set<std::string> names;
  for (const auto& [n, t] : model.named_tensors()) names.insert(n);
  for (const char* n : {"model.patch_embed.weight", "model.layers.2.mlp.down_proj.weight",
                        "model.downsample.1.weight", "model.norm.weight", "score.weight"})
    EXPECT_TRUE(names.contains(n)) << n;
}

// One all-attention stage: the stem by at::conv2d, the reference trunk (tests/nn/reference.h; its
// embedding rows are the patch vectors, fed as ids 0..T-1), the mean over patches, the head.
TEST(ImageClassifierTest, OneAttentionStageEqualsTheHandAssembledComputation) {
  testing::TinySpec s = nn::testing_mixers::tiny_shape(1, 8, 12, 2, 2, 4);  // 2 layers
  testing::Weights w = testing::random_weights(s, 5);
  w.erase("model.embed_tokens.weight");
  w.erase("lm_head.weight");
  at::Generator gen = at::detail::createCPUGenerator(6);
  w["model.patch_embed.weight"] = at::randn({8, 3, 2, 2}, gen);
  w["model.patch_embed.bias"] = at::randn({8}, gen);
  w["score.weight"] = at::randn({4, 8}, gen);
  const Json config{{"architectures", {"LowrankMixerForImageClassification"}},
                    {"model_type", "lowrank_mixer"},
                    {"image_size", {4, 6}},
                    {"num_channels", 3},
                    {"patch_size", 2},
                    {"num_labels", 4},
                    {"rms_norm_eps", s.eps},
                    {"rope_theta", s.theta},
                    {"stages",
                     {{{"depth", 2},
                       {"hidden_size", 8},
                       {"intermediate_size", 12},
                       {"num_attention_heads", 2},
                       {"mixer", "attention"}}}}};
  testing::TempDir dir;
  testing::write_checkpoint(dir.path(), config, w);
  const ImageClassifier model = ImageClassifier::load(dir.path(), {.dtype = at::kDouble});
  const at::Tensor pixels = at::randn({2, 3, 4, 6}, gen).to(at::kDouble);
  const at::Tensor logits = model.forward(pixels);
  ASSERT_EQ(logits.sizes(), at::IntArrayRef({2, 4}));
  for (int64_t b = 0; b < 2; ++b) {
    const at::Tensor patches =
        at::conv2d(pixels[b].unsqueeze(0), w["model.patch_embed.weight"].to(at::kDouble),
                   w["model.patch_embed.bias"].to(at::kDouble), {2, 2});  // [1, 8, 2, 3]
    testing::Weights ref = w;
    ref["model.embed_tokens.weight"] = patches[0].flatten(1).t();  // [T = 6, 8], row-major patches
    ref["lm_head.weight"] = w["score.weight"];  // the head at every patch: the mean commutes with it
    s.vocab = 6;
    const at::Tensor per_patch = testing::reference_logits(s, ref, {0, 1, 2, 3, 4, 5});
    EXPECT_LT(testing::max_abs_diff(logits[b], per_patch.mean(0)), 1e-9) << "image " << b;
  }
}

// Two stages whose layers are the identity (a mixer that adds 0, MLP down-projections zeroed): what
// is left is the stem, RMSNorm + the 2x2 stride-2 downsampling conv, the final norm, the mean and
// the head, assembled here by hand from at::conv2d.
TEST(ImageClassifierTest, DownsamplingBetweenStagesEqualsTheHandAssembledComputation) {
  register_grid_probe();
  Json c = two_stage_json("test_grid_probe");
  c["rms_norm_eps"] = 1e-6;
  const ImageClassifier model =
      ImageClassifier::random(ImageClassifierConfig::from_json(c, "test"), 9, {.dtype = at::kDouble});
  std::map<std::string, at::Tensor> w;
  {
    at::NoGradGuard no_grad;
    at::Generator gen = at::detail::createCPUGenerator(10);
    for (auto& [name, t] : model.named_tensors()) {
      if (name.find("down_proj") != std::string::npos)
        t.zero_();
      else
        t.copy_(at::randn(t.sizes(), gen).to(at::kDouble));  // norms and biases away from 1 and 0
      w[name] = t.clone();
    }
  }
  const at::Tensor pixels = at::randn({2, 2, 8, 12}, at::detail::createCPUGenerator(11)).to(at::kDouble);
  auto rms = [](const at::Tensor& x, const at::Tensor& g) {  // over channels, x [B, D, H, W]
    return x / at::sqrt((x * x).mean({1}, true) + 1e-6) * g.view({1, -1, 1, 1});
  };
  at::Tensor h = at::conv2d(pixels, w["model.patch_embed.weight"], w["model.patch_embed.bias"], {2, 2});
  h = at::conv2d(rms(h, w["model.downsample.1.norm.weight"]), w["model.downsample.1.weight"],
                 w["model.downsample.1.bias"], {2, 2});  // [2, 16, 2, 3]
  const at::Tensor pooled = rms(h, w["model.norm.weight"]).mean({2, 3});
  const at::Tensor expected = at::matmul(pooled, w["score.weight"].t());
  EXPECT_LT(testing::max_abs_diff(model.forward(pixels), expected), 1e-9);
}

TEST(ImageClassifierTest, SaveLoadRoundTripKeepsUnknownKeys) {
  const ImageClassifier model =
      ImageClassifier::random(ImageClassifierConfig::from_json(two_stage_json("attention"), "test"), 3);
  testing::TempDir dir;
  model.save(dir.path());
  const Json saved = read_json_file(dir.path() / "config.json");
  EXPECT_EQ(saved.at("a_key_lowrank_does_not_know"), "kept");
  const ImageClassifier loaded = ImageClassifier::load(dir.path());
  const at::Tensor pixels = at::randn({2, 2, 8, 12}, at::detail::createCPUGenerator(2));
  EXPECT_TRUE(at::equal(model.forward(pixels), loaded.forward(pixels)));
  EXPECT_EQ(model.named_tensors().size(), loaded.named_tensors().size());
}

void expect_refused(const Json& config, const std::string& needle) {
  try {
    (void)ImageClassifierConfig::from_json(config, "cfg");
    ADD_FAILURE() << "accepted a config that should fail with \"" << needle << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ImageClassifierTest, BadConfigsAreRefusedNamingTheKey) {
  Json c = two_stage_json("attention");
  c["stages"][1].erase("depth");
  expect_refused(c, "stages[1]: \"depth\" is missing");
  c = two_stage_json("attention");
  c["image_size"] = {8, 10};  // grid 4x5: the second stage cannot halve 5
  expect_refused(c, "stages[1]: the 2x2 stride-2 downsampling before this stage needs an even grid, got 4x5");
  c = two_stage_json("attention");
  c["patch_size"] = 3;
  expect_refused(c, "\"patch_size\" 3 does not divide \"image_size\" 8x12");
  c = two_stage_json("attention");
  c["stages"][0]["blocks"] = 1;
  expect_refused(c, "stages[0]: unknown key \"blocks\"");
  c = two_stage_json("attention");
  c["stages"][0]["block"] = "postnorm";
  expect_refused(c, "\"block\" \"postnorm\" is not \"prenorm\" or \"metanext\"");
  c = two_stage_json("no_such_mixer");
  expect_refused(c, "no_such_mixer");
  c = two_stage_json("attention");
  c.erase("num_labels");
  expect_refused(c, "\"num_labels\" is missing");
}

// A stage's "mixer_options" override mixer_config's options of its mixer for that stage alone,
// key by key: SOFT's sr_ratio 2 fits the 4x6 grid but not the 2x3 one, so only per-stage options
// (2, then 1) build both stages.
TEST(ImageClassifierTest, StageMixerOptionsOverrideTheSharedOnesForThatStage) {
  (void)mix::registry();  // soft
  Json c = two_stage_json("soft");
  c["mixer_config"] = {{"soft", {{"sr_ratio", 2}, {"newton_iters", 7}}}};
  auto build_error = [&] {
    return testing::error_of([&] {
      const ImageClassifier m = ImageClassifier::random(ImageClassifierConfig::from_json(c, "t"), 1);
      (void)m.forward(at::rand({1, 2, 8, 12}));
    });
  };
  // Stage 1's 2x3 grid is not divisible by 2.
  EXPECT_NE(build_error().find("not divisible by sr_ratio = 2"), std::string::npos) << build_error();
  c["stages"][1]["mixer_options"] = {{"sr_ratio", 1}};
  const ImageClassifierConfig config = ImageClassifierConfig::from_json(c, "test");
  EXPECT_EQ(config.stage_configs[0].mixer_options("soft"), Json({{"sr_ratio", 2}, {"newton_iters", 7}}));
  EXPECT_EQ(config.stage_configs[1].mixer_options("soft"), Json({{"sr_ratio", 1}, {"newton_iters", 7}}));
  EXPECT_EQ(build_error(), "(no error)");
  c["stages"][1]["mixer_options"] = 1;
  expect_refused(c, "stages[1]: \"mixer_options\" must be an object");
}

ImageClassifier small_image_model() {
  Json c = two_stage_json("attention");
  c["image_size"] = 8;
  c["num_channels"] = 1;
  c["num_labels"] = 2;
  return ImageClassifier::random(ImageClassifierConfig::from_json(c, "test"), 4);
}

// A few steps on a tiny image task; killed after step 4 (checkpoint at 3) and resumed: the same
// losses and weights, bit for bit.
TEST(ImageClassifierTest, TrainsOnAnImageTaskAndResumesExactly) {
  testing::TempDir dir;
  const data::tasks::TaskDataset task =
      data::tasks::TaskDataset::open(write_image_task(dir / "task", 8, 16, 8));
  train::ClassifyConfig c;
  c.trainer.steps = 6;
  c.trainer.batch_size = 4;
  c.trainer.lr = 1e-2;
  c.trainer.min_lr = 1e-3;
  c.trainer.warmup_steps = 2;
  c.trainer.seed = 1;
  c.trainer.checkpoint_every = 3;
  ImageClassifier model = small_image_model();
  const train::ClassifyResult full = train::train_classifier(model, task, c, dir / "full", false);
  ASSERT_TRUE(full.finished && full.validation);
  EXPECT_EQ(full.validation->examples, 8);
  c.trainer.stop_after = 4;
  ImageClassifier first = small_image_model();
  EXPECT_FALSE(train::train_classifier(first, task, c, dir / "resumed", false).finished);
  c.trainer.stop_after = 0;
  ImageClassifier second = small_image_model();
  const train::ClassifyResult rest = train::train_classifier(second, task, c, dir / "resumed", true);
  ASSERT_TRUE(rest.finished);
  ASSERT_EQ(rest.steps.size(), 3u);
  for (size_t i = 0; i < rest.steps.size(); ++i) EXPECT_EQ(rest.steps[i].loss, full.steps[3 + i].loss) << i;
  const NamedTensors a = model.named_tensors(), b = second.named_tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  // An unknown preset is refused, listing vit-tiny among the known ones.
  EXPECT_THROW(
      {
        try {
          train::TaskTrainOptions o;
          o.task = dir / "task";
          o.out = dir / "vit";
          o.preset = "no-such-preset";
          (void)train::task_train(o);
        } catch (const InvalidArgument& e) {
          EXPECT_NE(std::string(e.what()).find("vit-tiny"), std::string::npos) << e.what();
          throw;
        }
      },
      InvalidArgument);
}

// The equivariance study's classifier with fresh group elements per batch: killed after step 4
// and resumed, it draws the same elements (the counter is restored) and ends bit for bit where the
// uninterrupted run does; the lie-cnn preset matches the GL+(2) model's size and trains.
TEST(ImageClassifierTest, LieGroupClassifierResumesItsElementDraws) {
  testing::TempDir dir;
  const data::tasks::TaskDataset task =
      data::tasks::TaskDataset::open(write_image_task(dir / "task", 8, 16, 8));
  LieGroupClassifierConfig config;
  config.image_height = config.image_width = 8;
  config.num_labels = 2;
  config.channels = 2;
  config.kernel_size = 3;
  config.kernel_hidden = 4;
  config.train_samples = 3;
  config.eval_samples = 3;
  train::ClassifyConfig c;
  c.trainer.steps = 6;
  c.trainer.batch_size = 4;
  c.trainer.lr = 1e-2;
  c.trainer.warmup_steps = 2;
  c.trainer.seed = 1;
  c.trainer.checkpoint_every = 3;
  LieGroupClassifier model = LieGroupClassifier::random(config, 4);
  const train::ClassifyResult full = train::train_classifier(model, task, c, dir / "full", false);
  ASSERT_TRUE(full.finished);
  EXPECT_EQ(model.named_buffers().at(0).second.item<int64_t>(), 6);  // one draw per step
  c.trainer.stop_after = 4;
  LieGroupClassifier first = LieGroupClassifier::random(config, 4);
  EXPECT_FALSE(train::train_classifier(first, task, c, dir / "resumed", false).finished);
  c.trainer.stop_after = 0;
  LieGroupClassifier second = LieGroupClassifier::random(config, 4);
  const train::ClassifyResult rest = train::train_classifier(second, task, c, dir / "resumed", true);
  ASSERT_EQ(rest.steps.size(), 3u);
  for (size_t i = 0; i < rest.steps.size(); ++i) EXPECT_EQ(rest.steps[i].loss, full.steps[3 + i].loss) << i;
  const NamedTensors a = model.named_parameters(), b = second.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  // The presets: lie-cnn's plain CNN is within a quarter of lie-gl2's size on the same task.
  train::TaskTrainOptions o;
  o.task = dir / "task";
  o.steps = 2;
  o.preset = "lie-gl2";
  o.out = dir / "gl2";
  ASSERT_TRUE(train::task_train(o).finished);
  o.preset = "lie-cnn";
  o.out = dir / "cnn";
  ASSERT_TRUE(train::task_train(o).finished);
  const int64_t gl2 = LieGroupClassifier::load(dir / "gl2" / "model").parameter_count();
  const int64_t cnn = LieGroupClassifier::load(dir / "cnn" / "model").parameter_count();
  EXPECT_LT(std::abs(cnn - gl2), gl2 / 4);
}

// `task train --preset vit-tiny` on a 28x28 task: two steps run, the model saves and evaluates.
TEST(ImageClassifierTest, VitTinyPresetTrainsOnA28x28Task) {
  testing::TempDir dir;
  write_image_task(dir / "task", 28, 4, 2);
  train::TaskTrainOptions o;
  o.task = dir / "task";
  o.out = dir / "out";
  o.preset = "vit-tiny";
  o.mixer = "attention";
  o.steps = 2;
  o.batch_size = 2;
  const train::TaskTrainSummary s = train::task_train(o);
  ASSERT_TRUE(s.finished);
  const ImageClassifier loaded = ImageClassifier::load(s.model_dir);
  ASSERT_EQ(loaded.config().stages.size(), 2u);
  EXPECT_EQ(loaded.config().stages[0].grid.height, 14);
  EXPECT_EQ(loaded.config().stages[1].hidden_size, 64);
  const data::tasks::TaskDataset task = data::tasks::TaskDataset::open(dir / "task");
  const train::AccuracyResult r = train::evaluate_accuracy(loaded, task, data::tasks::Split::kVal);
  EXPECT_EQ(r.correct, s.validation.correct);
  // ViT's encoder attends both ways, and so does the preset's attention.
  EXPECT_EQ(read_json_file(s.model_dir / "config.json")["mixer_config"],
            Json({{"attention", {{"causal", false}}}}));
  // --stage-mixer-options: one object per stage, written into the stages; a wrong count is refused.
  (void)mix::registry();  // soft
  train::TaskTrainOptions soft = o;
  soft.out = dir / "soft";
  soft.mixer = "soft";
  soft.stage_mixer_options = Json::array({{{"sr_ratio", 2}}, {{"sr_ratio", 1}}});
  const Json stages = read_json_file(train::task_train(soft).model_dir / "config.json")["stages"];
  EXPECT_EQ(stages[0]["mixer_options"], Json({{"sr_ratio", 2}}));
  EXPECT_EQ(stages[1]["mixer_options"], Json({{"sr_ratio", 1}}));
  soft.out = dir / "soft3";
  soft.stage_mixer_options = Json::array({{{"sr_ratio", 2}}});
  EXPECT_NE(
      testing::error_of([&] { (void)train::task_train(soft); }).find("expected a JSON array of 2 objects"),
      std::string::npos);

  // The CLI: inspect and eval --task read the image classifier; a token-model verb names it and refuses.
  const std::string bin = testing::lowrank_binary().string() + " --threads 2 --quiet ";
  testing::CommandResult c = testing::run_command(bin + "inspect " + s.model_dir.string());
  EXPECT_EQ(c.exit_code, 0) << c.out;
  EXPECT_NE(c.out.find("model.patch_embed.weight"), std::string::npos) << c.out;
  c = testing::run_command(bin + "--json eval --model " + s.model_dir.string() + " --task " +
                           (dir / "task").string() + " --split val");
  ASSERT_EQ(c.exit_code, 0) << c.out;
  EXPECT_EQ(Json::parse(c.out.substr(c.out.find('{')))["correct"], s.validation.correct);
  c = testing::run_command(bin + "generate --model " + s.model_dir.string() +
                           " --prompt-ids 1 --max-new-tokens 1");
  EXPECT_NE(c.exit_code, 0);
  EXPECT_NE(c.out.find("LowrankMixerForImageClassification is an image classifier"), std::string::npos)
      << c.out;
}

}  // namespace
}  // namespace lowrank::nn
