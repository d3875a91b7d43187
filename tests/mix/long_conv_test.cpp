// mix/long_conv: the squash and the smoothing against their formulas (scalar loops); the long_conv
// mixer against a float64 hand computation (regularised kernel, direct causal sum, D skip, GELU,
// Linear + GLU), with channels, and bidirectional against its two-sided sum; the Monarch and the
// learned-Monarch (at its DFT initialisation) implementations against the FFT one; trained Monarch
// factors make the mixer look ahead (so learned_monarch reports itself bidirectional); step()
// equals forward's rows under left padding; gated_long_conv against its H3 formula; param_groups
// honoured by AdamW (kernels at kernel_lr without weight decay); kernel dropout only while
// training; bad options refused naming them.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <map>
#include <string>

#include "lowrank/core/error.h"
#include "lowrank/mix/long_conv.h"
#include "lowrank/optim/adamw.h"
#include "lowrank/train/trainer.h"
#include "tests/mix/mixer_test_util.h"
#include "tests/mix/ssm_testing.h"

namespace lowrank::mix {
namespace {

using namespace testing;  // build_mixer, mixer_config, max_diff, tensor_named

// The regularised kernel by scalar loops: zero-padded moving average of `window`, then the soft
// threshold, row by row of a [R, L] float64 tensor.
at::Tensor regularised_by_loops(const at::Tensor& kernel, int64_t window, double lam) {
  const at::Tensor k = kernel.reshape({-1, kernel.size(-1)}).contiguous();
  const int64_t R = k.size(0), L = k.size(1);
  at::Tensor out = at::zeros_like(k);
  auto in = k.accessor<double, 2>();
  auto o = out.accessor<double, 2>();
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < L; ++j) {
      double sum = 0;
      for (int64_t i = j - window / 2; i <= j + window / 2; ++i)
        if (i >= 0 && i < L) sum += in[r][i];
      const double smoothed = sum / static_cast<double>(window);
      o[r][j] = std::abs(smoothed) > lam ? smoothed - std::copysign(lam, smoothed) : 0.0;
    }
  return out.reshape(kernel.sizes());
}

// Σ_{s≤t, t−s<L'} K[h, t−s]·u[b, s, h] (+ the future side Σ_{s>t} F[h, s−t−1]·u[b, s, h] when F is
// given), u [B, T, H], K and F [H, L']: [B, T, H].
at::Tensor causal_sum(const at::Tensor& u, const at::Tensor& K, const at::Tensor& F = {}) {
  const int64_t B = u.size(0), T = u.size(1), H = u.size(2), L = K.size(1);
  at::Tensor y = at::zeros_like(u);
  auto ua = u.accessor<double, 3>();
  auto ka = K.accessor<double, 2>();
  auto ya = y.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        double sum = 0;
        for (int64_t s = 0; s <= t; ++s)
          if (t - s < L) sum += ka[h][t - s] * ua[b][s][h];
        if (F.defined()) {
          auto fa = F.accessor<double, 2>();
          for (int64_t s = t + 1; s < T; ++s)
            if (s - t - 1 < L) sum += fa[h][s - t - 1] * ua[b][s][h];
        }
        ya[b][t][h] = sum;
      }
  return y;
}

at::Tensor glu_linear(const nn::TokenMixer& mixer, const at::Tensor& y) {
  const nn::LinearSlot* out = mixer.slots().front();
  const at::Tensor z = at::linear(y, out->base().dense_weight(), out->base().bias());
  const int64_t H = z.size(-1) / 2;
  return z.narrow(-1, 0, H) * at::sigmoid(z.narrow(-1, H, H));
}

at::Tensor gelu_exact(const at::Tensor& x) {
  return 0.5 * x * (1.0 + at::erf(x / std::sqrt(2.0)));
}

TEST(LongConvTest, SquashAndSmoothingMatchTheirFormulas) {
  at::manual_seed(1);
  const at::Tensor k = at::randn({2, 3, 11}, at::kDouble) * 0.1;
  EXPECT_LE(max_diff(squash_kernel(smooth_kernel(k, 7), 0.02), regularised_by_loops(k, 7, 0.02)), 1e-15);
  EXPECT_LE(max_diff(squash_kernel(k, 0.05), regularised_by_loops(k, 1, 0.05)), 1e-15);
  EXPECT_LE(max_diff(smooth_kernel(k, 3), regularised_by_loops(k, 3, 0.0)), 1e-15);
  EXPECT_THROW((void)smooth_kernel(k, 4), InvalidArgument);
}

