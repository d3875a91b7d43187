// The Mamba mixer (mix/mamba.h) and MambaForCausalLM:
// - the mixer's forward against a float64 loop written here from the paper's block (in_proj, causal
//   depthwise conv, SiLU, x_proj, softplus(dt_proj), the recurrence, D, the SiLU(z) gate, out_proj);
// - its initialisation (A_log = log n, D = 1, Δ₀ = softplus(b_Δ) log-uniform in [Δ_min, Δ_max]),
//   the no-weight-decay groups, and option errors naming the key;
// - step() and prefill() from a state equal forward's rows; a padding row leaves the state as it was;
//   the raw float32 step equals forward and the ATen step;
// - transformers' MambaForCausalLM fixture (tests/fixtures/hf/mamba-tiny, make_fixtures.py): logits
//   (plain and left-padded) and greedy generate(); save() writes transformers' tensor names and
//   reloads to the same logits; a PEFT LoRA adapter made by peft loads and gives peft's logits, and
//   saves back under peft's names;
// - mambapy's logits on the same weights (parallel scan and step), a second implementation.
#include "lowrank/mix/mamba.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <set>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/nn/generate.h"
#include "lowrank/nn/model.h"
#include "tests/mix/mixer_test_util.h"
#include "tests/mix/ssm_testing.h"
#include "tests/testing.h"

namespace lowrank::mix {
namespace {

namespace fs = std::filesystem;
using testing::max_diff;

constexpr int64_t kHidden = 8, kN = 4, kK = 3, kInner = 16, kRank = 1;

nn::ModelConfig tiny_config() {
  return testing::mixer_config("mamba", kHidden, 2, Json{{"state_size", kN}, {"conv_kernel", kK}});
}

double softplus(double x) {
  return x > 20 ? x : std::log1p(std::exp(x));
}
double silu(double x) {
  return x / (1 + std::exp(-x));
}

// The block for one sequence x [T, hidden] from its weights, in float64 loops.
at::Tensor reference_block(const at::Tensor& x_in, const std::map<std::string, at::Tensor>& w) {
  const std::string p = "model.layers.0.mixer";
  auto get = [&](const std::string& n) { return w.at(p + "." + n).to(at::kDouble).contiguous(); };
  const at::Tensor W_in = get("in_proj.weight"), conv_w = get("conv1d.weight"), conv_b = get("conv1d.bias"),
                   W_x = get("x_proj.weight"), W_dt = get("dt_proj.weight"), b_dt = get("dt_proj.bias"),
                   A_log = get("A_log"), D = get("D"), W_out = get("out_proj.weight");
  const at::Tensor x = x_in.to(at::kDouble);
  const int64_t T = x.size(0);
  auto a = [](const at::Tensor& t) { return t.accessor<double, 2>(); };
  at::Tensor xz = at::zeros({T, 2 * kInner}, at::kDouble), xc = at::zeros({T, kInner}, at::kDouble);
  auto XZ = a(xz);
  auto X = x.accessor<double, 2>();
  auto Win = a(W_in);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < 2 * kInner; ++o)
      for (int64_t i = 0; i < kHidden; ++i) XZ[t][o] += Win[o][i] * X[t][i];
  auto XC = a(xc);
  auto CW = conv_w.accessor<double, 3>();
  auto CB = conv_b.accessor<double, 1>();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < kInner; ++d) {
      double s = CB[d];
      for (int64_t k = 0; k < kK; ++k) {
        const int64_t src = t - (kK - 1) + k;
        if (src >= 0) s += CW[d][0][k] * XZ[src][d];
      }
      XC[t][d] = silu(s);
    }
  auto Wx = a(W_x);
  auto Wdt = a(W_dt);
  auto Bdt = b_dt.accessor<double, 1>();
  auto Al = a(A_log);
  auto Dd = D.accessor<double, 1>();
  auto Wout = a(W_out);
  std::vector<double> h(kInner * kN, 0.0);
  at::Tensor out = at::zeros({T, kHidden}, at::kDouble);
  auto O = a(out);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> dbc(kRank + 2 * kN, 0.0);
    for (int64_t o = 0; o < kRank + 2 * kN; ++o)
      for (int64_t d = 0; d < kInner; ++d) dbc[o] += Wx[o][d] * XC[t][d];
    std::vector<double> y(kInner);
    for (int64_t d = 0; d < kInner; ++d) {
      double dt = Bdt[d];
      for (int64_t r = 0; r < kRank; ++r) dt += Wdt[d][r] * dbc[r];
      dt = softplus(dt);
      double acc = 0;
      for (int64_t n = 0; n < kN; ++n) {
        const double A = -std::exp(Al[d][n]);
        double& hn = h[d * kN + n];
        hn = std::exp(dt * A) * hn + dt * dbc[kRank + n] * XC[t][d];
        acc += dbc[kRank + kN + n] * hn;
      }
      y[d] = (acc + Dd[d] * XC[t][d]) * silu(XZ[t][kInner + d]);
    }
    for (int64_t o = 0; o < kHidden; ++o)
      for (int64_t d = 0; d < kInner; ++d) O[t][o] += Wout[o][d] * y[d];
  }
  return out;
}

