// Bidirectional attention (nn/attention.h, option `causal: false`) in classifiers: one layer against a
// float64 loop of softmax(q kᵀ/√D + padding mask) v with RoPE and grouped heads; a padded batch gives
// each sequence the logits it gets alone (left and right padding); position 0 sees a later token with
// causal: false and not with causal: true; the option refused in a language model and unknown keys
// refused when the mixer is built; the classification presets' default (with_bidirectional_attention).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/nn/attention.h"
#include "lowrank/nn/classifier.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/model.h"
#include "tests/nn/reference.h"
#include "tests/nn/test_mixers.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

using testing_mixers::classifier_config;
using testing_mixers::tiny_spec;

Json bidirectional(Json config) {
  config["mixer_config"] = {{"attention", {{"causal", false}}}};
  return config;
}

// x rotated as transformers' apply_rotary_pos_emb, one head vector at a time: with h = D/2,
// y_i = x_i cos_i − x_{i+h} sin_i and y_{i+h} = x_{i+h} cos_{i+h} + x_i sin_{i+h}.
std::vector<double> rotate(const std::vector<double>& x, const double* cos, const double* sin) {
  const size_t h = x.size() / 2;
  std::vector<double> y(x.size());
  for (size_t i = 0; i < h; ++i) {
    y[i] = x[i] * cos[i] - x[i + h] * sin[i];
    y[i + h] = x[i + h] * cos[i + h] + x[i] * sin[i + h];
  }
  return y;
}

