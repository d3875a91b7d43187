// The token-mixer seam (nn/token_mixer.h): LowrankMixerForCausalLM with all-attention layers equals
// LlamaForCausalLM (and the independent float64 reference), saves and reloads with its config keys;
// bad `layer_mixers` are refused before any tensor is read; and a small test-only mixer
// (tests/nn/test_mixers.h: a causal mean of the past through one linear slot) runs in a hybrid
// [attention, mean] model: its forward against a float64 loop, its slot seen by LoRA and by per-row routing,
// its tensors saved and reloaded. Every registered causal mixer is checked for ∂y_i/∂x_j = 0 (j > i) by
// autograd, and every one with a decode state for step() = forward's rows.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <filesystem>
#include <set>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/mix/registry.h"
#include "lowrank/nn/attention.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/model.h"
#include "lowrank/nn/rope.h"
#include "lowrank/nn/token_mixer.h"
#include "tests/nn/reference.h"
#include "tests/nn/test_mixers.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

namespace fs = std::filesystem;

void register_test_mixer() {
  testing_mixers::register_test_mixers();
}

using testing_mixers::mixer_config;
using testing_mixers::tiny_spec;

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(TokenMixerTest, AllAttentionMixerModelEqualsLlamaSavesAndReloads) {
  const testing::TinySpec s = tiny_spec();
  const testing::Weights w = testing::random_weights(s, 5);
  testing::TempDir tmp;
  testing::write_checkpoint(tmp / "llama", testing::tiny_config(s), w);
  Json config = mixer_config(s, "attention");
  config["mixer_config"] = {{"attention", Json::object()}};
  config["a_key_lowrank_does_not_know"] = {1, 2};
  testing::write_checkpoint(tmp / "mixer", config, w);

  const Model llama = Model::load(tmp / "llama");
  const Model mixer = Model::load(tmp / "mixer");
  EXPECT_EQ(mixer.config().architecture, Architecture::kLowrankMixer);
  EXPECT_EQ(mixer.config().layer_mixers, (std::vector<std::string>{"attention", "attention"}));
  const std::vector<int64_t> ids = {3, 17, 0, 9, 22, 4, 11};
  const at::Tensor input = at::tensor(ids, at::kLong).view({1, -1});
  const at::Tensor mask = at::tensor({0, 0, 1, 1, 1, 1, 1}, at::kLong).view({1, -1});
  for (const at::Tensor& m : {at::Tensor(), mask}) {
    ForwardOptions o;
    o.attention_mask = m;
    EXPECT_LE(max_diff(mixer.forward(input, o), llama.forward(input, o)), 1e-6);
  }
  // Both against the independent float64 forward (reference.h), so a change to attention that
  // both architectures share is caught too.
  EXPECT_LE(max_diff(mixer.forward(input)[0], testing::reference_logits(s, w, ids)), 1e-4);

  // Slots keep their names: q, k, v, o under self_attn.
  std::vector<std::string> names;
  for (const LinearSlot* slot : mixer.slots()) names.push_back(slot->name());
  std::vector<std::string> llama_names;
  for (const LinearSlot* slot : llama.slots()) llama_names.push_back(slot->name());
  EXPECT_EQ(names, llama_names);

  mixer.save(tmp / "saved");
  const Json saved = read_json_file(tmp / "saved" / "config.json");
  EXPECT_EQ(saved.at("model_type"), "lowrank_mixer");
  EXPECT_EQ(saved.at("layer_mixers"), "attention");
  EXPECT_EQ(saved.at("a_key_lowrank_does_not_know"), Json({1, 2}));
  const Model reloaded = Model::load(tmp / "saved");
  EXPECT_TRUE(reloaded.forward(input).equal(mixer.forward(input)));
}

TEST(TokenMixerTest, UnknownMixerIsRefusedBeforeAnyWorkListingTheKnownOnes) {
  const testing::TinySpec s = tiny_spec();
  testing::TempDir tmp;
  fs::create_directories(tmp.path());
  // No weights at all: the config is refused first.
  write_json_file(tmp / "config.json", mixer_config(s, Json::array({"attention", "no_such_mixer"})));
  try {
    (void)Model::load(tmp.path());
    FAIL() << "an unknown mixer was accepted";
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("layer_mixers[1] is \"no_such_mixer\""), std::string::npos) << m;
    EXPECT_NE(m.find("known: "), std::string::npos) << m;
    EXPECT_NE(m.find("attention"), std::string::npos) << m;
  }
  EXPECT_THROW((void)ModelConfig::from_json(mixer_config(s, "no_such_mixer"), "t"), InvalidArgument);
  EXPECT_THROW((void)ModelConfig::from_json(mixer_config(s, 3), "t"), InvalidArgument);
}

