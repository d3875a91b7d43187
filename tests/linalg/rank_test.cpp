#include "lowrank/linalg/rank.h"

#include <cmath>

#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "tests/testing.h"

namespace lowrank::linalg {
namespace {

at::Tensor spectrum(std::vector<double> s) {
  return at::tensor(s, at::kDouble);
}

TEST(EnergyRankTest, SmallestPrefixReachingTheFraction) {
  // Energies 9, 4, 1, 0: cumulative 9/14, 13/14, 1.
  auto s = spectrum({3, 2, 1, 0});
  EXPECT_EQ(energy_rank(s, 9.0 / 14.0), 1);
  EXPECT_EQ(energy_rank(s, 0.65), 2);
  EXPECT_EQ(energy_rank(s, 13.0 / 14.0), 2);
  EXPECT_EQ(energy_rank(s, 0.95), 3);
  EXPECT_EQ(energy_rank(s, 1.0), 3);  // the zero tail is not needed
  EXPECT_EQ(energy_rank(spectrum({0, 0}), 0.5), 0);
  EXPECT_EQ(energy_rank(s.to(at::kFloat), 0.65), 2);
  EXPECT_THROW(energy_rank(s, 0.0), InvalidArgument);
  EXPECT_THROW(energy_rank(s, 1.5), InvalidArgument);
  EXPECT_THROW(energy_rank(s.reshape({2, 2}), 0.5), InvalidArgument);
}

TEST(EffectiveRankTest, ClosedFormEntropies) {
  EXPECT_NEAR(effective_rank(at::ones({7}, at::kDouble)), 7.0, 1e-12);  // flat: n
  EXPECT_NEAR(effective_rank(spectrum({5, 0, 0})), 1.0, 1e-12);         // one direction
  EXPECT_NEAR(effective_rank(spectrum({1, 1, 0, 0})), 2.0, 1e-12);
  // p = (1/2, 1/4, 1/4): H = 1.5 ln 2, exp(H) = 2^1.5.
  EXPECT_NEAR(effective_rank(spectrum({2, 1, 1})), std::pow(2.0, 1.5), 1e-12);
  // Scale invariant.
  EXPECT_NEAR(effective_rank(spectrum({20, 10, 10})), std::pow(2.0, 1.5), 1e-12);
  EXPECT_EQ(effective_rank(spectrum({0, 0})), 0.0);
}

TEST(WeLoreRankTest, DropsRanksBelowTheNormalisedThreshold) {
  auto s = spectrum({1.0, 0.5, 0.1, 0.0});  // already min-max normalised
  EXPECT_LT(testing::max_abs_diff(normalized_spectrum(s), s), 1e-15);
  EXPECT_EQ(welore_rank(s), 2);  // tau = 0.175 drops 0.1 and 0.0
  EXPECT_EQ(welore_rank(s, 0.0), 4);
  EXPECT_EQ(welore_rank(s, 0.5), 2);  // 0.5 is not < 0.5
  EXPECT_EQ(welore_rank(s, 1.0), 1);
  // (s - min) / (max - min) for s = (3, 2, 1) is (1, 0.5, 0).
  EXPECT_LT(testing::max_abs_diff(normalized_spectrum(spectrum({3, 2, 1})), spectrum({1, 0.5, 0})), 1e-15);
  // A flat spectrum normalises to 0/0: the reference drops nothing, at any threshold.
  EXPECT_TRUE(at::isnan(normalized_spectrum(spectrum({2, 2, 2}))).all().item<bool>());
  for (double tau : {0.0, 0.1, kWeLoreDefaultTau, 1.0}) EXPECT_EQ(welore_rank(spectrum({2, 2, 2}), tau), 3);
  EXPECT_EQ(welore_rank(spectrum({0, 0}), 0.5), 2);
  EXPECT_THROW(welore_rank(s, 1.5), InvalidArgument);
}

TEST(RankRuleTest, ParsesAndPrintsEveryKind) {
  auto fixed = RankRule::parse("fixed:64");
  EXPECT_EQ(fixed.kind, RankRule::Kind::kFixed);
  EXPECT_EQ(fixed.value, 64);
  EXPECT_EQ(fixed.to_string(), "fixed:64");
  auto energy = RankRule::parse("energy:0.9");
  EXPECT_EQ(energy.kind, RankRule::Kind::kEnergy);
  EXPECT_DOUBLE_EQ(energy.value, 0.9);
  EXPECT_EQ(RankRule::parse(energy.to_string()).value, 0.9);
  EXPECT_EQ(RankRule::parse("effective").kind, RankRule::Kind::kEffective);
  EXPECT_EQ(RankRule::parse("effective").to_string(), "effective");
  EXPECT_DOUBLE_EQ(RankRule::parse("welore").value, kWeLoreDefaultTau);
  EXPECT_DOUBLE_EQ(RankRule::parse("welore:0.2").value, 0.2);
  for (const char* bad : {"fixed:0", "fixed:1.5", "fixed:abc", "fixed", "energy:1.5", "energy:0",
                          "effective:3", "welore:2", "bogus", ""}) {
    EXPECT_THROW(RankRule::parse(bad), InvalidArgument) << bad;
  }
}

TEST(RankRuleTest, SelectClampsToOneToN) {
  auto s = spectrum({3, 2, 1, 0});
  EXPECT_EQ(RankRule::parse("fixed:2").select(s), 2);
  EXPECT_EQ(RankRule::parse("fixed:64").select(s), 4);
  EXPECT_EQ(RankRule::parse("energy:0.65").select(s), 2);
  EXPECT_EQ(RankRule::parse("welore:0.9").select(s), 1);
  EXPECT_EQ(RankRule::parse("energy:0.5").select(spectrum({0, 0, 0})), 1);
  // exp(H) for p = (1/2, 1/4, 1/4) is 2.83, rounded to 3.
  EXPECT_EQ(RankRule::parse("effective").select(spectrum({2, 1, 1})), 3);
  EXPECT_EQ(RankRule::parse("fixed:3").select(at::zeros({0}, at::kDouble)), 0);
}

}  // namespace
}  // namespace lowrank::linalg