TEST(LongConvTest, ForwardEqualsTheHandComputationWithChannelsSmoothingAndSquash) {
  const int64_t H = 4, T = 9, C = 2;
  const Json options = {{"channels", C}, {"lam", 0.03}, {"smooth", true}, {"l_max", 6}};
  const nn::ModelConfig config = mixer_config("long_conv", H, 1, options);
  std::map<std::string, at::Tensor> given = {
      {"model.layers.0.mixer.kernel", at::randn({C, H, 6}, at::kDouble) * 0.3}};
  const auto mixer = build_mixer("long_conv", config, given);
  const at::Tensor x = at::randn({2, T, H}, at::kDouble);
  const at::Tensor K = regularised_by_loops(given.begin()->second, 7, 0.03);
  const at::Tensor D = tensor_named(*mixer, "model.layers.0.mixer.D");
  std::vector<at::Tensor> per_channel;
  for (int64_t c = 0; c < C; ++c) per_channel.push_back(causal_sum(x, K[c]) + x * D[c]);
  const at::Tensor want = glu_linear(*mixer, gelu_exact(at::cat(per_channel, -1)));
  EXPECT_LE(max_diff(mixer->forward(x, {}), want), 1e-12);
  EXPECT_TRUE(mixer->causal());
}

TEST(LongConvTest, BidirectionalAddsTheFutureSideOfItsSecondKernel) {
  const int64_t H = 4, T = 7;
  const nn::ModelConfig config = mixer_config("long_conv", H, 2, {{"bidirectional", true}, {"l_max", 7}});
  const auto mixer = build_mixer("long_conv", config);
  EXPECT_FALSE(mixer->causal());
  EXPECT_FALSE(mixer->has_decode_state());
  const at::Tensor x = at::randn({2, T, H}, at::kDouble);
  const at::Tensor K = tensor_named(*mixer, "model.layers.0.mixer.kernel");  // [2, H, L']
  const at::Tensor D = tensor_named(*mixer, "model.layers.0.mixer.D");
  const at::Tensor want = glu_linear(*mixer, gelu_exact(causal_sum(x, K[0], K[1]) + x * D[0]));
  EXPECT_LE(max_diff(mixer->forward(x, {}), want), 1e-12);
}

TEST(LongConvTest, MonarchAndLearnedMonarchAtTheDftEqualTheFftImplementation) {
  const int64_t H = 4, T = 10;
  const at::Tensor x = at::randn({2, T, H}, at::kDouble);
  const auto fft = build_mixer("long_conv", mixer_config("long_conv", H, 1, {{"l_max", 12}}));
  const at::Tensor want = fft->forward(x, {});
  for (const std::string impl : {"monarch", "learned_monarch"}) {
    const auto other =
        build_mixer("long_conv", mixer_config("long_conv", H, 1, {{"l_max", 12}, {"impl", impl}}));
    EXPECT_LE(max_diff(other->forward(x, {}), want), 1e-10) << impl;
  }
}

TEST(LongConvTest, TrainedMonarchFactorsLookAheadSoLearnedMonarchIsNotCausal) {
  const int64_t H = 2, T = 6;
  const auto mixer =
      build_mixer("long_conv", mixer_config("long_conv", H, 1, {{"l_max", 8}, {"impl", "learned_monarch"}}));
  EXPECT_FALSE(mixer->causal());
  std::vector<std::string> factors;
  for (const nn::ParamGroup& g : mixer->param_groups())
    if (g.tensor.find("_fft_") != std::string::npos) {
      factors.push_back(g.tensor);
      EXPECT_EQ(g.lr, 1e-3);
      EXPECT_EQ(g.weight_decay, 0.0);
    }
  EXPECT_EQ(factors.size(), 4u);
  // One training-like perturbation of the input transform's first factor.
  at::Tensor f1 = tensor_named(*mixer, "model.layers.0.mixer.kernel_fft_u.f1");
  f1.add_(at::randn(f1.sizes(), at::kDouble) * 0.1);
  const at::Tensor x = at::randn({1, T, H}, at::kDouble).requires_grad_(true);
  const at::Tensor y = mixer->forward(x, {});
  const at::Tensor g = torch::autograd::grad({y[0][0].sum()}, {x})[0][0];
  // Well above the ~1e-17 an FFT convolution carries from every input.
  EXPECT_GT(g[T - 1].abs().sum().item<double>(), 1e-6) << "y_0 ignores x_{T-1}";
}

TEST(LongConvTest, StepEqualsForwardUnderLeftPaddingWithAKernelShorterThanTheSequence) {
  const int64_t H = 4;
  for (const std::string mixer : {"long_conv", "gated_long_conv"}) {
    const Json options = {{"l_max", 4}, {"lam", 0.001}, {"smooth", true}};
    const auto built = build_mixer(mixer, mixer_config(mixer, H, 2, options));
    ASSERT_TRUE(built->has_decode_state()) << mixer;
    // Row 0 starts with two padding positions.
    testing::expect_step_equals_forward_with_padding(*built, at::randn({2, 7, H}, at::kDouble), 0, 2, 1e-12);
  }
}