TEST(TokenMixerTest, PerLayerListOfTheWrongLengthIsRefusedNamingTheField) {
  const testing::TinySpec s = tiny_spec();  // 2 layers
  try {
    (void)ModelConfig::from_json(mixer_config(s, Json::array({"attention", "attention", "attention"})),
                                 "cfg");
    FAIL() << "three mixers for two layers were accepted";
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("\"layer_mixers\""), std::string::npos) << m;
    EXPECT_NE(m.find("num_hidden_layers 2"), std::string::npos) << m;
  }
  Json bad_options = mixer_config(s, "attention");
  bad_options["mixer_config"] = {{"attention", 4}};
  EXPECT_THROW((void)ModelConfig::from_json(bad_options, "cfg"), InvalidArgument);
}

TEST(TokenMixerTest, MixerRegistryListsAttentionAndRefusesDuplicates) {
  std::set<std::string> names;
  for (const MethodInfo& m : mix::registry().list()) names.insert(m.name);
  EXPECT_TRUE(names.contains("attention"));
  EXPECT_THROW(mixer_registry().add({"attention", "", "", {}}, [](const MixerSpec&) { return nullptr; }),
               InvalidArgument);
  EXPECT_THROW((void)mixer_registry().factory("no_such_mixer"), NotFound);
}

// The hybrid [attention, test_mean] model, float64.
Model hybrid_model(uint64_t seed) {
  register_test_mixer();
  Json config = mixer_config(tiny_spec(), Json::array({"attention", "test_mean"}));
  config["mixer_config"] = {{"test_mean", {{"offset_init", 0.25}}}};
  return Model::random(ModelConfig::from_json(config, "hybrid"), seed, {at::kDouble, at::kCPU});
}

TEST(TokenMixerTest, HybridModelRunsSavesAndShowsTheMixersSlotsAndTensors) {
  Model model = hybrid_model(3);
  std::vector<std::string> names;
  for (const LinearSlot* slot : model.slots()) names.push_back(slot->name());
  const std::vector<std::string> expected = {
      "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj",
      "model.layers.0.self_attn.o_proj", "model.layers.0.mlp.gate_proj",    "model.layers.0.mlp.up_proj",
      "model.layers.0.mlp.down_proj",    "model.layers.1.mixer.proj",       "model.layers.1.mlp.gate_proj",
      "model.layers.1.mlp.up_proj",      "model.layers.1.mlp.down_proj",    "lm_head"};
  EXPECT_EQ(names, expected);

  // The offset is a model tensor, initialised from mixer_config (offset_init 0.25).
  at::Tensor offset;
  for (const auto& [name, t] : model.named_tensors())
    if (name == "model.layers.1.mixer.offset") offset = t;
  ASSERT_TRUE(offset.defined());
  EXPECT_DOUBLE_EQ(offset[-1].item<double>(), 0.25);

  const at::Tensor ids = at::tensor({1, 5, 7, 2, 9, 4, 6, 3}, at::kLong).view({2, 4});
  const at::Tensor logits = model.forward(ids);
  ASSERT_EQ(logits.sizes(), (at::IntArrayRef{2, 4, tiny_spec().vocab}));
  EXPECT_TRUE(logits.isfinite().all().item<bool>());
  // Causal end to end: changing the last token leaves the earlier positions' logits as they were.
  at::Tensor changed = ids.clone();
  changed.select(1, 3).fill_(0);
  EXPECT_TRUE(model.forward(changed).narrow(1, 0, 3).equal(logits.narrow(1, 0, 3)));

  testing::TempDir tmp;
  model.save(tmp.path());
  const auto file = SafetensorsFile::open(tmp / "model.safetensors");
  EXPECT_TRUE(file.contains("model.layers.1.mixer.offset"));
  EXPECT_TRUE(file.contains("model.layers.1.mixer.proj.weight"));
  EXPECT_FALSE(file.contains("model.layers.1.self_attn.q_proj.weight"));
  const Model reloaded = Model::load(tmp.path(), {at::kDouble, at::kCPU});
  EXPECT_TRUE(reloaded.forward(ids).equal(logits));

  // A cache must hold the mixer's decode state (Model::new_cache makes one that does; decoding is
  // tested in mixer_decode_test.cpp): one made for keys and values only is refused, naming the
  // layer and the mixer.
  KVCache cache(model.config(), 2, 8, at::TensorOptions().dtype(at::kDouble));
  ForwardOptions o;
  o.cache = &cache;
  try {
    (void)model.forward(ids, o);
    FAIL() << "a cache without the mixer's decode state was accepted";
  } catch (const Unsupported& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1's mixer \"test_mean\" keeps a decode state"),
              std::string::npos)
        << e.what();
  }
}

