// The ConvNet classifier (nn/convnet.h) against the reference implementations: timm 1.0.31's
// MetaNeXt with InceptionDWConv2d and with a 7x7 depthwise mixer, timm's ConvNeXtBlock, and the
// authors' UniRepLKNetBlock and its reparameterize(), all at random initialisation in float64
// (tests/fixtures/convnets/make.py), in eval mode, in train mode (batch statistics) and after the
// running statistics moved; the deploy form against the training form; save / load; config
// errors; and `task train --preset metanext-tiny | unireplknet-tiny` with an exact resume.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>

#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/data/tasks/task_format.h"
#include "lowrank/nn/convnet.h"
#include "lowrank/train/classify.h"
#include "tests/testing.h"
#include "tests/train/image_task_testing.h"

namespace lowrank::nn {
namespace {

namespace fs = std::filesystem;
using ::lowrank::testing::error_of;
using ::lowrank::testing::fixture;
using ::lowrank::testing::max_abs_diff;

const LoadOptions kDouble{at::kDouble, at::kCPU};

void expect_matches_reference(const std::string& name) {
  SCOPED_TRACE(name);
  const fs::path dir = fixture("convnets/" + name);
  const SafetensorsFile io = SafetensorsFile::open(dir / "io.safetensors");
  const ConvNet model = ConvNet::load(dir, kDouble);
  const at::Tensor pixels = io.load("pixels");
  EXPECT_LE(max_abs_diff(model.forward(pixels), io.load("logits_eval")), 1e-10);
  EXPECT_LE(max_abs_diff(model.forward(pixels, /*training=*/true), io.load("logits_train")), 1e-10);
  // The training-mode forward moved the running statistics as torch's BatchNorm2d did.
  const NamedTensors buffers = model.named_buffers();
  ASSERT_EQ(buffers[0].first, "stem.norm.running_mean");
  ASSERT_EQ(buffers[1].first, "stem.norm.running_var");
  EXPECT_LE(max_abs_diff(buffers[0].second, io.load("stem_running_mean")), 1e-12);
  EXPECT_LE(max_abs_diff(buffers[1].second, io.load("stem_running_var")), 1e-12);
}

TEST(ConvNetTest, MetaNeXtWithInceptionDWMatchesTimm) {
  expect_matches_reference("metanext_inception");
}
TEST(ConvNetTest, MetaNeXtWithDepthwise7x7MatchesTimm) {
  expect_matches_reference("metanext_dwconv");
}
TEST(ConvNetTest, ConvNeXtBlocksMatchTimm) {
  expect_matches_reference("convnext");
}
TEST(ConvNetTest, UniRepLKNetBlocksMatchTheAuthorsCode) {
  expect_matches_reference("unireplknet");
}

TEST(ConvNetTest, DeployFormMatchesTheAuthorsReparameterize) {
  const ConvNet model = ConvNet::load(fixture("convnets/unireplknet"), kDouble);
  const ConvNet deployed = model.deploy();
  EXPECT_TRUE(deployed.config().deploy);
  const Checkpoint reference = Checkpoint::open(fixture("convnets/unireplknet_deploy"));
  const NamedTensors ours = deployed.named_tensors();
  ASSERT_EQ(ours.size(), reference.names().size());
  for (const auto& [name, t] : ours) {
    ASSERT_TRUE(reference.contains(name)) << name;
    EXPECT_LE(max_abs_diff(t, reference.load(name, at::kDouble)), 1e-10) << name;
  }
  const SafetensorsFile io = SafetensorsFile::open(fixture("convnets/unireplknet/io.safetensors"));
  EXPECT_LE(max_abs_diff(deployed.forward(io.load("pixels")), io.load("logits_deploy")), 1e-10);
  // The authors' deployed net loads as ours and gives the same logits.
  const ConvNet theirs = ConvNet::load(fixture("convnets/unireplknet_deploy"), kDouble);
  EXPECT_LE(max_abs_diff(theirs.forward(io.load("pixels")), io.load("logits_deploy")), 1e-10);
}

Json small_config(const std::string& block, const std::string& mixer, int64_t kernel = 0) {
  Json stage0{{"depth", 1}, {"hidden_size", 8}, {"block", block}, {"mixer", mixer}};
  Json stage1{{"depth", 2}, {"hidden_size", 16}, {"block", block}, {"mixer", mixer}};
  if (kernel > 0) stage0["kernel_size"] = stage1["kernel_size"] = kernel;
  return Json{{"architectures", {"LowrankConvNetForImageClassification"}},
              {"model_type", "lowrank_convnet"},
              {"image_size", 16},
              {"num_channels", 1},
              {"patch_size", 2},
              {"num_labels", 3},
              {"stages", {stage0, stage1}}};
}

// BatchNorm statistics and affine parameters, layer scales and GRN away from their init, so that
// every fold in the deploy form matters.
void perturb(ConvNet& model) {
  at::NoGradGuard no_grad;
  at::manual_seed(9);
  for (auto& [n, t] : model.named_buffers())
    n.ends_with("running_var") ? t.uniform_(0.5, 1.5) : t.normal_(0.0, 0.2);
  for (auto& [n, t] : model.named_parameters())
    if (t.dim() == 1)
      t.normal_(n.ends_with("norm.weight") ? 1.0 : 0.0, 0.3);
    else
      t.normal_(0.0, 0.3);
}

TEST(ConvNetTest, DeployFormEqualsTrainingFormForEveryBlockWithDilatedReparam) {
  for (const std::string block : {"metanext", "convnext", "unireplknet"}) {
    for (const auto& [mixer, kernel] :
         std::vector<std::pair<std::string, int64_t>>{{"dilated_reparam", 9}, {"dwconv", 5}}) {
      ConvNet model = ConvNet::random(ConvNetConfig::from_json(small_config(block, mixer, kernel), "t"), 1);
      perturb(model);
      const ConvNet deployed = model.deploy();
      at::manual_seed(4);
      const at::Tensor x = at::rand({2, 1, 16, 16});
      EXPECT_LE(max_abs_diff(deployed.forward(x), model.forward(x)), 1e-4) << block << " " << mixer;
      if (block == "unireplknet" || mixer == "dilated_reparam") {
        EXPECT_LT(deployed.named_tensors().size(), model.named_tensors().size()) << block << " " << mixer;
      }
    }
  }
}

TEST(ConvNetTest, SavesAndLoadsWithItsRunningStatistics) {
  testing::TempDir dir;
  ConvNet model =
      ConvNet::random(ConvNetConfig::from_json(small_config("unireplknet", "dilated_reparam", 7), "t"), 2);
  perturb(model);
  model.save(dir / "m");
  const ConvNet loaded = ConvNet::load(dir / "m");
  const NamedTensors a = model.named_tensors(), b = loaded.named_tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  }
  EXPECT_EQ(read_json_file(dir / "m" / "config.json").at("model_type"), "lowrank_convnet");
  // Parameters and buffers partition what is saved; running statistics are never trained.
  EXPECT_EQ(model.named_parameters().size() + model.named_buffers().size(), a.size());
  for (const auto& [n, t] : model.named_parameters()) EXPECT_EQ(n.find("running_"), std::string::npos) << n;
  // Weight decay is off for the one-dimensional tensors only.
  for (const ParamGroup& g : model.param_groups()) EXPECT_EQ(g.weight_decay, 0.0) << g.tensor;
}

TEST(ConvNetTest, BadConfigsNameTheKey) {
  auto error = [](const Json& j) { return error_of([&] { (void)ConvNetConfig::from_json(j, "cfg"); }); };
  std::string e = error(small_config("unireplknet", "dilated_reparam", 19));
  EXPECT_NE(e.find("stages[0]"), std::string::npos) << e;
  EXPECT_NE(e.find("supported: 5, 7, 9, 11, 13, 15, 17"), std::string::npos) << e;
  e = error(small_config("metanext", "dwconv", 4));
  EXPECT_NE(e.find("\"kernel_size\" must be odd"), std::string::npos) << e;
  e = error(small_config("resnet", "dwconv"));
  EXPECT_NE(e.find("\"block\" \"resnet\" is not one of metanext, convnext, unireplknet"), std::string::npos)
      << e;
  e = error(small_config("metanext", "attention"));
  EXPECT_NE(e.find("inception_dw, dwconv, dilated_reparam"), std::string::npos) << e;
  Json j = small_config("metanext", "inception_dw");
  j["stages"][1]["kernel"] = 3;
  e = error(j);
  EXPECT_NE(e.find("stages[1]: unknown key \"kernel\""), std::string::npos) << e;
  j = small_config("metanext", "inception_dw", 7);
  e = error(j);
  EXPECT_NE(e.find("inception_dw takes"), std::string::npos) << e;
  j = small_config("metanext", "dwconv");
  j["patch_size"] = 4;  // 16/4 = 4 -> 2: fine; 3 stages would need 1 -> odd
  j["stages"].push_back(j["stages"][0]);
  j["stages"].push_back(j["stages"][0]);
  e = error(j);
  EXPECT_NE(e.find("stages[3]"), std::string::npos) << e;
}

TEST(ConvNetTest, TaskTrainPresetsRunAndResumeExactly) {
  testing::TempDir dir;
  testing::write_image_task(dir / "task", 28, 8, 4);  // fmnist-shaped: 28x28
  for (const auto& [preset, mixer] : std::vector<std::pair<std::string, std::string>>{
           {"metanext-tiny", "inception_dw"}, {"unireplknet-tiny", ""}}) {
    SCOPED_TRACE(preset);
    train::TaskTrainOptions o;
    o.task = dir / "task";
    o.out = dir / (preset + "-full");
    o.preset = preset;
    o.mixer = mixer;
    o.steps = 3;
    o.batch_size = 2;
    o.checkpoint_every = 1;
    if (preset == "metanext-tiny") o.steps = 1;  // the resume below is the same code for both
    const train::TaskTrainSummary full = train::task_train(o);
    ASSERT_TRUE(full.finished);
    const ConvNet a = ConvNet::load(full.model_dir);
    EXPECT_EQ(a.config().stages[1].height, 7);
    EXPECT_EQ(a.config().stages[0].mixer, mixer.empty() ? "dilated_reparam" : mixer);
    if (preset == "metanext-tiny") continue;
    // Stop after step 2 (no checkpoint then) and resume from step 1's: the same parameters and
    // the same running statistics.
    o.out = dir / (preset + "-resumed");
    o.stop_after = 2;
    EXPECT_FALSE(train::task_train(o).finished);
    o.stop_after = 0;
    o.resume = true;
    const train::TaskTrainSummary resumed = train::task_train(o);
    ASSERT_TRUE(resumed.finished);
    const ConvNet b = ConvNet::load(resumed.model_dir);
    const NamedTensors ta = a.named_tensors(), tb = b.named_tensors();
    ASSERT_EQ(ta.size(), tb.size());
    for (size_t i = 0; i < ta.size(); ++i) EXPECT_TRUE(at::equal(ta[i].second, tb[i].second)) << ta[i].first;
    EXPECT_EQ(full.validation.correct, resumed.validation.correct);
  }
  train::TaskTrainOptions o;
  o.task = dir / "task";
  o.out = dir / "bad";
  o.preset = "metanext-tiny";
  o.mixer = "attention";
  const std::string e = error_of([&] { (void)train::task_train(o); });
  EXPECT_NE(e.find("--mixer: \"attention\" is not a ConvNet mixer"), std::string::npos) << e;
}

}  // namespace
}  // namespace lowrank::nn
