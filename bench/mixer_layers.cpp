// Whole layers, not mixers alone: a one-layer trunk of the model (token embedding, pre-norm
// mixer + residual, pre-norm SwiGLU MLP of 4·hidden + residual, final norm; nn::Model::random of a
// LowrankMixerForSequenceClassification config, so bidirectional options are legal) per mixer,
// timed as Model::hidden_states over --lengths tokens. The papers that compare speeds of whole
// models (PoNet against FNet: "slightly slower than FNet", Tan et al. 2022, §4) time this, where the
// MLP and the norms are shared cost; bench_mixers times the mixer alone.
//
// Every model of one length is timed interleaved (bench::interleaved_median_seconds: m0, m1, ...,
// m0, m1, ...), so a drift of the machine affects them alike; each row reports its time and its
// ratio to the attention layer's (exact attention, at::scaled_dot_product_attention) and to the
// FNet layer's. Inference mode, float32, batch --batch. A mixer that cannot build or run a row is
// reported as skipped with its error.
//
//   build/bin/bench_mixer_layers [--lengths 4096,16384] [--heads 4] [--head-dim 64] [--batch 1]
//       [--mixers a,b] [--options NAME=JSON]... [--repeats 3] [--threads N] [--json]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include "lowrank/core/json.h"
#include "lowrank/core/threads.h"
#include "lowrank/mix/registry.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/model.h"
#include "mixer_bench_args.h"
#include "timing.h"

using namespace lowrank;

namespace {

struct Settings : bench::MixerBenchArgs {
  Settings() { lengths = {4096, 16384}; }  // mixers: empty = every registered mixer (attention first)
};

// The one-layer trunk of `mixer` at length n (the same shapes as bench_mixers' workloads).
nn::ModelConfig layer_config(const Settings& s, const std::string& mixer, int64_t n) {
  nn::ModelConfig c;
  c.architecture = nn::Architecture::kLowrankMixerSequenceClassification;
  c.vocab_size = 16;
  c.hidden_size = s.hidden();
  c.intermediate_size = 4 * s.hidden();
  c.num_hidden_layers = 1;
  c.num_attention_heads = s.heads;
  c.num_key_value_heads = s.heads;
  c.head_dim = s.head_dim;
  c.max_position_embeddings = n;
  c.sliding_window = {0};
  c.layer_mixers = {mixer};
  c.mixer_config = Json::object();
  for (const auto& [name, o] : s.options) c.mixer_config[name] = o;
  // A mixer with a fixed maximum length (Linformer) gets the row's.
  for (const MethodInfo& info : mix::registry().list())
    if (info.name == mixer)
      for (const auto& [key, help] : info.options)
        if (key == "max_seq_len" && !c.mixer_config.value(mixer, Json::object()).contains("max_seq_len"))
          c.mixer_config[mixer]["max_seq_len"] = n;
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    try {
      if (bench::parse_mixer_bench_flag(argc, argv, i, s)) continue;
    } catch (const std::invalid_argument& e) {
      std::fprintf(stderr, "bench_mixer_layers: %s\n", e.what());
      return 1;
    }
    std::fprintf(stderr, "bench_mixer_layers: unknown argument %s\n", argv[i]);
    return 1;
  }
  if (const std::string wrong = bench::check_mixer_bench_args(s); !wrong.empty()) {
    std::fprintf(stderr, "bench_mixer_layers: %s\n", wrong.c_str());
    return 1;
  }
  configure_threads(s.threads);
  if (s.mixers.empty()) {
    s.mixers.push_back("attention");
    for (const MethodInfo& info : mix::registry().list())
      if (info.name != "attention") s.mixers.push_back(info.name);
  }
  c10::InferenceMode inference;

  OrderedJson rows = OrderedJson::array();
  if (!s.json)
    std::printf(
        "one-layer trunks (mixer + SwiGLU MLP 4·hidden): batch %lld, %lld heads × %lld, float32, %d "
        "threads\n",
        static_cast<long long>(s.batch), static_cast<long long>(s.heads), static_cast<long long>(s.head_dim),
        at::get_num_threads());
  for (const int64_t n : s.lengths) {
    at::Generator gen = at::detail::createCPUGenerator(5);
    const at::Tensor ids = at::randint(16, {s.batch, n}, gen, at::kLong);
    std::vector<std::string> names;
    std::vector<nn::Model> models;
    std::vector<std::function<void()>> calls;
    for (const std::string& name : s.mixers) {
      OrderedJson skipped;
      try {
        nn::Model model = nn::Model::random(layer_config(s, name, n), 7);
        (void)model.hidden_states(ids);  // refuses here what it cannot run
        names.push_back(name);
        models.push_back(std::move(model));
      } catch (const std::exception& e) {
        skipped["mixer"] = name;
        skipped["n"] = n;
        skipped["skipped"] = e.what();
        rows.push_back(skipped);
        if (!s.json) std::printf("  %-18s skipped: %s\n", name.c_str(), e.what());
      }
    }
    for (const nn::Model& model : models) calls.push_back([&model, &ids] { (void)model.hidden_states(ids); });
    const std::vector<double> seconds = bench::interleaved_median_seconds(calls, s.repeats);
    std::map<std::string, double> by_name;
    for (size_t k = 0; k < names.size(); ++k) by_name[names[k]] = seconds[k];
    if (!s.json) std::printf("\nn = %lld\n", static_cast<long long>(n));
    for (size_t k = 0; k < names.size(); ++k) {
      OrderedJson row;
      row["mixer"] = names[k];
      row["n"] = n;
      row["ms"] = seconds[k] * 1e3;
      if (by_name.contains("attention")) row["attention_over_this"] = by_name["attention"] / seconds[k];
      if (by_name.contains("fnet")) row["this_over_fnet"] = seconds[k] / by_name["fnet"];
      if (!s.json)
        std::printf("  %-18s %10.2f ms  attention/this %6.2fx  this/fnet %6.2fx\n", names[k].c_str(),
                    seconds[k] * 1e3, row.value("attention_over_this", NAN),
                    row.value("this_over_fnet", NAN));
      rows.push_back(row);
    }
  }
  if (s.json) {
    OrderedJson out;
    out["batch"] = s.batch;
    out["heads"] = s.heads;
    out["head_dim"] = s.head_dim;
    out["intermediate_size"] = 4 * s.hidden();
    out["threads"] = at::get_num_threads();
    out["repeats"] = s.repeats;
    OrderedJson options = OrderedJson::object();
    for (const auto& [name, o] : s.options) options[name] = OrderedJson::parse(o.dump());
    out["options"] = options;
    out["rows"] = rows;
    std::printf("%s\n", out.dump(2).c_str());
  }
  return 0;
}