TEST(BidirectionalAttentionTest, EqualsAFloat64LoopOfSoftmaxWithAPaddingMask) {
  const testing::TinySpec s = tiny_spec();  // hidden 8, 4 query heads of 2 over 2 KV heads
  const ModelConfig config = ModelConfig::from_json(bidirectional(classifier_config(s, "attention", 2)), "t");
  const int64_t B = 2, T = 5, H = s.hidden, D = s.head_dim, n = s.heads, n_kv = s.kv_heads;
  at::Generator gen = at::detail::createCPUGenerator(11);
  std::map<std::string, at::Tensor> weights;
  MixerSpec spec{config,  0,      mixer_prefix("attention", 0), config.mixer_options("attention"),
                 nullptr, nullptr};
  spec.projection = [&](const std::string& name, int64_t out, int64_t in, bool) {
    at::Tensor w = at::randn({out, in}, gen, at::kDouble).mul(0.7);
    weights[name] = w;
    return std::shared_ptr<const BaseOperator>(std::make_shared<DenseOperator>(w));
  };
  const std::unique_ptr<TokenMixer> attention = mixer_registry().factory("attention")(spec);
  ASSERT_FALSE(attention->causal());

  const at::Tensor x = at::randn({B, T, H}, gen, at::kDouble);
  at::Tensor valid = at::ones({B, T}, at::kBool);
  valid[1][0] = false;  // row 1: one left and one right padding position
  valid[1][4] = false;
  const at::Tensor angle = at::rand({B, T, D / 2}, gen, at::kDouble).mul(6.0);
  const at::Tensor cos = at::cat({angle.cos(), angle.cos()}, -1).contiguous();
  const at::Tensor sin = at::cat({angle.sin(), angle.sin()}, -1).contiguous();
  // The trunk hands every layer its causal mask (with the padding): bidirectional attention must
  // ignore it.
  const AttentionMask causal_mask = make_attention_mask(valid, true, 0, T, 0, at::kCPU);
  MixerContext context;
  context.mask = &causal_mask;
  context.valid = valid;
  context.cos = cos;
  context.sin = sin;
  const at::Tensor y = attention->forward(x, context);

  const std::string p = mixer_prefix("attention", 0);
  const at::Tensor q = at::matmul(x, weights[p + ".q_proj"].t()).contiguous();  // [B, T, n·D]
  const at::Tensor k = at::matmul(x, weights[p + ".k_proj"].t()).contiguous();
  const at::Tensor v = at::matmul(x, weights[p + ".v_proj"].t()).contiguous();
  const at::Tensor wo = weights[p + ".o_proj"].contiguous();
  const auto qa = q.accessor<double, 3>(), ka = k.accessor<double, 3>(), va = v.accessor<double, 3>();
  const auto woa = wo.accessor<double, 2>();
  const double* cos_data = cos.data_ptr<double>();
  const double* sin_data = sin.data_ptr<double>();
  auto head = [&](const auto& a, int64_t b, int64_t t, int64_t h) {
    std::vector<double> out(static_cast<size_t>(D));
    for (int64_t d = 0; d < D; ++d) out[static_cast<size_t>(d)] = a[b][t][h * D + d];
    const int64_t at_row = (b * T + t) * D;
    return rotate(out, cos_data + at_row, sin_data + at_row);
  };
  double worst = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i) {
      std::vector<double> o(static_cast<size_t>(n * D), 0.0);
      for (int64_t h = 0; h < n; ++h) {
        const int64_t g = h / (n / n_kv);  // the KV head of query head h
        const std::vector<double> qi = head(qa, b, i, h);
        std::vector<double> score(static_cast<size_t>(T), -INFINITY);
        double top = -INFINITY;
        for (int64_t j = 0; j < T; ++j) {
          if (!valid[b][j].item<bool>()) continue;  // padding keys are never attended to
          const std::vector<double> kj = head(ka, b, j, g);
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qi[static_cast<size_t>(d)] * kj[static_cast<size_t>(d)];
          score[static_cast<size_t>(j)] = dot / std::sqrt(static_cast<double>(D));
          top = std::max(top, score[static_cast<size_t>(j)]);
        }
        double total = 0;
        for (double& e : score) total += (e = std::exp(e - top));
        for (int64_t j = 0; j < T; ++j)
          for (int64_t d = 0; d < D; ++d)
            o[static_cast<size_t>(h * D + d)] += score[static_cast<size_t>(j)] / total * va[b][j][g * D + d];
      }
      for (int64_t r = 0; r < H; ++r) {
        double out = 0;
        for (int64_t c = 0; c < n * D; ++c) out += woa[r][c] * o[static_cast<size_t>(c)];
        worst = std::max(worst, std::abs(out - y[b][i][r].item<double>()));
      }
    }
  EXPECT_LT(worst, 1e-12);
}

// A float64 classifier of tiny_spec()'s shape: [attention, attention] with the given causality.
SequenceClassifier classifier(bool causal, uint64_t seed) {
  Json config = classifier_config(tiny_spec(), "attention", 3);
  if (!causal) config = bidirectional(config);
  return SequenceClassifier::random(ModelConfig::from_json(config, "t"), seed, {at::kDouble});
}

TEST(BidirectionalAttentionTest, PaddedBatchGivesEachSequenceTheLogitsItGetsAlone) {
  const SequenceClassifier model = classifier(false, 4);
  const std::vector<std::vector<int64_t>> rows = {{3, 9, 4, 1, 7, 2}, {5, 6, 8}, {11, 2, 19, 4}};
  const int64_t T = 6;
  // Row 1 padded on the right, row 2 on the left (the pad id 0 is a real vocabulary entry).
  at::Tensor ids = at::zeros({3, T}, at::kLong), mask = at::zeros({3, T}, at::kLong);
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto len = static_cast<int64_t>(rows[r].size());
    const int64_t start = r == 2 ? T - len : 0;
    for (int64_t t = 0; t < len; ++t) {
      ids[static_cast<int64_t>(r)][start + t] = rows[r][static_cast<size_t>(t)];
      mask[static_cast<int64_t>(r)][start + t] = 1;
    }
  }
  const at::Tensor batched = model.forward(ids, mask);
  for (size_t r = 0; r < rows.size(); ++r) {
    const at::Tensor alone = model.forward(at::tensor(rows[r], at::kLong).unsqueeze(0));
    EXPECT_LT((batched[static_cast<int64_t>(r)] - alone[0]).abs().max().item<double>(), 1e-10) << "row " << r;
  }
}