std::map<std::string, at::Tensor> random_weights(uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  const std::string p = "model.layers.0.mixer.";
  auto r = [&](std::vector<int64_t> shape, double s) { return at::randn(shape, g, at::kDouble) * s; };
  return {{p + "in_proj.weight", r({2 * kInner, kHidden}, 0.4)},
          {p + "conv1d.weight", r({kInner, 1, kK}, 0.5)},
          {p + "conv1d.bias", r({kInner}, 0.1)},
          {p + "x_proj.weight", r({kRank + 2 * kN, kInner}, 0.3)},
          {p + "dt_proj.weight", r({kInner, kRank}, 0.5)},
          {p + "dt_proj.bias", r({kInner}, 0.5) - 2.0},
          {p + "A_log", r({kInner, kN}, 0.5)},
          {p + "D", r({kInner}, 1.0)},
          {p + "out_proj.weight", r({kHidden, kInner}, 0.3)}};
}

TEST(MambaTest, ForwardMatchesAFloat64LoopOfTheBlock) {
  const nn::ModelConfig config = tiny_config();
  const auto w = random_weights(1);
  const auto mixer = testing::build_mixer("mamba", config, w);
  EXPECT_TRUE(mixer->causal());
  const at::Tensor x = at::randn({2, 7, kHidden}, at::kDouble);
  const at::Tensor y = mixer->forward(x, {});
  for (int64_t b = 0; b < 2; ++b) EXPECT_LE(max_diff(y[b], reference_block(x[b], w)), 1e-12) << "row " << b;
  // Slots in order, as PEFT and the adapters name them.
  std::vector<std::string> names;
  for (const nn::LinearSlot* s : std::as_const(*mixer).slots()) names.push_back(s->name());
  EXPECT_EQ(names,
            (std::vector<std::string>{"model.layers.0.mixer.in_proj", "model.layers.0.mixer.x_proj",
                                      "model.layers.0.mixer.dt_proj", "model.layers.0.mixer.out_proj"}));
}