TEST(TokenMixerTest, LoraAttachesToTheMixersSlotAndRoutesPerRow) {
  Model model = hybrid_model(4);
  adapt::AdapterConfig c;
  c.r = 2;
  c.lora_alpha = 2;
  c.target_modules = {"proj"};
  adapt::AttachedAdapter a = adapt::create_adapter(model, "mix_lora", c, 9);
  ASSERT_EQ(a.layers.size(), 1u);
  EXPECT_EQ(a.layers[0].first, "model.layers.1.mixer.proj");

  const at::Tensor ids = at::tensor({1, 5, 7, 2, 9, 4, 6, 3}, at::kLong).view({2, 4});
  const at::Tensor base = model.forward(ids);
  EXPECT_TRUE(model.forward(ids).equal(base));  // B = 0 at initialisation
  for (const auto& [name, t] : a.parameters())
    if (name.find("lora_B") != std::string::npos) {
      at::NoGradGuard no_grad;
      t.copy_(at::randn_like(t));
    }
  const at::Tensor adapted = model.forward(ids);
  EXPECT_GT(max_diff(adapted, base), 1e-3);

  // Routing reaches the mixer's slot: row 0 without the adapter, row 1 with it.
  AdapterRouting routing{{"mix_lora"}, {-1, 0}};
  ForwardOptions o;
  o.routing = &routing;
  const at::Tensor routed = model.forward(ids, o);
  EXPECT_LE(max_diff(routed[0], base[0]), 1e-12);
  EXPECT_LE(max_diff(routed[1], adapted[1]), 1e-12);

  // Gradients flow through the mixer into the adapter.
  for (const auto& [name, t] : a.parameters()) t.requires_grad_(true);
  model.forward(ids).sum().backward();
  for (const auto& [name, t] : a.parameters()) {
    ASSERT_TRUE(t.grad().defined()) << name;
    EXPECT_GT(t.grad().abs().sum().item<double>(), 0.0) << name;
  }
}

// A mixer of registry entry `name` for the hybrid config's layer 1, with random float64 tensors.
std::unique_ptr<TokenMixer> build_mixer(const std::string& name, const ModelConfig& config) {
  at::manual_seed(21);
  MixerSpec spec{config, 1, mixer_prefix(name, 1), config.mixer_options(name), nullptr, nullptr};
  spec.projection = [](const std::string&, int64_t out, int64_t in, bool bias) {
    return std::make_shared<const DenseOperator>(at::randn({out, in}, at::kDouble).mul(0.5),
                                                 bias ? at::randn({out}, at::kDouble) : at::Tensor());
  };
  spec.tensor = [](const std::string&, std::vector<int64_t> shape, ParamInit init, const at::Tensor& value) {
    if (init == ParamInit::kValue) return value.to(at::kDouble).clone();
    return at::randn(shape, at::kDouble);
  };
  return mixer_registry().factory(name)(spec);
}

// The context of positions [first, first + T) of B unpadded rows, without a cache.
struct Context {
  AttentionMask mask;
  MixerContext context;
  Context(const Context&) = delete;  // `context` points at `mask`
  Context(const ModelConfig& config, int64_t B, int64_t first, int64_t T) {
    mask = make_attention_mask({}, false, 0, T, 0, at::kCPU);
    context.mask = &mask;
    context.positions = at::arange(first, first + T, at::kLong).unsqueeze(0).expand({B, T});
    std::tie(context.cos, context.sin) =
        RotaryEmbedding(config, at::kCPU, at::kDouble).cos_sin(context.positions, at::kDouble);
  }
};

