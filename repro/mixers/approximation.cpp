// Scatterbrain's approximation-error claim (Chen et al., 2021, §5.1 and Fig. 4): at equal memory, the
// sparse + low-rank estimate of attention has a lower error than its sparse half (a local window)
// and its low-rank half (Performer) alone, at every softmax temperature — the window wins when
// attention is peaked (low temperature), the feature map when it is flat, and Scatterbrain is at
// least as good as the better of the two throughout.
//
// The error of a mixer is ‖y − y*‖_F / ‖y*‖_F over the mixer's output, where y* is exact softmax
// attention (nn's "attention" mixer) with the same q, k, v, o projections; causal throughout (the
// models here are language models), RoPE applied by every mixer as by the reference. Memory per query is the
// window w plus the m random features; every mixer gets the same budget: local w = budget,
// performer m = budget, scatterbrain w = m = budget / 2 (a fixed even split, not tuned per row).
// Each (row, mixer) is averaged over --seeds feature draws (the mixers' `feature_seed`).
//
// Two sources of q, k, v:
//   --model DIR --data DIR   a pretrained model's own attention inputs: layer L's normalised input
//                            x_L for --windows validation windows of --seq-len tokens, every layer,
//                            the projections of that layer. x_L is read off a copy of the model cut
//                            to L layers: its final-norm output is w_final ⊙ h_L / rms(h_L), and
//                            layer L's input norm is w_in ⊙ h_L / rms(h_L) with the same rms, so
//                            x_L = hidden ⊙ w_in / w_final (layer 0: the embeddings, normalised).
//   --synthetic              x an AR(1) process over positions (ρ = 0.9, unit variance: nearby
//                            tokens alike, as attention inputs are), projections N(0, 1/h) with k_proj =
//                            q_proj (so a token scores its neighbours highest); q and
//                            k scaled by t^{-1/2} for each softmax temperature t of
//                            --temperatures (scores ∝ 1/t).
//
//   repro_mixers_approximation (--model DIR --data DIR | --synthetic) [--budgets 32,64]
//       [--seq-len 256] [--windows 4] [--temperatures 0.125,0.25,0.5,1,2,4,8] [--seeds 0,1,2]
//       [--hidden 256 --heads 4] (synthetic) --out FILE.json
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/core/threads.h"
#include "lowrank/data/token_dataset.h"
#include "lowrank/mix/registry.h"
#include "lowrank/nn/attention.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/model.h"
#include "lowrank/nn/rope.h"
#include "lowrank/nn/token_mixer.h"
#include "repro/mixers/common.h"

using namespace lowrank;
namespace fs = std::filesystem;

