// SGConv (mix/sgconv.h): the multiscale kernel, its fixed norm and the mixer's output equal a
// transcription of the reference GConv (ctlllll/SGConv gconv_standalone.py; fixture
// tests/fixtures/mixers/sgconv/make.py) in cat mode with linear upsampling, sum mode with nearest
// upsampling, init_scale 1, two channels and a per-unit decay, and bidirectional, at lengths equal
// to, below and above the kernel's; the norm stays fixed when the sub-kernels change and takes no
// gradient; step() equals forward's rows under left padding; param_groups give the sub-kernels
// kernel_lr and no weight decay; an LM refuses a bidirectional SGConv; bad options are refused
// naming them.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/mix/sgconv.h"
#include "lowrank/nn/model.h"
#include "tests/mix/mixer_test_util.h"
#include "tests/mix/ssm_testing.h"
#include "tests/testing.h"

namespace lowrank::mix {
namespace {

using ::lowrank::testing::error_of;
using ::lowrank::testing::fixture;
using ::lowrank::testing::max_abs_diff;
using testing::build_mixer;
using testing::mixer_config;
using testing::tensor_named;

struct Case {
  std::string name;
  Json options;
  int64_t num_scales;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"cat_linear", {{"kernel_dim", 4}, {"l_max", 16}, {"mode", "cat"}, {"upsample", "linear"}}, 3},
      {"sum_nearest",
       {{"kernel_dim", 4},
        {"l_max", 16},
        {"init_scale", 1},
        {"mode", "sum"},
        {"upsample", "nearest"},
        {"decay_min", 1.0},
        {"decay_max", 3.0},
        {"channels", 2}},
       2},
      {"cat_bidir",
       {{"kernel_dim", 2},
        {"l_max", 8},
        {"mode", "cat"},
        {"upsample", "nearest"},
        {"decay_min", 1.5},
        {"decay_max", 2.5},
        {"bidirectional", true}},
       3}};
  return all;
}

std::unique_ptr<nn::TokenMixer> fixture_mixer(const SafetensorsFile& f, const Case& c) {
  const std::string p = "model.layers.0.mixer";
  std::map<std::string, at::Tensor> given = {{p + ".D", f.load(c.name + ".D")},
                                             {p + ".out_proj.weight", f.load(c.name + ".out_w")},
                                             {p + ".out_proj.bias", f.load(c.name + ".out_b")}};
  for (int64_t i = 0; i < c.num_scales; ++i)
    given[str(p, ".kernel_", i)] = f.load(str(c.name, ".kernel_", i));
  return build_mixer("sgconv", mixer_config("sgconv", 4, 2, c.options), given);
}

TEST(SGConvTest, KernelNormAndOutputEqualTheReferenceTranscription) {
  const auto f = SafetensorsFile::open(fixture("mixers/sgconv/sgconv.safetensors"));
  for (const Case& c : cases()) {
    const auto mixer = fixture_mixer(f, c);
    const auto& sg = dynamic_cast<const SGConvMixer&>(*mixer);
    EXPECT_EQ(sg.options().num_scales, c.num_scales) << c.name;
    EXPECT_LE(max_abs_diff(tensor_named(*mixer, "model.layers.0.mixer.kernel_norm"),
                           f.load(c.name + ".kernel_norm")),
              1e-12)
        << c.name;
    for (const int64_t T : {16, 11, 20}) {
      EXPECT_LE(max_abs_diff(sg.kernel(T), f.load(str(c.name, ".k", T))), 1e-12) << c.name << ", T " << T;
      const at::Tensor x = f.load(str("x", T)).to(at::kDouble);
      EXPECT_LE(max_abs_diff(mixer->forward(x, {}), f.load(str(c.name, ".y", T))), 1e-12)
          << c.name << ", T " << T;
    }
  }
}

TEST(SGConvTest, TheNormStaysFixedAsTheSubKernelsTrainAndTakesNoGradient) {
  const auto f = SafetensorsFile::open(fixture("mixers/sgconv/sgconv.safetensors"));
  const auto mixer = fixture_mixer(f, cases()[0]);
  const auto& sg = dynamic_cast<const SGConvMixer&>(*mixer);
  const at::Tensor before = sg.kernel(16);
  for (const auto& [name, t] : mixer->tensors()) {
    if (name.find(".kernel_") != std::string::npos && name.find("norm") == std::string::npos) t.mul_(2.0);
    t.requires_grad_(true);
  }
  EXPECT_LE(max_abs_diff(sg.kernel(16), 2.0 * before), 1e-12);  // a recomputed norm would undo the 2
  mixer->forward(at::randn({1, 8, 4}, at::kDouble), {}).sum().backward();
  EXPECT_FALSE(tensor_named(*mixer, "model.layers.0.mixer.kernel_norm").grad().defined());
  EXPECT_TRUE(tensor_named(*mixer, "model.layers.0.mixer.kernel_0").grad().defined());
}

TEST(SGConvTest, StepEqualsForwardUnderLeftPadding) {
  const int64_t H = 4, B = 2, T = 9;
  const auto mixer = build_mixer(
      "sgconv",
      mixer_config("sgconv", H, 1, {{"kernel_dim", 2}, {"l_max", 8}, {"channels", 2}, {"glu", true}}));
  ASSERT_TRUE(mixer->has_decode_state());
  const at::Tensor x = at::randn({B, T, H}, at::kDouble);
  // Row 0 starts with three padding positions.
  testing::expect_step_equals_forward_with_padding(*mixer, x, 0, 3, 1e-12);
}

TEST(SGConvTest, ParamGroupsGiveTheSubKernelsTheirOwnLrAndNoWeightDecay) {
  const auto mixer = build_mixer(
      "sgconv", mixer_config("sgconv", 4, 2, {{"kernel_dim", 4}, {"l_max", 16}, {"kernel_lr", 0.002}}));
  const std::vector<nn::ParamGroup> groups = mixer->param_groups();
  ASSERT_EQ(groups.size(), 3u);
  for (size_t i = 0; i < groups.size(); ++i) {
    EXPECT_EQ(groups[i].tensor, str("model.layers.0.mixer.kernel_", i));
    EXPECT_EQ(groups[i].lr, 0.002);
    EXPECT_EQ(groups[i].weight_decay, 0.0);
  }
}

TEST(SGConvTest, LanguageModelRefusesBidirectionalAndBadOptionsAreNamed) {
  const nn::ModelConfig lm = mixer_config("sgconv", 4, 2, {{"bidirectional", true}, {"kernel_dim", 8}});
  EXPECT_NE(error_of([&] { (void)nn::Model::random(lm, 1); }).find("bidirectional"), std::string::npos);
  auto message = [](const Json& options) {
    return error_of([&] { (void)build_mixer("sgconv", mixer_config("sgconv", 4, 2, options)); });
  };
  EXPECT_NE(message({{"scales", 2}}).find("unknown option \"scales\""), std::string::npos);
  EXPECT_NE(message({{"mode", "concat"}}).find("\"concat\""), std::string::npos);
  EXPECT_NE(message({{"upsample", "cubic"}}).find("\"cubic\""), std::string::npos);
  EXPECT_NE(message({{"decay_min", 0}}).find("decay_min"), std::string::npos);
  EXPECT_NE(message({{"num_scales", 0}}).find("num_scales"), std::string::npos);
}

}  // namespace
}  // namespace lowrank::mix