TEST(BidirectionalAttentionTest, PositionZeroSeesALaterTokenOnlyWhenNotCausal) {
  const at::Tensor a = at::tensor(std::vector<int64_t>{3, 9, 4, 1, 7}, at::kLong).unsqueeze(0);
  at::Tensor b = a.clone();
  b[0][4] = 12;
  for (const bool causal : {true, false}) {
    const SequenceClassifier model = classifier(causal, 5);
    const double change = (model.trunk().hidden_states(a)[0][0] - model.trunk().hidden_states(b)[0][0])
                              .abs()
                              .max()
                              .item<double>();
    if (causal)
      EXPECT_EQ(change, 0.0);
    else
      EXPECT_GT(change, 1e-6);
  }
}

TEST(BidirectionalAttentionTest, CausalFalseInALanguageModelIsRefusedNamingTheOption) {
  // Refused when the mixer is built, before any layer exists (pretrain's check_mixers builds every
  // mixer before any work: tests/train/classify_test.cpp runs the CLI).
  const ModelConfig config =
      ModelConfig::from_json(bidirectional(testing_mixers::mixer_config(tiny_spec(), "attention")), "t");
  try {
    (void)Model::random(config, 1);
    FAIL() << "causal: false was accepted in a language model";
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("\"causal\""), std::string::npos) << m;
    EXPECT_NE(m.find("LowrankMixerForCausalLM"), std::string::npos) << m;
  }
}

TEST(BidirectionalAttentionTest, OptionKeysAreValidatedNamingTheKeyAndTheKnownOnes) {
  auto load_with = [](const Json& options) {
    Json config = classifier_config(tiny_spec(), "attention", 2);
    config["mixer_config"] = {{"attention", options}};
    return SequenceClassifier::random(ModelConfig::from_json(config, "t"), 1);
  };
  try {
    (void)load_with({{"casual", false}});
    FAIL() << "an unknown option was accepted";
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("\"casual\""), std::string::npos) << m;
    EXPECT_NE(m.find("known: causal"), std::string::npos) << m;
  }
  try {
    (void)load_with({{"causal", "no"}});
    FAIL() << "a string for causal was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("\"causal\" must be true or false"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(load_with({{"causal", true}}).trunk().mixer(0).causal());
  EXPECT_FALSE(load_with({{"causal", false}}).trunk().mixer(0).causal());
}

TEST(BidirectionalAttentionTest, ClassificationPresetsMakeAttentionBidirectionalUnlessTold) {
  const Json plain =
      with_bidirectional_attention({{"layer_mixers", "attention"}, {"mixer_config", Json::object()}});
  EXPECT_EQ(plain["mixer_config"], Json({{"attention", {{"causal", false}}}}));
  const Json hybrid = with_bidirectional_attention(
      {{"layer_mixers", {"linformer", "attention"}}, {"mixer_config", {{"linformer", {{"k", 4}}}}}});
  EXPECT_EQ(hybrid["mixer_config"]["attention"], Json({{"causal", false}}));
  EXPECT_EQ(hybrid["mixer_config"]["linformer"], Json({{"k", 4}}));
  const Json told = with_bidirectional_attention(
      {{"layer_mixers", "attention"}, {"mixer_config", {{"attention", {{"causal", true}}}}}});
  EXPECT_EQ(told["mixer_config"]["attention"], Json({{"causal", true}}));
  const Json none =
      with_bidirectional_attention({{"layer_mixers", "linformer"}, {"mixer_config", Json::object()}});
  EXPECT_EQ(none["mixer_config"], Json::object());
}

}  // namespace
}  // namespace lowrank::nn