TEST(LongConvTest, GatedLongConvEqualsTheH3Formula) {
  const int64_t H = 4, T = 8;
  const auto mixer = build_mixer("gated_long_conv", mixer_config("gated_long_conv", H, 2, {{"l_max", 8}}));
  EXPECT_TRUE(mixer->causal());
  const at::Tensor x = at::randn({2, T, H}, at::kDouble);
  auto project = [&](size_t i, const at::Tensor& in) {
    const nn::LinearSlot* s = mixer->slots()[i];
    return at::linear(in, s->base().dense_weight(), s->base().bias());
  };
  const at::Tensor q = project(0, x), k = project(1, x), v = project(2, x);
  const std::string p = "model.layers.0.mixer.";
  const at::Tensor shifted =
      causal_sum(k, tensor_named(*mixer, p + "shift_kernel")[0]) + k * tensor_named(*mixer, p + "shift_D");
  const at::Tensor kv = shifted * v;
  const at::Tensor y =
      q * (causal_sum(kv, tensor_named(*mixer, p + "kernel")[0]) + kv * tensor_named(*mixer, p + "D"));
  EXPECT_LE(max_diff(mixer->forward(x, {}), project(3, y)), 1e-12);
  std::vector<std::string> slots;
  for (const nn::LinearSlot* s : mixer->slots()) slots.push_back(s->name());
  EXPECT_EQ(slots, (std::vector<std::string>{p + "q_proj", p + "k_proj", p + "v_proj", p + "o_proj"}));
}

TEST(LongConvTest, ParamGroupsGiveTheKernelsTheirOwnLrAndNoWeightDecayInAdamW) {
  const auto mixer =
      build_mixer("long_conv", mixer_config("long_conv", 4, 1, {{"l_max", 5}, {"kernel_lr", 0.01}}));
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const auto& [name, t] : mixer->tensors())
    params.emplace_back(name, t.detach().clone().requires_grad_(true));
  const double peak = 0.1;
  optim::AdamConfig adam;
  adam.weight_decay = 0.5;
  optim::AdamW optimizer(params, adam);
  optimizer.set_overrides(train::param_overrides(mixer->param_groups(), params, peak));
  std::vector<at::Tensor> before;
  for (auto& [name, t] : params) {
    before.push_back(t.detach().clone());
    t.mutable_grad() = at::ones_like(t);
  }
  optimizer.step(peak);
  // Adam's first step moves each entry by lr·m̂/(√v̂ + ε) = lr for a unit gradient; decoupled decay
  // then adds −lr·λ·θ.
  for (size_t i = 0; i < params.size(); ++i) {
    const bool kernel = params[i].first == "model.layers.0.mixer.kernel";
    const double lr = kernel ? 0.01 : peak;
    const double decay = kernel ? 0.0 : adam.weight_decay;
    const at::Tensor want = before[i] * (1 - lr * decay) - lr;
    EXPECT_LE(max_diff(params[i].second.detach(), want), 1e-6) << params[i].first;
  }
}

TEST(LongConvTest, KernelDropoutActsOnlyWhileTheKernelIsTrained) {
  const auto mixer =
      build_mixer("long_conv", mixer_config("long_conv", 4, 1, {{"l_max", 6}, {"kernel_dropout", 0.5}}));
  const at::Tensor x = at::randn({1, 6, 4}, at::kDouble);
  const at::Tensor eval = mixer->forward(x, {});
  EXPECT_TRUE(mixer->forward(x, {}).equal(eval));
  tensor_named(*mixer, "model.layers.0.mixer.kernel").requires_grad_(true);
  EXPECT_GT(max_diff(mixer->forward(x, {}), eval), 0.0);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(mixer->forward(x, {}).equal(eval));
}

TEST(LongConvTest, BadOptionsAreRefusedNamingThem) {
  auto message = [](const Json& options, const std::string& mixer = "long_conv") {
    try {
      (void)build_mixer(mixer, mixer_config(mixer, 4, 1, options));
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message({{"window", 3}}).find("unknown option \"window\""), std::string::npos);
  EXPECT_NE(message({{"smooth_window", 4}}).find("smooth_window"), std::string::npos);
  EXPECT_NE(message({{"impl", "cufft"}}).find("\"cufft\""), std::string::npos);
  EXPECT_NE(message({{"lam", -1}}).find("lam"), std::string::npos);
  EXPECT_NE(message({{"channels", 2}}, "gated_long_conv").find("unknown option \"channels\""),
            std::string::npos);
  // An FFT length past the Monarch bound: l_max 2^24 needs N = 2^25.
  EXPECT_NE(message({{"impl", "monarch"}, {"l_max", int64_t{1} << 24}}).find("N = 33554432"),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank::mix
