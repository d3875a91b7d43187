// The optimizer flags of a training run: merged into TrainerConfig's options (the flags written
// over the JSON options), per-layer updates turning clipping off, and every bad request refused
// with a message naming its flag, option or weight.
#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "lowrank/train/optimizer_request.h"
#include "tests/testing.h"

namespace lowrank::train {
namespace {

TEST(OptimizerRequestTest, FlagsAreWrittenOverTheOptions) {
  OptimizerRequest r;
  r.name = "galore";
  r.options = {{"rank", 2}, {"projector", "random"}};
  r.rank = 8;
  r.update_gap = 3;
  r.per_layer_updates = true;
  TrainerConfig c;
  const auto low_rank = apply_optimizer_request(r, c);
  ASSERT_TRUE(low_rank.has_value());
  EXPECT_EQ(low_rank->rank, 8);
  EXPECT_EQ(low_rank->update_gap, 3);
  EXPECT_EQ(c.optimizer, "galore");
  EXPECT_EQ(c.optimizer_options, Json({{"rank", 8}, {"projector", "random"}, {"update_gap", 3}}));
  EXPECT_TRUE(c.per_layer_updates);
  EXPECT_EQ(c.clip_norm, 0.0);

  TrainerConfig plain;
  EXPECT_FALSE(apply_optimizer_request({.options = {{"state_bits", 8}}}, plain).has_value());
  EXPECT_EQ(plain.optimizer, "adamw");
  EXPECT_EQ(plain.clip_norm, TrainerConfig().clip_norm);
}

TEST(OptimizerRequestTest, BadRequestsNameTheirFlag) {
  auto error = [](const OptimizerRequest& r) {
    TrainerConfig c;
    return testing::error_of([&] { (void)apply_optimizer_request(r, c); });
  };
  EXPECT_NE(error({.name = "nope"}).find("--optimizer: unknown optimizer \"nope\""), std::string::npos);
  EXPECT_NE(error({.name = "galore", .rank = 0}).find("--rank"), std::string::npos);
  EXPECT_NE(error({.name = "galore", .update_gap = 0}).find("--update-gap"), std::string::npos);
  EXPECT_NE(error({.name = "galore", .scale = -1.0}).find("--scale"), std::string::npos);
  EXPECT_NE(error({.rank = 4}).find("--optimizer"), std::string::npos);
  EXPECT_NE(error({.options = {{"rank", 8}}}).find("adamw takes beta1, beta2, eps"), std::string::npos);
  EXPECT_NE(error({.options = {{"beta2", 1.0}}}).find("beta2 must be in [0, 1)"), std::string::npos);
  EXPECT_NE(error({.name = "galore", .options = Json::array({1})}).find("--optimizer-options"),
            std::string::npos);
  EXPECT_NE(error({.name = "galore", .options = {{"projector", "bogus"}}}).find("projector"),
            std::string::npos);
}

TEST(OptimizerRequestTest, AdamWHyperparametersGoToTheTrainersAdamConfig) {
  // What repro/pretraining gives every method: (0.9, 0.999), no decay, over the trainer's
  // defaults (β₂ 0.95, decay 0.1); only the state options stay in optimizer_options.
  TrainerConfig c;
  ASSERT_NE(c.adam.beta2, 0.999);
  ASSERT_NE(c.adam.weight_decay, 0.0);
  const double eps = c.adam.eps;
  (void)apply_optimizer_request({.options = {{"beta2", 0.999}, {"weight_decay", 0}, {"state_bits", 8}}}, c);
  EXPECT_EQ(c.adam.beta1, 0.9);
  EXPECT_EQ(c.adam.beta2, 0.999);
  EXPECT_EQ(c.adam.weight_decay, 0.0);
  EXPECT_EQ(c.adam.eps, eps);
  EXPECT_EQ(c.optimizer_options, Json({{"state_bits", 8}}));
}

TEST(OptimizerRequestTest, RankGoesToTheParameterizationOnlyWithPlainAdamW) {
  Json options = {{"density", 0.05}};
  OptimizerRequest adamw{.rank = 8};
  give_rank_to_parameterization(adamw, "sltrain", options);
  EXPECT_FALSE(adamw.rank.has_value());
  EXPECT_EQ(options, Json({{"density", 0.05}, {"rank", 8}}));
  OptimizerRequest galore{.name = "galore", .rank = 4};
  give_rank_to_parameterization(galore, "sltrain", options);
  EXPECT_EQ(galore.rank.value_or(0), 4);
  OptimizerRequest dense{.rank = 4};
  give_rank_to_parameterization(dense, "", options);
  EXPECT_EQ(dense.rank.value_or(0), 4);
  EXPECT_EQ(options["rank"], 8);
  OptimizerRequest zero{.rank = 0};
  EXPECT_THROW(give_rank_to_parameterization(zero, "sltrain", options), InvalidArgument);
}

TEST(OptimizerRequestTest, ProjectionRankMustFitEveryWeight) {
  TrainerConfig c;
  const auto galore = apply_optimizer_request({.name = "galore", .rank = 16}, c);
  const std::vector<std::tuple<std::string, int64_t, int64_t>> slots = {{"a.q_proj", 32, 32},
                                                                        {"a.down_proj", 32, 8}};
  const std::string message = testing::error_of([&] { check_projection_rank(*galore, slots); });
  EXPECT_NE(message.find("--rank 16 is larger than a.down_proj [32, 8] allows (at most 8)"),
            std::string::npos)
      << message;
  const auto frugal = apply_optimizer_request({.name = "frugal", .options = {{"density", 0.5}}}, c);
  EXPECT_NO_THROW(check_projection_rank(*frugal, slots));
}

}  // namespace
}  // namespace lowrank::train
