// Lyapunov exponents of Mamba's recurrence (mix/mamba_lyapunov.h):
// - the closed form λ = A · mean Δ equals a finite difference through the selective scan itself:
//   h₀ perturbed, the last state's change measured, (1/T) ln |δh_T / δh₀| per (channel, state),
//   and the change of one entry of h₀ moves no other entry (the diagonal Jacobian);
// - the whole-model float64 estimate approaches the slowest closed-form mode when the modes are
//   well separated (Δ nearly constant, A = −1, −2);
// - on transformers' MambaForCausalLM fixture every exponent is negative and the report files
//   are written; bad models and inputs are refused naming what is wrong.
#include "lowrank/mix/mamba_lyapunov.h"

#include <gtest/gtest.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/nn/model.h"
#include "lowrank/ops/selective_scan.h"
#include "tests/mix/mixer_test_util.h"
#include "tests/mix/ssm_testing.h"
#include "tests/testing.h"

namespace lowrank::mix {
namespace {

using testing::max_diff;

TEST(MambaLyapunovTest, ClosedFormEqualsAFiniteDifferenceOfTheRecurrence) {
  const nn::ModelConfig config =
      testing::mixer_config("mamba", 8, 2, Json{{"state_size", 4}, {"conv_kernel", 3}});
  const auto built = testing::build_mixer("mamba", config);
  const auto& mixer = dynamic_cast<const Mamba&>(*built);
  at::manual_seed(3);
  const int64_t S = 3, T = 40;
  const at::Tensor x = at::randn({S, T, 8}, at::kDouble);
  const LayerExponents e = layer_exponents(mixer, x);

  const MambaScanInputs in = mixer.scan_inputs(x, {});
  const int64_t D = in.A.size(0), N = in.A.size(1);
  ASSERT_EQ(e.exponents.sizes(), (std::vector<int64_t>{D, N}));
  // The map h₀ ↦ h_T is affine, so any ε is exact; a large one keeps the fastest modes' change
  // (e^{−20} of it) far above the rounding of h_T.
  const double eps = 1e3;
  at::Tensor per_sequence = at::zeros({S, D, N}, at::kDouble);
  for (int64_t b = 0; b < S; ++b) {
    auto scan_from = [&](const at::Tensor& h0) {
      ops::SelectiveScanOptions o;
      o.delta_softplus = true;
      o.initial_state = h0;
      return ops::selective_scan(in.u.narrow(0, b, 1), in.dt.narrow(0, b, 1), in.A, in.B.narrow(0, b, 1),
                                 in.C.narrow(0, b, 1), o)
          .last_state;
    };
    const at::Tensor h0 = at::randn({1, D, N}, at::kDouble);
    const at::Tensor base = scan_from(h0);
    // Every entry of h₀ moved by ε: with a diagonal Jacobian each entry's change is its own mode.
    const at::Tensor growth = (scan_from(h0 + eps) - base) / eps;
    ASSERT_GT(growth.min().item<double>(), 0.0);
    per_sequence[b] = at::log(growth[0]) / static_cast<double>(T);
    // One entry moved: nothing else changes.
    at::Tensor one = h0.clone();
    one[0][1][2] += eps;
    at::Tensor moved = (scan_from(one) - base).abs();
    moved[0][1][2] = 0;
    EXPECT_LE(moved.max().item<double>(), 1e-12);
  }
  EXPECT_LE(max_diff(e.exponents, per_sequence.mean(0)), 1e-10);
  EXPECT_NEAR(e.max_single_sequence, per_sequence.max().item<double>(), 1e-10);
  EXPECT_LT(e.max, 0.0);
  EXPECT_NEAR(e.max, e.exponents.max().item<double>(), 0.0);
}

TEST(MambaLyapunovTest, WholeModelEstimateApproachesTheSlowestMode) {
  // Δ ≈ 0.05 in every channel (dt_proj's weight scaled down) and A = −1, −2: the slowest mode
  // decays at ≈ −0.05 per position, twice as slowly as the next one.
  const nn::ModelConfig config = testing::mixer_config("mamba", 8, 2,
                                                       Json{{"state_size", 2},
                                                            {"conv_kernel", 3},
                                                            {"time_step_min", 0.05},
                                                            {"time_step_max", 0.05},
                                                            {"time_step_scale", 0.01}});
  nn::Model model = nn::Model::random(config, 5, {at::kDouble});
  at::manual_seed(4);
  const at::Tensor tokens = at::randint(16, {2, 160}, at::kLong);
  const LyapunovReport r = mamba_lyapunov(model, tokens);
  ASSERT_EQ(r.layers.size(), 1u);
  const LayerExponents& e = r.layers[0];
  EXPECT_TRUE(r.all_negative);
  const PerturbationGrowth& g = r.whole_model;
  EXPECT_EQ(g.fit_begin, 1 + 3 - 1);
  EXPECT_GT(g.fit_end - g.fit_begin, 100) << "the perturbation reached the rounding floor early";
  EXPECT_LT(g.exponent, 0.0);
  EXPECT_NEAR(g.exponent, e.max, 0.1 * std::abs(e.max)) << "slowest mode " << e.max << ", fastest " << e.min;
}

TEST(MambaLyapunovTest, TransformersMambaFixtureIsStableAndTheReportIsWritten) {
  (void)registry();
  nn::Model model = nn::Model::load(lowrank::testing::fixture("hf/mamba-tiny") / "model", {at::kDouble});
  at::manual_seed(6);
  const at::Tensor tokens = at::randint(model.config().vocab_size, {2, 48}, at::kLong);
  const LyapunovReport r = mamba_lyapunov(model, tokens);
  ASSERT_EQ(static_cast<int64_t>(r.layers.size()), model.config().num_hidden_layers);
  EXPECT_TRUE(r.all_negative);
  for (const LayerExponents& e : r.layers) {
    EXPECT_LT(e.max_single_sequence, 0.0) << "layer " << e.layer;
    EXPECT_LE(e.min, e.mean);
    EXPECT_LE(e.mean, e.max);
  }
  const lowrank::testing::TempDir tmp;
  const auto dir = tmp / "report";
  write_lyapunov_report(dir, r, "fixture");
  const Json j = Json::parse(read_text_file(dir / "lyapunov.json"));
  EXPECT_EQ(j.at("layers").size(), r.layers.size());
  EXPECT_EQ(j.at("whole_model").at("log_growth").size(), 48u);
  EXPECT_TRUE(j.at("all_negative").get<bool>());
  const std::string svg = read_text_file(dir / "lyapunov.svg");
  EXPECT_NE(svg.find("data-series=\"max\""), std::string::npos);
  EXPECT_NE(svg.find("data-series=\"fit\""), std::string::npos);
}

TEST(MambaLyapunovTest, RefusesWhatItCannotAnalyse) {
  const nn::ModelConfig mamba = testing::mixer_config("mamba", 8, 2, Json{{"state_size", 2}});
  const at::Tensor tokens = at::zeros({1, 32}, at::kLong);
  auto refused = [](auto&& fn, const std::string& what) {
    const std::string message = lowrank::testing::error_of(fn);
    EXPECT_NE(message.find(what), std::string::npos) << message;
  };
  nn::Model single = nn::Model::random(mamba, 1, {at::kFloat});
  refused([&] { mamba_lyapunov(single, tokens); }, "float64");
  nn::Model attention = nn::Model::random(testing::mixer_config("attention", 8, 2, Json()), 1, {at::kDouble});
  refused([&] { mamba_lyapunov(attention, tokens); }, "no Mamba layer");
  nn::Model model = nn::Model::random(mamba, 1, {at::kDouble});
  refused([&] { mamba_lyapunov(model, at::zeros({1, 4}, at::kLong)); }, "4 positions");
  refused([&] { mamba_lyapunov(model, at::zeros({32}, at::kLong)); }, "[sequences, positions]");
}

}  // namespace
}  // namespace lowrank::mix
