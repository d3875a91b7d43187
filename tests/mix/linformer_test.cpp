// Linformer (mix/linformer.h): equals lucidrains' LinformerSelfAttention (PyPI `linformer`, fixture
// tests/fixtures/mixers/linformer/make.py) given its weights, for a full-length and a shorter
// sequence, headwise and with shared keys and values; with k = n and E = F = I it is exact softmax
// attention (a float64 loop); a longer sequence, bad options and unknown keys are refused by name;
// layerwise sharing asks for one model-level tensor.
#include <gtest/gtest.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/mix/linformer.h"
#include "lowrank/nn/classifier.h"
#include "lowrank/nn/model.h"
#include "tests/mix/mixer_test_util.h"
#include "tests/testing.h"

namespace lowrank::mix {
namespace {

using ::lowrank::testing::error_of;
using ::lowrank::testing::fixture;
using ::lowrank::testing::max_abs_diff;

// The fixture's `mode` weights under lowrank's names (layer 0's mixer); E = proj_kᵀ, F = proj_vᵀ.
std::map<std::string, at::Tensor> lucidrains_weights(const SafetensorsFile& f, const std::string& mode) {
  const std::string p = "model.layers.0.mixer";
  std::map<std::string, at::Tensor> w = {{p + ".q_proj.weight", f.load(mode + ".to_q")},
                                         {p + ".k_proj.weight", f.load(mode + ".to_k")},
                                         {p + ".v_proj.weight", f.load(mode + ".to_v")},
                                         {p + ".o_proj.weight", f.load(mode + ".to_out")},
                                         {p + ".proj_e", f.load(mode + ".proj_k").t()}};
  if (mode == "headwise") w[p + ".proj_f"] = f.load(mode + ".proj_v").t();
  return w;
}

TEST(LinformerTest, EqualsLucidrainsLinformerGivenItsWeights) {
  const auto f = SafetensorsFile::open(fixture("mixers/linformer/linformer.safetensors"));
  for (const std::string mode : {"headwise", "kv"}) {
    const nn::ModelConfig config =
        testing::mixer_config("linformer", 8, 2, {{"max_seq_len", 8}, {"k", 4}, {"sharing", mode}});
    const auto mixer = testing::build_mixer("linformer", config, lucidrains_weights(f, mode));
    EXPECT_FALSE(mixer->causal());
    for (const std::string len : {"8", "5"}) {
      const at::Tensor x = f.load("x" + len).to(at::kDouble);
      const at::Tensor y = mixer->forward(x, {});
      EXPECT_LE(max_abs_diff(y, f.load(mode + ".y" + len)), 1e-12) << mode << ", length " << len;
    }
  }
}

TEST(LinformerTest, KEqualsNWithIdentityProjectionsIsExactAttention) {
  const int64_t B = 2, T = 6, H = 8, heads = 2, D = 4;
  const nn::ModelConfig config = testing::mixer_config("linformer", H, heads, {{"max_seq_len", T}, {"k", T}});
  const at::Tensor eye = at::eye(T, at::kDouble);
  const auto mixer = testing::build_mixer(
      "linformer", config, {{"model.layers.0.mixer.proj_e", eye}, {"model.layers.0.mixer.proj_f", eye}});
  const auto slots = std::as_const(*mixer).slots();
  const at::Tensor wq = slots[0]->base().dense_weight(), wk = slots[1]->base().dense_weight();
  const at::Tensor wv = slots[2]->base().dense_weight(), wo = slots[3]->base().dense_weight();
  const at::Tensor x = at::randn({B, T, H}, at::kDouble);
  const at::Tensor y = mixer->forward(x, {});
  // Softmax attention, one row at a time.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i) {
      at::Tensor concat = at::zeros({heads * D}, at::kDouble);
      for (int64_t h = 0; h < heads; ++h) {
        const at::Tensor q = at::mv(wq, x[b][i]).narrow(0, h * D, D);
        std::vector<double> logits;
        double top = -INFINITY;
        for (int64_t j = 0; j < T; ++j) {
          const double s = at::dot(q, at::mv(wk, x[b][j]).narrow(0, h * D, D)).item<double>() / std::sqrt(D);
          logits.push_back(s);
          top = std::max(top, s);
        }
        double z = 0;
        for (double s : logits) z += std::exp(s - top);
        for (int64_t j = 0; j < T; ++j)
          concat.narrow(0, h * D, D)
              .add_(at::mv(wv, x[b][j]).narrow(0, h * D, D) * (std::exp(logits[j] - top) / z));
      }
      EXPECT_LE(max_abs_diff(y[b][i], at::mv(wo, concat)), 1e-12) << "row " << b << ", position " << i;
    }
}

TEST(LinformerTest, ALongerSequenceIsRefusedNamingBothLengths) {
  const nn::ModelConfig config = testing::mixer_config("linformer", 8, 2, {{"max_seq_len", 6}, {"k", 3}});
  const auto mixer = testing::build_mixer("linformer", config);
  const std::string m = error_of([&] { (void)mixer->forward(at::randn({1, 7, 8}, at::kDouble), {}); });
  EXPECT_NE(m.find("7 positions"), std::string::npos) << m;
  EXPECT_NE(m.find("max_seq_len = 6"), std::string::npos) << m;
}

TEST(LinformerTest, ACausalLanguageModelRefusesIt) {
  const nn::ModelConfig config = testing::mixer_config("linformer", 8, 2, {{"max_seq_len", 8}, {"k", 4}});
  const std::string m = error_of([&] { (void)nn::Model::random(config, 1); });
  EXPECT_NE(m.find("linformer is bidirectional; use it in a classification model"), std::string::npos) << m;
}

TEST(LinformerTest, BadOptionsAreRefusedByName) {
  auto error = [](const Json& options) {
    return error_of(
        [&] { (void)testing::build_mixer("linformer", testing::mixer_config("linformer", 8, 2, options)); });
  };
  EXPECT_NE(
      error({{"sharing", "rowwise"}}).find("sharing must be headwise, kv or layerwise, got \"rowwise\""),
      std::string::npos);
  EXPECT_NE(error({{"k", 0}}).find("k must be in [1, max_seq_len = 64], got 0"), std::string::npos);
  EXPECT_NE(error({{"max_seq_len", 8}, {"k", 9}}).find("k must be in [1, max_seq_len = 8], got 9"),
            std::string::npos);
  EXPECT_NE(error({{"max_seq_len", 0}}).find("max_seq_len must be >= 1, got 0"), std::string::npos);
  const std::string unknown = error({{"proj_len", 4}});
  EXPECT_NE(unknown.find("unknown option \"proj_len\""), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("known: max_seq_len, k, sharing"), std::string::npos) << unknown;
  EXPECT_NE(error({{"k", "four"}}).find("\"k\" has the wrong type"), std::string::npos);
}

TEST(LinformerTest, SharingDecidesTheTensorsAndTheirNames) {
  auto names = [](const std::string& sharing, int64_t layer) {
    const nn::ModelConfig config =
        testing::mixer_config("linformer", 8, 2, {{"max_seq_len", 8}, {"k", 4}, {"sharing", sharing}});
    std::vector<std::string> out;
    for (const auto& [n, t] : testing::build_mixer("linformer", config, {}, layer)->tensors()) {
      out.push_back(n);
      EXPECT_EQ(t.sizes(), (at::IntArrayRef{4, 8})) << n;
    }
    return out;
  };
  EXPECT_EQ(names("headwise", 1),
            (std::vector<std::string>{"model.layers.1.mixer.proj_e", "model.layers.1.mixer.proj_f"}));
  EXPECT_EQ(names("kv", 1), (std::vector<std::string>{"model.layers.1.mixer.proj_e"}));
  // Layerwise: one model-level name whatever the layer, and the same fresh value in every layer.
  EXPECT_EQ(names("layerwise", 0), (std::vector<std::string>{"model.linformer.proj_e"}));
  EXPECT_EQ(names("layerwise", 3), (std::vector<std::string>{"model.linformer.proj_e"}));
  const nn::ModelConfig config =
      testing::mixer_config("linformer", 8, 2, {{"max_seq_len", 8}, {"k", 4}, {"sharing", "layerwise"}});
  const at::Tensor e0 = testing::build_mixer("linformer", config, {}, 0, 1)->tensors()[0].second;
  const at::Tensor e3 = testing::build_mixer("linformer", config, {}, 3, 2)->tensors()[0].second;
  EXPECT_TRUE(e0.equal(e3));
  // U(-1/√k, 1/√k), as lucidrains' init_.
  EXPECT_LE(e0.abs().max().item<double>(), 0.5);
}

TEST(LinformerTest, GradientsReachEveryProjectionAndTensor) {
  const nn::ModelConfig config = testing::mixer_config("linformer", 8, 2, {{"max_seq_len", 8}, {"k", 4}});
  const auto mixer = testing::build_mixer("linformer", config);
  for (const auto& [n, t] : mixer->tensors()) t.requires_grad_(true);
  mixer->forward(at::randn({2, 5, 8}, at::kDouble), {}).pow(2).sum().backward();
  for (const auto& [n, t] : mixer->tensors()) {
    ASSERT_TRUE(t.grad().defined()) << n;
    // Only the first 5 columns of E and F are used by a length-5 input.
    EXPECT_GT(t.grad().narrow(1, 0, 5).abs().sum().item<double>(), 0.0) << n;
    EXPECT_EQ(t.grad().narrow(1, 5, 3).abs().sum().item<double>(), 0.0) << n;
  }
}

}  // namespace
}  // namespace lowrank::mix

