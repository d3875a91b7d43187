// S4D (mix/s4d.h): the Vandermonde kernel against the unrolled recurrence in float64 (ZOH and
// bilinear, every init), the chunked product and its hand-written backward against autograd of the
// naive product, the two-sided convolution (direct and by FFT) against a direct double sum, step() against
// forward (with left padding), the inits against their formulas, param_groups, and the refusals (odd d_state,
// bidirectional in an LM).
#include "lowrank/mix/s4d.h"

#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <complex>
#include <numbers>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/ops/long_fft_conv.h"
#include "lowrank/ops/vandermonde.h"
#include "tests/mix/mixer_test_util.h"
#include "tests/mix/ssm_testing.h"

namespace lowrank::mix {
namespace {

using namespace testing;  // build_mixer, mixer_config, max_diff, tensor_named

const S4D& as_s4d(const std::unique_ptr<nn::TokenMixer>& m) {
  return dynamic_cast<const S4D&>(*m);
}

// A one-layer sequence classifier config (bidirectional mixers are allowed there).
nn::ModelConfig classifier_config(const std::string& mixer, int64_t hidden, const Json& options) {
  (void)registry();
  const Json c{{"architectures", {"LowrankMixerForSequenceClassification"}},
               {"model_type", "lowrank_mixer"},
               {"vocab_size", 16},
               {"hidden_size", hidden},
               {"intermediate_size", 2 * hidden},
               {"num_hidden_layers", 1},
               {"num_attention_heads", 1},
               {"num_key_value_heads", 1},
               {"max_position_embeddings", 64},
               {"num_labels", 2},
               {"layer_mixers", mixer},
               {"mixer_config", {{mixer, options}}}};
  return nn::ModelConfig::from_json(c, "test classifier");
}

// The impulse response of the recurrence h_l = Ā h_{l−1} + B̄ δ_l, y_l = 2 Re(C·h_l), written out in
// std::complex<double> from the mixer's tensors and the discretisation formulas.
at::Tensor recurrence_kernel(const nn::TokenMixer& mixer, bool bilinear, int64_t L, int64_t channel = 0) {
  const at::Tensor log_dt = tensor_named(mixer, "log_dt"), log_a = tensor_named(mixer, "log_A_real");
  const at::Tensor a_imag = tensor_named(mixer, "A_imag"), C = tensor_named(mixer, "C")[channel];
  const int64_t H = log_a.size(0), M = log_a.size(1);
  at::Tensor K = at::zeros({H, L}, at::kDouble);
  for (int64_t h = 0; h < H; ++h) {
    const double dt = std::exp(log_dt[h].item<double>());
    for (int64_t n = 0; n < M; ++n) {
      const std::complex<double> A(-std::exp(log_a[h][n].item<double>()), a_imag[h][n].item<double>());
      const std::complex<double> c(C[h][n][0].item<double>(), C[h][n][1].item<double>());
      std::complex<double> dA, dB;
      if (bilinear) {
        dA = (1.0 + dt * A / 2.0) / (1.0 - dt * A / 2.0);
        dB = dt / (1.0 - dt * A / 2.0);
      } else {
        dA = std::exp(dt * A);
        dB = (std::exp(dt * A) - 1.0) / A;
      }
      std::complex<double> state = dB;
      for (int64_t l = 0; l < L; ++l) {
        K[h][l] += 2 * (c * state).real();
        state = dA * state;
      }
    }
  }
  return K;
}

TEST(S4DTest, VandermondeKernelEqualsTheUnrolledRecurrenceInFloat64) {
  for (const std::string init : {"lin", "inv", "real"})
    for (const std::string disc : {"zoh", "bilinear"}) {
      const nn::ModelConfig config =
          mixer_config("s4d", 4, 1, {{"d_state", 6}, {"init", init}, {"disc", disc}});
      const auto mixer = build_mixer("s4d", config);
      const int64_t L = 50;
      const at::Tensor K = as_s4d(mixer).kernel(L);
      ASSERT_EQ(K.sizes(), (at::IntArrayRef{1, 4, L}));
      const at::Tensor want = recurrence_kernel(*mixer, disc == "bilinear", L);
      EXPECT_LE(max_diff(K[0], want), 1e-10 * (1 + want.abs().max().item<double>())) << init << " " << disc;
    }
}

TEST(S4DTest, ChunkedVandermondeAndItsBackwardEqualTheNaiveProduct) {
  const int64_t H = 3, M = 4, L = 23;
  const at::Tensor c = at::randn({H, M}, at::kComplexDouble).requires_grad_(true);
  const at::Tensor x =
      at::complex(-at::rand({H, M}, at::kDouble) * 0.3, at::randn({H, M}, at::kDouble)).requires_grad_(true);
  const at::Tensor g = at::randn({H, L}, at::kDouble);
  // Naive: exp(x·l) materialised, autograd's own backward.
  const at::Tensor l = at::arange(L, at::kDouble);
  const at::Tensor naive = at::real((c.unsqueeze(-1) * at::exp(x.unsqueeze(-1) * l)).sum(1)) * 2;
  const auto want = torch::autograd::grad({(naive * g).sum()}, {c, x});
  for (const int64_t chunk :
       {int64_t{0}, int64_t{H * M * 5}, int64_t{1}}) {  // whole, 5 positions, 1 position
    const at::Tensor K = ops::log_vandermonde(c, x, L, chunk);
    EXPECT_LE(max_diff(K, naive), 1e-12) << chunk;
    const auto got = torch::autograd::grad({(K * g).sum()}, {c, x});
    EXPECT_LE((got[0] - want[0]).abs().max().item<double>(), 1e-10) << chunk;
    EXPECT_LE((got[1] - want[1]).abs().max().item<double>(), 1e-10) << chunk;
  }
}

TEST(S4DTest, TwoSidedConvolutionEqualsTheDoubleSum) {
  const int64_t H = 3;
  // Two-sided (bidirectional): y_t = Σ_{s≤t} k₀[t−s] u_s + Σ_{s>t} k₁[s−t−1] u_s, as a double sum; 7
  // positions go the direct way, 80 through the FFT.
  for (const int64_t L : {int64_t{7}, int64_t{80}}) {
    const at::Tensor u = at::randn({1, H, L}, at::kDouble), k = at::randn({2, H, L}, at::kDouble);
    at::Tensor want = at::zeros({1, H, L}, at::kDouble);
    for (int64_t t = 0; t < L; ++t)
      for (int64_t s = 0; s < L; ++s)
        want.select(2, t) += (s <= t ? k[0].select(1, t - s) : k[1].select(1, s - t - 1)) * u.select(2, s);
    EXPECT_LE(max_diff(ssm_convolve(u, k), want), 1e-12) << L;
    // The causal half alone, either way.
    EXPECT_LE(max_diff(ssm_convolve(u, k.narrow(0, 0, 1)), ops::fft_conv(u, k[0])), 1e-12) << L;
  }
}

TEST(S4DTest, StepEqualsForwardAndPaddingLeavesTheStateAlone) {
  for (const std::string disc : {"zoh", "bilinear"}) {
    const nn::ModelConfig config = mixer_config("s4d", 6, 1, {{"d_state", 4}, {"disc", disc}});
    const auto mixer = build_mixer("s4d", config);
    ASSERT_TRUE(mixer->causal());
    ASSERT_TRUE(mixer->has_decode_state());
    SCOPED_TRACE(disc);
    testing::expect_step_equals_forward_with_padding(*mixer, at::randn({2, 9, 6}, at::kDouble), 0, 2, 1e-12);
  }
}

TEST(S4DTest, InitsMatchTheirFormulas) {
  const int64_t H = 64, N = 64, M = N / 2;
  const at::Tensor n = at::arange(M, at::kDouble);
  for (const std::string init : {"lin", "inv", "real"}) {
    const nn::ModelConfig config =
        mixer_config("s4d", H, 1, {{"d_state", N}, {"init", init}, {"dt_min", 0.002}, {"dt_max", 0.05}});
    const auto mixer = build_mixer("s4d", config);
    const at::Tensor log_a = tensor_named(*mixer, "log_A_real"), a_imag = tensor_named(*mixer, "A_imag");
    ASSERT_EQ(log_a.sizes(), (at::IntArrayRef{H, M}));
    at::Tensor want_real = at::full({M}, -0.5, at::kDouble), want_imag;
    if (init == "lin") want_imag = std::numbers::pi * n;
    if (init == "inv") want_imag = (N / std::numbers::pi) * (N / (2 * n + 1) - 1);
    if (init == "real") {
      want_real = -(n + 1);
      want_imag = at::zeros({M}, at::kDouble);
    }
    for (int64_t h = 0; h < H; h += 21) {
      EXPECT_LE(max_diff(-at::exp(log_a[h]), want_real), 1e-12) << init;
      EXPECT_LE(max_diff(a_imag[h], want_imag), 1e-9) << init;
    }
    // Δ log-uniform on [dt_min, dt_max]: inside, spread over it.
    const at::Tensor log_dt = tensor_named(*mixer, "log_dt");
    EXPECT_GE(log_dt.min().item<double>(), std::log(0.002));
    EXPECT_LE(log_dt.max().item<double>(), std::log(0.05));
    EXPECT_NEAR(log_dt.mean().item<double>(), 0.5 * (std::log(0.002) + std::log(0.05)), 0.25);
    // C ~ CN(0, 1): each part N(0, 1/2); D ~ N(0, 1).
    const at::Tensor C = tensor_named(*mixer, "C");
    ASSERT_EQ(C.sizes(), (at::IntArrayRef{1, H, M, 2}));
    EXPECT_NEAR(C.std().item<double>(), std::sqrt(0.5), 0.03);
    EXPECT_NEAR(tensor_named(*mixer, "D").std().item<double>(), 1.0, 0.25);
  }
}

TEST(S4DTest, SsmParametersHaveTheirOwnLearningRateAndNoWeightDecay) {
  const auto mixer = build_mixer("s4d", mixer_config("s4d", 4, 1, {{"d_state", 4}, {"ssm_lr", 0.002}}));
  const std::vector<nn::ParamGroup> groups = mixer->param_groups();
  std::set<std::string> names;
  for (const nn::ParamGroup& g : groups) {
    names.insert(g.tensor);
    EXPECT_EQ(g.lr.value_or(-1), 0.002);
    EXPECT_EQ(g.weight_decay.value_or(-1), 0.0);
  }
  const std::set<std::string> want = {"model.layers.0.mixer.log_dt", "model.layers.0.mixer.log_A_real",
                                      "model.layers.0.mixer.A_imag"};
  EXPECT_EQ(names, want);
  // Every group names a tensor the mixer lists.
  for (const std::string& name : names)
    EXPECT_TRUE(tensor_named(*mixer, name.substr(name.rfind('.') + 1)).defined());
}

TEST(S4DTest, BidirectionalRunsInAClassifierAndSeesTheFuture) {
  const nn::ModelConfig config = classifier_config("s4d", 6, {{"d_state", 4}, {"bidirectional", true}});
  const auto mixer = build_mixer("s4d", config);
  EXPECT_FALSE(mixer->causal());
  EXPECT_FALSE(mixer->has_decode_state());
  EXPECT_THROW((void)mixer->new_state(1), Unsupported);
  const at::Tensor K = as_s4d(mixer).kernel(12);
  ASSERT_EQ(K.size(0), 2);
  EXPECT_LE(max_diff(K[1], recurrence_kernel(*mixer, false, 12, 1)), 1e-10);
  const at::Tensor x = at::randn({1, 6, 6}, at::kDouble).requires_grad_(true);
  mixer->forward(x, {})[0][0].sum().backward();
  EXPECT_GT(x.grad()[0][5].abs().sum().item<double>(), 0.0);  // position 0 sees position 5
}

TEST(S4DTest, BadOptionsAreRefusedNamingTheOption) {
  auto message = [](const nn::ModelConfig& config) {
    try {
      (void)build_mixer("s4d", config);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message(mixer_config("s4d", 4, 1, {{"d_state", 5}})).find("d_state must be even"),
            std::string::npos);
  const std::string lm = message(mixer_config("s4d", 4, 1, {{"bidirectional", true}}));
  EXPECT_NE(lm.find("bidirectional = true"), std::string::npos) << lm;
  EXPECT_NE(lm.find("LowrankMixerForCausalLM"), std::string::npos) << lm;
  EXPECT_NE(message(mixer_config("s4d", 4, 1, {{"init", "legs"}})).find("init must be"), std::string::npos);
  EXPECT_NE(message(mixer_config("s4d", 4, 1, {{"disc", "euler"}})).find("disc must be"), std::string::npos);
  EXPECT_NE(message(mixer_config("s4d", 4, 1, {{"dt_min", 0.5}, {"dt_max", 0.1}})).find("dt_min"),
            std::string::npos);
  EXPECT_NE(message(mixer_config("s4d", 4, 1, {{"n_ssm", 1}})).find("unknown option \"n_ssm\""),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank::mix