TEST(MambaTest, FreshInitialisationIsTheAuthors) {
  const nn::ModelConfig config = testing::mixer_config(
      "mamba", 32, 2, Json{{"state_size", 6}, {"time_step_min", 0.002}, {"time_step_max", 0.05}});
  const auto mixer = testing::build_mixer("mamba", config);
  const auto& m = dynamic_cast<const Mamba&>(*mixer);
  EXPECT_EQ(m.options().time_step_rank, 2);  // ⌈32 / 16⌉
  EXPECT_EQ(m.inner_size(), 64);
  std::map<std::string, at::Tensor> t;
  for (auto& [n, v] : mixer->tensors()) t[n] = v;
  const std::string p = "model.layers.0.mixer.";
  ASSERT_TRUE(t.contains(p + "A_log") && t.contains(p + "D") && t.contains(p + "conv1d.weight"));
  for (int64_t n = 0; n < 6; ++n)
    EXPECT_NEAR(t[p + "A_log"][5][n].item<double>(), std::log(double(n + 1)), 1e-6);
  EXPECT_EQ(t[p + "D"].min().item<double>(), 1.0);
  EXPECT_LE(t[p + "conv1d.weight"].abs().max().item<double>(), 0.5 + 1e-7);  // 1/√K, K = 4
  const nn::LinearSlot* dt_proj = std::as_const(*mixer).slots()[2];
  std::map<std::string, at::Tensor> dt;
  for (auto& [n, v] : dt_proj->base().tensors()) dt[n] = v;
  EXPECT_FALSE(dt.contains("bias"));  // the bias is the mixer's own tensor, added in float32
  const at::Tensor delta = at::softplus(t.at(p + "dt_proj.bias"));
  EXPECT_GE(delta.min().item<double>(), 0.002 * (1 - 1e-5));
  EXPECT_LE(delta.max().item<double>(), 0.05 * (1 + 1e-5));
  EXPECT_GT(delta.max().item<double>() / delta.min().item<double>(), 5.0);  // spread log-uniformly
  EXPECT_LE(dt.at("weight").abs().max().item<double>(), std::pow(2.0, -0.5) + 1e-7);
  const auto groups = mixer->param_groups();
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].tensor, p + "A_log");
  EXPECT_EQ(groups[0].weight_decay, 0.0);
  EXPECT_EQ(groups[1].tensor, p + "D");
}