namespace lowrank::mix {
namespace {

// Layerwise sharing in a model: both layers' E is one tensor (one storage, trained as one), listed
// once and saved once; a reloaded model shares it again.
TEST(LinformerTest, LayerwiseSharingIsOneTensorInAModel) {
  (void)registry();
  const Json c{{"architectures", {"LowrankMixerForSequenceClassification"}},
               {"model_type", "lowrank_mixer"},
               {"vocab_size", 16},
               {"hidden_size", 8},
               {"intermediate_size", 16},
               {"num_hidden_layers", 2},
               {"num_attention_heads", 2},
               {"num_key_value_heads", 2},
               {"max_position_embeddings", 8},
               {"num_labels", 2},
               {"layer_mixers", "linformer"},
               {"mixer_config", {{"linformer", {{"max_seq_len", 8}, {"k", 4}, {"sharing", "layerwise"}}}}}};
  const nn::ModelConfig config = nn::ModelConfig::from_json(c, "layerwise config");
  const nn::SequenceClassifier model = nn::SequenceClassifier::random(config, 3);
  auto shared = [](const nn::Model& trunk) {
    std::vector<at::Tensor> found;
    for (const auto& [name, t] : trunk.named_tensors())
      if (name == "model.linformer.proj_e") found.push_back(t);
    return found;
  };
  ASSERT_EQ(shared(model.trunk()).size(), 1u);
  // The two layers' mixers hold the same storage.
  auto layer_e = [](const nn::Model& trunk, int64_t layer) {
    for (const auto& [name, t] : trunk.mixer(layer).tensors())
      if (name == "model.linformer.proj_e") return t;
    return at::Tensor();
  };
  ASSERT_TRUE(layer_e(model.trunk(), 0).defined());
  EXPECT_TRUE(layer_e(model.trunk(), 0).is_same(layer_e(model.trunk(), 1)));
  ::lowrank::testing::TempDir tmp;
  model.save(tmp / "m");
  const SafetensorsFile file = SafetensorsFile::open(tmp / "m" / "model.safetensors");
  int64_t copies = 0;
  for (const TensorInfo& info : file.tensors()) copies += info.name == "model.linformer.proj_e";
  EXPECT_EQ(copies, 1);
  const nn::SequenceClassifier reloaded = nn::SequenceClassifier::load(tmp / "m");
  ASSERT_EQ(shared(reloaded.trunk()).size(), 1u);
  EXPECT_TRUE(shared(reloaded.trunk())[0].equal(shared(model.trunk())[0]));
  EXPECT_TRUE(layer_e(reloaded.trunk(), 0).is_same(layer_e(reloaded.trunk(), 1)));
}

}  // namespace
}  // namespace lowrank::mix
