// VQ-TTT (adapt/vq_ttt.h): the spectral filter at init is the identity; a rank-1 filter equals the
// pair of 1-D circular convolutions it stands for (float64 loops); LoRA sits on the named shallow
// layers only and only the filter and LoRA get gradients; entropy minimisation lowers the entropy;
// the model is left as it was.
#include "lowrank/adapt/vq_ttt.h"

#include <gtest/gtest.h>

#include <set>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/nn/image_classifier.h"

namespace lowrank::adapt {
namespace {

nn::ImageClassifier tiny_classifier(uint64_t seed) {
  const Json config{{"architectures", {"LowrankMixerForImageClassification"}},
                    {"model_type", "lowrank_mixer"},
                    {"image_size", {8, 12}},
                    {"num_channels", 1},
                    {"patch_size", 2},
                    {"num_labels", 4},
                    {"mixer_config", {{"attention", {{"causal", false}}}}},
                    {"stages",
                     {{{"depth", 2}, {"hidden_size", 8}, {"mixer", "attention"}, {"num_attention_heads", 2}},
                      {{"depth", 1}, {"hidden_size", 16}, {"mixer", "attention"}}}}};
  return nn::ImageClassifier::random(nn::ImageClassifierConfig::from_json(config, "test"), seed);
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(VqTttTest, FilterStartsAtTheIdentity) {
  at::manual_seed(1);  // the random inputs below are fixed
  for (const auto& [h, w] : {std::pair<int64_t, int64_t>{8, 12}, {7, 9}}) {
    const SpectralFilter filter(h, w, 4, 3);
    EXPECT_LE(max_diff(filter.response(), at::ones({h, w / 2 + 1})), 0.0);
    const at::Tensor x = at::rand({2, 3, h, w});
    EXPECT_LE(max_diff(filter.forward(x), x), 1e-6) << h << "x" << w;
  }
}

// Circular convolution of each row of x [H, W] with k [W] (along the last axis), in float64 loops.
at::Tensor circular_rows(const at::Tensor& x, const at::Tensor& k) {
  const int64_t H = x.size(0), W = x.size(1);
  at::Tensor out = at::zeros({H, W}, at::kDouble);
  auto o = out.accessor<double, 2>();
  const auto xa = x.accessor<double, 2>();
  const auto ka = k.accessor<double, 1>();
  for (int64_t r = 0; r < H; ++r)
    for (int64_t c = 0; c < W; ++c)
      for (int64_t j = 0; j < W; ++j) o[r][c] += ka[j] * xa[r][(c - j + W) % W];
  return out;
}

// The real, even kernel whose DFT is the even extension of `half` (half[f] for f ≤ n/2), by the
// inverse-DFT sum written out: k[j] = (1/n) Σ_f g[f] cos(2π f j / n), g[f] = half[min(f, n − f)].
at::Tensor even_kernel(const at::Tensor& half, int64_t n) {
  at::Tensor k = at::zeros({n}, at::kDouble);
  auto ka = k.accessor<double, 1>();
  const auto ha = half.accessor<double, 1>();
  for (int64_t j = 0; j < n; ++j)
    for (int64_t f = 0; f < n; ++f)
      ka[j] += ha[std::min(f, n - f)] *
               std::cos(2 * M_PI * static_cast<double>(f * j) / static_cast<double>(n)) /
               static_cast<double>(n);
  return k;
}

TEST(VqTttTest, RankOneFilterIsAPairOfOneDimensionalConvolutions) {
  at::manual_seed(2);  // the random inputs below are fixed
  for (const auto& [h, w] : {std::pair<int64_t, int64_t>{8, 12}, {7, 9}}) {
    const at::Tensor u = at::rand({1, h / 2 + 1}, at::kDouble) + 0.5;
    const at::Tensor v = at::rand({1, w / 2 + 1}, at::kDouble) + 0.5;
    const SpectralFilter filter(h, w, u.to(at::kFloat), v.to(at::kFloat));
    const at::Tensor x = at::rand({h, w}, at::kDouble);
    // Along the rows with ifft(v), then along the columns with ifft(u).
    const at::Tensor rows = circular_rows(x, even_kernel(v[0], w));
    const at::Tensor want = circular_rows(rows.t().contiguous(), even_kernel(u[0], h)).t();
    const at::Tensor got = filter.forward(x.to(at::kFloat).view({1, 1, h, w}))[0][0];
    EXPECT_LE(max_diff(got, want), 1e-5) << h << "x" << w;
  }
}

TEST(VqTttTest, LoraOnlyOnTheShallowLayersAndOnlyAdapterTensorsGetGradients) {
  at::manual_seed(3);  // the random inputs below are fixed
  nn::ImageClassifier model = tiny_classifier(1);
  VqTtt ttt(model, {.filter_rank = 2, .lora_layers = 2, .lora_rank = 2, .steps = 0});
  std::set<std::string> held;
  for (nn::LinearSlot* slot : model.slots())
    if (slot->adapter("vq_ttt") != nullptr) held.insert(slot->name());
  ASSERT_FALSE(held.empty());
  EXPECT_EQ(held, std::set<std::string>(ttt.lora_slots().begin(), ttt.lora_slots().end()));
  for (const std::string& name : held)
    EXPECT_TRUE(name.starts_with("model.layers.0.") || name.starts_with("model.layers.1.")) << name;
  EXPECT_TRUE(held.contains("model.layers.1.self_attn.q_proj"));
  EXPECT_TRUE(held.contains("model.layers.0.mlp.down_proj"));
  EXPECT_FALSE(held.contains("score"));

  // Move B off zero so that every adapter tensor has a gradient path, then differentiate.
  for (const at::Tensor& p : ttt.parameters()) {
    at::NoGradGuard no_grad;
    if (p.dim() == 2 && p.size(1) == 2) p.add_(0.1);
  }
  mean_prediction_entropy(ttt.logits(at::rand({3, 1, 8, 12}))).backward();
  for (const at::Tensor& p : ttt.parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_GT(p.grad().abs().max().item<double>(), 0.0);
  }
  for (const auto& [name, t] : model.named_tensors())
    EXPECT_FALSE(t.grad().defined() && t.grad().abs().max().item<double>() > 0) << name;
}

TEST(VqTttTest, EntropyMinimisationLowersTheEntropyAndDetachingRestoresTheModel) {
  at::manual_seed(4);  // the random inputs below are fixed
  nn::ImageClassifier model = tiny_classifier(2);
  // A head 30x its random init, so that the predictions are not flat at the start (a random tiny
  // model's are nearly uniform, and the entropy's gradient vanishes with the logits).
  for (const auto& [name, t] : model.named_tensors())
    if (name == "score.weight") {
      at::NoGradGuard no_grad;
      t.mul_(30);
    }
  const at::Tensor images = at::rand({16, 1, 8, 12});
  const at::Tensor before = model.forward(images);
  std::vector<double> losses;
  double adapted_entropy = 0;
  {
    VqTtt ttt(model, {.lora_layers = 1, .steps = 15, .batch_size = 16, .lr = 2e-2});
    losses = ttt.adapt(images);
    at::NoGradGuard no_grad;
    adapted_entropy = mean_prediction_entropy(ttt.logits(images)).item<double>();
  }
  ASSERT_EQ(losses.size(), 15u);
  const double initial = mean_prediction_entropy(before).item<double>();
  EXPECT_NEAR(losses.front(), initial, 1e-4);  // the first step sees the unadapted model
  EXPECT_LT(adapted_entropy, 0.8 * initial) << initial;
  EXPECT_LE(max_diff(model.forward(images), before), 0.0);  // LoRA detached, base untouched
}

// The two objectives in closed form on two rows: p = (1/2, 1/2) and p = (e/(1+e), 1/(1+e)).
TEST(VqTttTest, ObjectivesEqualTheirClosedForms) {
  const at::Tensor logits = at::tensor({0.0, 0.0, 1.0, 0.0}, at::kDouble).view({2, 2});
  const double e = std::exp(1.0), q = e / (1 + e);
  const double h1 = std::log(2.0), h2 = -(q * std::log(q) + (1 - q) * std::log(1 - q));
  EXPECT_NEAR(mean_prediction_entropy(logits).item<double>(), (h1 + h2) / 2, 1e-6);
  const double m = (0.5 + q) / 2;
  const double marginal = -(m * std::log(m) + (1 - m) * std::log(1 - m));
  EXPECT_NEAR(information_maximisation_loss(logits).item<double>(), (h1 + h2) / 2 - marginal, 1e-6);
}

TEST(VqTttTest, BadConfigIsRefusedNamingTheField) {
  nn::ImageClassifier model = tiny_classifier(3);
  auto refused = [&](VqTttConfig c, const std::string& needle) {
    try {
      VqTtt ttt(model, c);
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  refused({.lora_layers = 4}, "lora_layers must be 1..3");
  refused({.lora_rank = 0}, "lora_rank");
  refused({.filter_rank = 0}, "rank 0");
  refused({.lr = -1}, "lr > 0");
  refused({.objective = "kl"}, "objective must be entropy or infomax, got \"kl\"");
  VqTtt held(model, {});
  refused({}, "already holds an adapter \"vq_ttt\"");
}

}  // namespace
}  // namespace lowrank::adapt