namespace {

// The options of each approximating mixer at a memory budget (see the file comment).
Json options_for(const std::string& mixer, int64_t budget, int64_t seed) {
  // RoPE on: the exact reference is the model's own attention, which rotates q and k.
  if (mixer == "local") return Json{{"window", budget}, {"rope", true}};
  if (mixer == "performer") return Json{{"n_features", budget}, {"feature_seed", seed}, {"rope", true}};
  if (mixer == "scatterbrain")
    return Json{{"window", budget / 2}, {"n_features", budget / 2}, {"feature_seed", seed}, {"rope", true}};
  throw InvalidArgument("repro_mixers_approximation: no budget rule for mixer \"" + mixer + "\"");
}

// The q, k, v, o weights of one attention layer, by projection name.
using Projections = std::map<std::string, at::Tensor>;

// A mixer `name` for layer `layer` of `config` whose projection "<prefix>.<p>" is projections[p].
std::unique_ptr<nn::TokenMixer> build(const nn::ModelConfig& config, int64_t layer, const std::string& name,
                                      const Json& options, const Projections& projections) {
  nn::MixerSpec spec{config, layer, nn::mixer_prefix(name, layer), options, nullptr, nullptr};
  spec.projection = [&projections, name](const std::string& slot, int64_t out, int64_t in, bool bias) {
    const std::string p = slot.substr(slot.rfind('.') + 1);
    const auto it = projections.find(p);
    LR_CHECK(it != projections.end(), NotFound, "repro_mixers_approximation: mixer ", name,
             " asks for projection ", slot, ", which attention does not have");
    LR_CHECK(it->second.size(0) == out && it->second.size(1) == in, InvalidArgument,
             "repro_mixers_approximation: ", slot, " wants [", out, ", ", in, "]");
    LR_CHECK(!bias, Unsupported, "repro_mixers_approximation: biased projections");
    return std::make_shared<const nn::DenseOperator>(it->second, at::Tensor());
  };
  spec.tensor = [](const std::string& tensor, std::vector<int64_t> shape, nn::ParamInit init,
                   const at::Tensor& value) {
    return nn::initial_tensor(init, shape, value, at::kFloat, [&tensor](at::IntArrayRef) -> at::Tensor {
      throw InvalidArgument("repro_mixers_approximation: tensor " + tensor +
                            " would be random; this comparison needs mixers without learned extras");
    });
  };
  return mix::registry().factory(name)(spec);
}

struct CausalContext {
  nn::AttentionMask mask;
  nn::MixerContext context;
  CausalContext(const CausalContext&) = delete;  // `context` points at `mask`
  CausalContext(const nn::ModelConfig& config, int64_t B, int64_t T) {
    mask = nn::make_attention_mask({}, false, 0, T, 0, at::kCPU);
    context.mask = &mask;
    context.positions = at::arange(T, at::kLong).unsqueeze(0).expand({B, T});
    std::tie(context.cos, context.sin) =
        nn::RotaryEmbedding(config, at::kCPU, at::kFloat).cos_sin(context.positions, at::kFloat);
  }
};

double relative_error(const at::Tensor& y, const at::Tensor& exact) {
  return (y - exact).norm().item<double>() / exact.norm().item<double>();
}

struct Settings {
  std::vector<int64_t> budgets = {32, 64};
  std::vector<std::string> mixers = {"local", "performer", "scatterbrain"};
  std::vector<int64_t> seeds = {0, 1, 2};
  int64_t seq_len = 256, windows = 4, hidden = 256, heads = 4;
  std::vector<double> temperatures = {0.125, 0.25, 0.5, 1, 2, 4, 8};
};

// Errors of every mixer and budget on inputs x [B, T, h] against exact attention, appended to rows
// with the row's own keys (`where`).
void compare(const nn::ModelConfig& config, int64_t layer, const Projections& projections,
             const at::Tensor& x, const Settings& s, const OrderedJson& where, OrderedJson& rows) {
  const CausalContext ctx(config, x.size(0), x.size(1));
  const at::Tensor exact =
      build(config, layer, "attention", Json::object(), projections)->forward(x, ctx.context);
  for (int64_t budget : s.budgets)
    for (const std::string& mixer : s.mixers) {
      std::vector<double> errors;
      for (int64_t seed : s.seeds) {
        const at::Tensor y = build(config, layer, mixer, options_for(mixer, budget, seed), projections)
                                 ->forward(x, ctx.context);
        errors.push_back(relative_error(y, exact));
        if (mixer == "local") break;  // deterministic: one draw is all draws
      }
      double mean = 0, var = 0;
      for (double e : errors) mean += e / static_cast<double>(errors.size());
      for (double e : errors) var += (e - mean) * (e - mean) / std::max<double>(1.0, errors.size() - 1.0);
      OrderedJson row = where;
      row["budget"] = budget;
      row["mixer"] = mixer;
      row["error"] = mean;
      row["error_std"] = std::sqrt(var);
      row["draws"] = errors.size();
      std::printf("  %-40s budget %4lld  %-13s %.4f ± %.4f\n", where.dump().c_str(),
                  static_cast<long long>(budget), mixer.c_str(), mean, std::sqrt(var));
      std::fflush(stdout);
      rows.push_back(row);
    }
}

void pretrained(const fs::path& model_dir, const fs::path& data_dir, const fs::path& scratch,
                const Settings& s, OrderedJson& rows) {
  const nn::ModelConfig config = nn::ModelConfig::load(model_dir);
  const nn::Model full = nn::Model::load(model_dir);
  const nn::NamedTensors tensors = full.named_tensors();
  auto tensor = [&](const std::string& name) {
    for (const auto& [n, t] : tensors)
      if (n == name) return t.to(at::kFloat);
    throw NotFound("repro_mixers_approximation: " + model_dir.string() + " has no tensor " + name);
  };
  const data::TokenDataset data = data::TokenDataset::open(data_dir);
  const int64_t available = data.size("validation");
  LR_CHECK(available >= s.windows * s.seq_len, InvalidArgument,
           "repro_mixers_approximation: ", data_dir.string(), " holds ", available,
           " validation tokens, fewer than --windows × --seq-len");
  std::vector<at::Tensor> windows;
  for (int64_t w = 0; w < s.windows; ++w)
    windows.push_back(data.slice("validation", w * (available / s.windows), s.seq_len));
  const at::Tensor ids = at::stack(windows);
  const at::Tensor embed = tensor("model.embed_tokens.weight");
  const at::Tensor final_norm = tensor("model.norm.weight");
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    const at::Tensor in_norm = tensor(p + "input_layernorm.weight");
    at::Tensor x;
    if (layer == 0) {
      x = nn::rms_norm(at::embedding(embed, ids), in_norm, config.rms_norm_eps);
    } else {
      // The model cut to `layer` layers (its unused tensors ignored): hidden = w_final ⊙ h / rms(h).
      Json c = read_json_file(model_dir / "config.json");
      c["num_hidden_layers"] = layer;
      if (c.contains("layer_types")) c.erase("layer_types");
      if (c.contains("layer_mixers") && c["layer_mixers"].is_array()) c.erase("layer_mixers");
      const fs::path dir = scratch / std::to_string(layer);
      fs::create_directories(dir);
      write_json_file(dir / "config.json", c);
      for (const auto& entry : fs::directory_iterator(model_dir))
        if (entry.path().extension() == ".safetensors" ||
            entry.path().filename() == "model.safetensors.index.json")
          fs::create_symlink(fs::absolute(entry.path()), dir / entry.path().filename());
      const nn::Model head = nn::Model::load(dir);
      x = head.hidden_states(ids).to(at::kFloat) * (in_norm / final_norm);
    }
    Projections projections;
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"})
      projections[proj] = tensor(p + "self_attn." + proj + ".weight");
    compare(config, layer, projections, x, s, OrderedJson{{"source", "pretrained"}, {"layer", layer}}, rows);
  }
}