TEST(TokenMixerTest, MeanMixerForwardMatchesAFloat64Loop) {
  register_test_mixer();
  const ModelConfig config =
      ModelConfig::from_json(mixer_config(tiny_spec(), Json::array({"attention", "test_mean"})), "hybrid");
  const std::unique_ptr<TokenMixer> mixer = build_mixer("test_mean", config);
  const at::Tensor W = std::as_const(*mixer).slots().front()->base().dense_weight();
  const at::Tensor b = mixer->tensors().front().second;
  const int64_t B = 2, T = 5, H = config.hidden_size;
  const at::Tensor x = at::randn({B, T, H}, at::kDouble);
  const Context ctx(config, B, 0, T);
  const at::Tensor y = mixer->forward(x, ctx.context);
  for (int64_t r = 0; r < B; ++r)
    for (int64_t t = 0; t < T; ++t) {
      at::Tensor sum = at::zeros({H}, at::kDouble);
      for (int64_t j = 0; j <= t; ++j) sum = sum + x[r][j];
      const at::Tensor want = at::mv(W, sum / static_cast<double>(t + 1)) + b;
      EXPECT_LE(max_diff(y[r][t], want), 1e-12) << "row " << r << ", position " << t;
    }
}

TEST(TokenMixerTest, EveryCausalMixerHasNoGradientFromTheFuture) {
  register_test_mixer();
  const ModelConfig config =
      ModelConfig::from_json(mixer_config(tiny_spec(), Json::array({"attention", "test_mean"})), "hybrid");
  for (const MethodInfo& info : mix::registry().list()) {
    const std::unique_ptr<TokenMixer> mixer = build_mixer(info.name, config);
    if (!mixer->causal()) continue;
    const int64_t T = 5;
    const at::Tensor x = at::randn({1, T, config.hidden_size}, at::kDouble).requires_grad_(true);
    const Context ctx(config, 1, 0, T);
    const at::Tensor y = mixer->forward(x, ctx.context);
    for (int64_t i = 0; i < T; ++i) {
      const at::Tensor g = torch::autograd::grad({y[0][i].sum()}, {x}, {}, /*retain_graph=*/true)[0][0];
      for (int64_t j = 0; j < T; ++j) {
        const double norm = g[j].abs().sum().item<double>();
        // Zero up to float64 rounding: an FFT convolution (long_conv, sgconv) carries ~1e-17 of
        // every input into every output; a real leak is of the order of the other entries.
        if (j > i)
          EXPECT_LE(norm, 1e-12) << info.name << ": y_" << i << " depends on x_" << j;
        else
          EXPECT_GT(norm, 0.0) << info.name << ": y_" << i << " ignores x_" << j;
      }
    }
  }
}

TEST(TokenMixerTest, EveryDecodeStateStepEqualsForwardsRows) {
  register_test_mixer();
  const ModelConfig config =
      ModelConfig::from_json(mixer_config(tiny_spec(), Json::array({"attention", "test_mean"})), "hybrid");
  int64_t checked = 0;
  for (const MethodInfo& info : mix::registry().list()) {
    const std::unique_ptr<TokenMixer> mixer = build_mixer(info.name, config);
    if (!mixer->has_decode_state()) {
      EXPECT_THROW((void)mixer->new_state(1), Unsupported) << info.name;
      continue;
    }
    const int64_t B = 2, T = 6;
    const at::Tensor x = at::randn({B, T, config.hidden_size}, at::kDouble);
    const at::Tensor full = mixer->forward(x, Context(config, B, 0, T).context);
    const std::unique_ptr<MixerState> state = mixer->new_state(B);
    for (int64_t t = 0; t < T; ++t) {
      const Context ctx(config, B, t, 1);
      const at::Tensor y = mixer->step(x.narrow(1, t, 1), *state, ctx.context);
      EXPECT_LE(max_diff(y, full.narrow(1, t, 1)), 1e-12) << info.name << ", position " << t;
    }
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

}  // namespace
}  // namespace lowrank::nn