TEST(MambaTest, BadOptionsAreRefusedNamingTheKey) {
  auto message = [](const Json& options) {
    try {
      (void)testing::build_mixer("mamba", testing::mixer_config("mamba", 8, 2, options));
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(Json{{"d_state", 4}}).find("unknown option \"d_state\""), std::string::npos);
  EXPECT_NE(message(Json{{"time_step_rank", "big"}}).find("time_step_rank"), std::string::npos);
  EXPECT_NE(message(Json{{"conv_kernel", 0}}).find("conv_kernel"), std::string::npos);
  EXPECT_NE(message(Json{{"time_step_init_scheme", "zeros"}}).find("time_step_init_scheme"),
            std::string::npos);
}

TEST(MambaTest, StepAndPrefillFromAStateEqualForward) {
  const nn::ModelConfig config = tiny_config();
  const auto mixer = testing::build_mixer("mamba", config, random_weights(2));
  const int64_t B = 2, T = 9;
  const at::Tensor x = at::randn({B, T, kHidden}, at::kDouble);
  const at::Tensor full = mixer->forward(x, {});
  // Prefill 4, then one at a time.
  const auto state = mixer->new_state(B);
  EXPECT_LE(max_diff(mixer->prefill(x.narrow(1, 0, 4), *state, {}), full.narrow(1, 0, 4)), 1e-12);
  for (int64_t t = 4; t < T; ++t)
    EXPECT_LE(max_diff(mixer->step(x.narrow(1, t, 1), *state, {}), full.narrow(1, t, 1)), 1e-12) << t;
  // One at a time, then a prefill of the rest from that state.
  const auto state2 = mixer->new_state(B);
  for (int64_t t = 0; t < 2; ++t) (void)mixer->step(x.narrow(1, t, 1), *state2, {});
  EXPECT_LE(max_diff(mixer->prefill(x.narrow(1, 2, T - 2), *state2, {}), full.narrow(1, 2, T - 2)), 1e-12);
  // A padding row keeps its state: row 1 sees a padding step in the middle and then continues
  // as if it had not happened.
  const auto state3 = mixer->new_state(B);
  (void)mixer->prefill(x.narrow(1, 0, 3), *state3, {});
  nn::MixerContext pad;
  pad.valid = at::tensor({1, 0}, at::kLong).to(at::kBool).view({B, 1});
  const at::Tensor junk = at::randn({B, 1, kHidden}, at::kDouble);
  const at::Tensor padded_out = mixer->step(junk, *state3, pad);
  EXPECT_TRUE(padded_out.isfinite().all().item<bool>());
  const at::Tensor next = mixer->step(x.narrow(1, 3, 1), *state3, {});
  EXPECT_LE(max_diff(next[1], full[1].narrow(0, 3, 1)), 1e-12);
}

// The raw decode step (one float32 sequence, no gradient: Mamba::raw_step) against the full
// forward's rows and against the ATen step (taken when gradients are recorded).
TEST(MambaTest, RawFloat32StepEqualsForwardAndTheAtenStep) {
  const nn::Model model = nn::Model::random(tiny_config(), 3, {at::kFloat});
  const auto& mixer = dynamic_cast<const Mamba&>(model.mixer(0));
  at::manual_seed(4);
  const at::Tensor x = at::randn({1, 12, kHidden});
  at::Tensor full;
  {
    at::NoGradGuard no_grad;
    full = mixer.forward(x, {});
  }
  const double scale = full.abs().max().item<double>();
  ASSERT_GT(scale, 0.0);
  const auto raw = mixer.new_state(1), aten = mixer.new_state(1);
  {
    at::NoGradGuard no_grad;
    (void)mixer.prefill(x.narrow(1, 0, 3), *raw, {});
  }
  (void)mixer.prefill(x.narrow(1, 0, 3), *aten, {});
  for (int64_t t = 3; t < 12; ++t) {
    at::Tensor fast;
    {
      at::NoGradGuard no_grad;
      fast = mixer.step(x.narrow(1, t, 1), *raw, {});
    }
    const at::Tensor slow = mixer.step(x.narrow(1, t, 1), *aten, {}).detach();
    EXPECT_LE(max_diff(fast, full.narrow(1, t, 1)), 1e-5 * scale) << t;
    EXPECT_LE(max_diff(fast, slow), 1e-5 * scale) << t;
  }
}

// ---- transformers' MambaForCausalLM ---------------------------------------------------------------

fs::path fixture_dir() {
  return lowrank::testing::fixture("hf/mamba-tiny");
}

SafetensorsFile expected() {
  return SafetensorsFile::open(fixture_dir() / "expected.safetensors");
}

// The tensor names of a safetensors file.
std::set<std::string> names_in(const fs::path& file) {
  std::set<std::string> out;
  const SafetensorsFile f = SafetensorsFile::open(file);
  for (const TensorInfo& t : f.tensors()) out.insert(t.name);
  return out;
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

TEST(MambaTest, TransformersMambaForCausalLMLogitsAndGreedyDecode) {
  (void)registry();
  const nn::Model model = nn::Model::load(fixture_dir() / "model");
  EXPECT_EQ(model.config().architecture, nn::Architecture::kMamba);
  EXPECT_TRUE(model.config().tie_word_embeddings);
  const SafetensorsFile e = expected();
  EXPECT_LE(max_diff(model.forward(e.load("input_ids")), e.load("logits")), 1e-4);
  nn::ForwardOptions padded;
  padded.attention_mask = e.load("padded_mask");
  const at::Tensor got = model.forward(e.load("padded_ids"), padded);
  const at::Tensor want = e.load("padded_logits");
  // Row 0 is unpadded; row 1's real positions (the padding's logits are not compared).
  EXPECT_LE(max_diff(got[0], want[0]), 1e-4);
  EXPECT_LE(max_diff(got[1].narrow(0, 3, 9), want[1].narrow(0, 3, 9)), 1e-4);

  const std::vector<int64_t> prompt = to_vector(e.load("greedy_prompt"));
  const std::vector<int64_t> want_tokens = to_vector(e.load("greedy_output"));
  nn::GenerateOptions o;
  o.max_new_tokens = static_cast<int64_t>(want_tokens.size() - prompt.size());
  const auto out = nn::generate(model, {prompt}, o);
  std::vector<int64_t> tokens = prompt;
  tokens.insert(tokens.end(), out[0].tokens.begin(), out[0].tokens.end());
  EXPECT_EQ(tokens, want_tokens);

  // Step decoding through the model's cache equals the full forward.
  const at::Tensor ids = e.load("input_ids");
  nn::KVCache cache = model.new_cache(2, 4);
  nn::ForwardOptions with_cache;
  with_cache.cache = &cache;
  std::vector<at::Tensor> steps = {model.forward(ids.narrow(1, 0, 5), with_cache)};
  for (int64_t t = 5; t < ids.size(1); ++t) steps.push_back(model.forward(ids.narrow(1, t, 1), with_cache));
  EXPECT_LE(max_diff(at::cat(steps, 1), e.load("logits")), 1e-4);
}

// A second, independent oracle: mambapy (make_mambapy_fixture.py) on the same weights, through
// its parallel scan (forward) and its recurrent step(). Ours: the chunked CPU scan (forward) and
// the model's cached step decoding.
TEST(MambaTest, MambapyParallelScanAndStepLogits) {
  (void)registry();
  const nn::Model model = nn::Model::load(fixture_dir() / "model");
  const SafetensorsFile e = SafetensorsFile::open(fixture_dir() / "expected_mambapy.safetensors");
  const at::Tensor ids = e.load("input_ids");
  EXPECT_LE(max_diff(model.forward(ids), e.load("logits")), 1e-4);
  nn::KVCache cache = model.new_cache(2, 1);
  nn::ForwardOptions with_cache;
  with_cache.cache = &cache;
  std::vector<at::Tensor> steps;
  for (int64_t t = 0; t < ids.size(1); ++t) steps.push_back(model.forward(ids.narrow(1, t, 1), with_cache));
  EXPECT_LE(max_diff(at::cat(steps, 1), e.load("step_logits")), 1e-4);
}

// LOWRANK_MAMBA_KEEP=DIR keeps what the next two tests write (DIR/saved, DIR/lora), for
// tests/fixtures/hf/mamba-tiny/check_transformers_loads.py to load in transformers and PEFT.
fs::path kept_or(const fs::path& tmp) {
  const char* keep = std::getenv("LOWRANK_MAMBA_KEEP");
  return keep && *keep ? fs::path(keep) : tmp;
}

TEST(MambaTest, SavesTransformersLayoutAndReloads) {
  (void)registry();
  const nn::Model model = nn::Model::load(fixture_dir() / "model");
  lowrank::testing::TempDir tmp_dir;
  const fs::path tmp = kept_or(tmp_dir.path());
  model.save(tmp / "saved");
  EXPECT_EQ(names_in(tmp / "saved" / "model.safetensors"),
            names_in(fixture_dir() / "model" / "model.safetensors"));
  const Json config = read_json_file(tmp / "saved" / "config.json");
  EXPECT_EQ(config.at("model_type"), "mamba");
  const nn::Model reloaded = nn::Model::load(tmp / "saved");
  const SafetensorsFile e = expected();
  EXPECT_LE(max_diff(reloaded.forward(e.load("input_ids")), e.load("logits")), 1e-4);
}

// mamba_ssm's Mamba keeps A_log and D in float32 whatever the model's dtype, and adds dt_proj's bias
// in float32: a bfloat16 model holds the file's (or the initial) float32 values of all three, bit for
// bit, while its projections are bfloat16.
TEST(MambaTest, HalfPrecisionModelKeepsALogDAndDtBiasInFloat32) {
  (void)registry();
  const fs::path dir = fixture_dir() / "model";
  const nn::Model f32 = nn::Model::load(dir);
  const nn::Model bf16 = nn::Model::load(dir, {at::kBFloat16});
  std::map<std::string, at::Tensor> want, got;
  for (auto& [n, v] : f32.named_tensors()) want[n] = v;
  for (auto& [n, v] : bf16.named_tensors()) got[n] = v;
  const SafetensorsFile file = SafetensorsFile::open(dir / "model.safetensors");
  int kept = 0;
  for (const auto& [name, t] : got) {
    const bool float32 = name.ends_with(".A_log") || name.ends_with(".D") || name.ends_with(".dt_proj.bias");
    EXPECT_EQ(t.scalar_type(), float32 ? at::kFloat : at::kBFloat16) << name;
    if (!float32) continue;
    ++kept;
    EXPECT_TRUE(at::equal(t, file.load(name, at::kFloat))) << name << " lost precision";
  }
  EXPECT_EQ(kept, 3 * f32.config().num_hidden_layers);
  // A fresh bfloat16 model: the float32 initial values (log n, 1, the inverse-softplus bias).
  const nn::Model r32 = nn::Model::random(f32.config(), 3),
                  r16 = nn::Model::random(f32.config(), 3, {at::kBFloat16});
  std::map<std::string, at::Tensor> fresh32;
  for (auto& [n, v] : r32.named_tensors()) fresh32[n] = v;
  for (auto& [name, t] : r16.named_tensors())
    if (name.ends_with(".A_log") || name.ends_with(".D") || name.ends_with(".dt_proj.bias"))
      EXPECT_TRUE(at::equal(t, fresh32.at(name))) << name;
  // The half model still runs, close to the float32 one.
  const at::Tensor ids = expected().load("input_ids");
  const at::Tensor a = f32.forward(ids), b = bf16.forward(ids).to(at::kFloat);
  EXPECT_LT((a - b).abs().max().item<double>(), 0.1 * a.abs().max().item<double>());
}

TEST(MambaTest, PeftLoraAdapterLoadsGivesPeftsLogitsAndSavesBack) {
  (void)registry();
  nn::Model model = nn::Model::load(fixture_dir() / "model");
  const adapt::AttachedAdapter adapter = adapt::load_adapter(model, fixture_dir() / "adapter-lora");
  EXPECT_EQ(adapter.layers.size(), 4u);  // in_proj and x_proj of 2 layers
  const SafetensorsFile e = expected();
  EXPECT_LE(max_diff(model.forward(e.load("input_ids")), e.load("lora_logits")), 1e-4);
  lowrank::testing::TempDir tmp_dir;
  const fs::path tmp = kept_or(tmp_dir.path());
  adapt::save_adapter(adapter, tmp / "lora");
  EXPECT_EQ(names_in(tmp / "lora" / "adapter_model.safetensors"),
            names_in(fixture_dir() / "adapter-lora" / "adapter_model.safetensors"));
}

TEST(MambaTest, ConfigKeysAreValidatedAsMambaConfig) {
  Json c = read_json_file(fixture_dir() / "model" / "config.json");
  (void)registry();
  const nn::ModelConfig ok = nn::ModelConfig::from_json(c, "mamba");
  EXPECT_EQ(ok.layer_mixers, (std::vector<std::string>{"mamba", "mamba"}));
  EXPECT_EQ(ok.mixer_config.at("mamba").at("state_size"), 8);
  EXPECT_EQ(ok.intermediate_size, 64);
  EXPECT_DOUBLE_EQ(ok.rms_norm_eps, 1e-5);
  auto fails = [&](const char* key, const Json& value, const char* needle) {
    Json bad = c;
    bad[key] = value;
    try {
      (void)nn::ModelConfig::from_json(bad, "mamba");
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find(needle), std::string::npos) << err.what();
      return;
    }
    ADD_FAILURE() << key << " = " << value.dump() << " was accepted";
  };
  fails("state_size", 0, "state_size");
  fails("time_step_rank", "half", "time_step_rank");
  fails("use_conv_bias", 1, "use_conv_bias");
  fails("hidden_act", "gelu", "hidden_act");
  fails("expand", 1.5, "expand");
}

}  // namespace
}  // namespace lowrank::mix