void synthetic(const Settings& s, OrderedJson& rows) {
  nn::ModelConfig config;
  config.vocab_size = 16;
  config.hidden_size = s.hidden;
  config.intermediate_size = 4 * s.hidden;
  config.num_hidden_layers = 1;
  config.num_attention_heads = s.heads;
  config.num_key_value_heads = s.heads;
  config.head_dim = s.hidden / s.heads;
  config.max_position_embeddings = s.seq_len;
  config.sliding_window = {0};
  config.layer_mixers = {"attention"};
  at::Generator gen = at::detail::createCPUGenerator(5);
  // x_t = ρ x_{t−1} + √(1 − ρ²) ε_t: nearby positions are alike, so their scores are large, as in
  // real attention maps (i.i.d. positions would have no locality for a window to find).
  const double rho = 0.9;
  const at::Tensor noise = at::randn({s.windows, s.seq_len, s.hidden}, gen, at::kFloat);
  at::Tensor x = at::empty_like(noise);
  x.select(1, 0).copy_(noise.select(1, 0));
  for (int64_t t = 1; t < s.seq_len; ++t)
    x.select(1, t).copy_(x.select(1, t - 1) * rho + noise.select(1, t) * std::sqrt(1 - rho * rho));
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.hidden));
  Projections base;
  for (const char* proj : {"q_proj", "v_proj", "o_proj"})
    base[proj] = at::randn({s.hidden, s.hidden}, gen, at::kFloat).mul_(scale);
  // Keys as queries (a tied projection): q_i·k_j is then largest for x_j close to x_i.
  base["k_proj"] = base["q_proj"];
  for (double t : s.temperatures) {
    Projections projections = base;
    projections["q_proj"] = base["q_proj"] / std::sqrt(t);
    projections["k_proj"] = base["k_proj"] / std::sqrt(t);
    compare(config, 0, projections, x, s, OrderedJson{{"source", "synthetic"}, {"temperature", t}}, rows);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  std::string model, data, out;
  bool synthetic_mode = false;
  try {
    for (int i = 1; i < argc; ++i) {
      const bool has_value = i + 1 < argc;
      auto is = [&](const char* flag) { return !std::strcmp(argv[i], flag) && has_value; };
      if (is("--model"))
        model = argv[++i];
      else if (is("--data"))
        data = argv[++i];
      else if (is("--out"))
        out = argv[++i];
      else if (is("--budgets")) {
        s.budgets.clear();
        for (double b : repro::numbers(argv[++i])) s.budgets.push_back(static_cast<int64_t>(b));
      } else if (is("--mixers"))
        s.mixers = repro::split(argv[++i]);
      else if (is("--seeds")) {
        s.seeds.clear();
        for (double b : repro::numbers(argv[++i])) s.seeds.push_back(static_cast<int64_t>(b));
      } else if (is("--seq-len"))
        s.seq_len = std::atoll(argv[++i]);
      else if (is("--windows"))
        s.windows = std::atoll(argv[++i]);
      else if (is("--hidden"))
        s.hidden = std::atoll(argv[++i]);
      else if (is("--heads"))
        s.heads = std::atoll(argv[++i]);
      else if (is("--temperatures"))
        s.temperatures = repro::numbers(argv[++i]);
      else if (!std::strcmp(argv[i], "--synthetic"))
        synthetic_mode = true;
      else
        throw InvalidArgument(std::string("unknown argument ") + argv[i]);
    }
    LR_CHECK(!out.empty() && (synthetic_mode || (!model.empty() && !data.empty())), InvalidArgument,
             "need --out FILE and either --synthetic or --model DIR --data DIR");
    LR_CHECK(s.seq_len > 0 && s.windows > 0 && s.heads > 0 && s.hidden % s.heads == 0 && !s.seeds.empty(),
             InvalidArgument, "need --seq-len, --windows > 0, --hidden a multiple of --heads, some --seeds");
    for (int64_t b : s.budgets)
      LR_CHECK(b >= 2 && b % 2 == 0, InvalidArgument, "budgets must be even, got ", b);
    configure_threads(0);
    log::set_level(log::Level::kError);
    mix::registry();
    c10::InferenceMode inference;
    OrderedJson rows = OrderedJson::array();
    if (synthetic_mode)
      synthetic(s, rows);
    else {
      // The cut copies of the model (config.json + links to its weights), removed afterwards.
      const fs::path scratch = fs::path(out).concat(".layers");
      fs::remove_all(scratch);
      pretrained(model, data, scratch, s, rows);
      fs::remove_all(scratch);
    }
    OrderedJson result;
    result["claim"] = "scatterbrain's error <= min(local, performer) at equal memory (w + m)";
    result["source"] = synthetic_mode ? "synthetic" : model;
    result["seq_len"] = s.seq_len;
    result["windows"] = s.windows;
    result["seeds"] = s.seeds;
    result["rows"] = rows;
    write_json_file(out, result);
    std::printf("wrote %s\n", out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "repro_mixers_approximation: %s\n", e.what());
    return 1;
  }
  return 0;
}
