// Attention replacements against exact attention, in one run: every token mixer of mix::registry()
// (or those named by --mixers) over sequences of --lengths tokens, beside two exact baselines that
// share the mixers' projections (q, k, v, o of [hidden, hidden]):
//   sdpa          at::scaled_dot_product_attention (libtorch's CPU flash path: never builds n×n)
//   materialised  softmax(Q Kᵀ/√d) V with the n×n scores built (what the papers call "standard")
// Each row: the median forward time over --repeats calls (inference mode, batch --batch, --heads
// heads of --head-dim, float32), its ratio to both baselines, and the peak memory of one forward
// measured in a fresh process (this program re-run as a child: the rise of VmHWM over the inputs
// already allocated), with its ratio to the materialised baseline's.
//
// Physical limits of the same run: a GEMM probe (2048² float32 at::mm) gives the compute roof and a
// triad probe (a = b + s·c over 3 × 128 MiB) the bandwidth roof. Each row reports the FLOP/s and
// bytes/s it reached on a nominal count — the projections' 8·B·n·h² FLOPs plus, for the exact
// baselines, 4·B·H·n²·d for the scores and their product with V; bytes: the activations read and
// written once (x, q, k, v, y: 5·B·n·h floats) and the four weights — and the roof that bounds it
// (the larger of FLOPs/compute-roof and bytes/bandwidth-roof). The attention-side mixers add their
// own arithmetic and traffic to that count (mixer_cost below: windows, feature maps, Linformer's
// projections, FNet's FFTs in place of the projections); for the others the count is the nominal
// one and the FLOP/s column is a lower bound ("cost_counted": false).
//
// Options: mixer_config-style JSON per mixer with --options NAME='{"window":256}' (repeatable);
// a mixer that lists a `max_seq_len` option gets the row's length. When n is a perfect square the
// positions carry a √n × √n grid (image mixers use it; sequence mixers ignore it). A mixer that
// cannot run a row (an option it needs, a shape it refuses) is reported as skipped with its error.
// --causal runs the causal variants (causal SDPA and mask, causal mixers only).
//
// --backward times a training step's share instead: forward with autograd recording, then the
// backward of mean(y²) into the input and every tensor of the mixer (its kernels, its projections),
// as a trainer runs it. The nominal FLOP and byte counts are then 3× the forward's (backward ≈ two
// forwards) and no memory is measured.
//
//   build/bin/bench_mixers [--lengths 1024,4096,16384] [--heads 4] [--head-dim 64] [--batch 1]
//       [--mixers a,b] [--options NAME=JSON]... [--causal] [--backward] [--repeats 3] [--threads N]
//       [--no-memory] [--json]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/threads.h"
#include "lowrank/mix/registry.h"
#include "lowrank/nn/attention.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/rope.h"
#include "lowrank/nn/token_mixer.h"
#include "mixer_bench_args.h"
#include "process.h"
#include "timing.h"

using namespace lowrank;

namespace {

struct Settings : bench::MixerBenchArgs {
  Settings() { lengths = {1024, 4096, 16384}; }  // mixers: empty = every registered mixer but attention
  bool causal = false;
  bool backward = false;  // time forward + backward (a training step's share), not inference
  bool memory = true;
};

// One run of one mixer (or baseline) at one length, ready to be called repeatedly.
struct Workload {
  nn::ModelConfig config;
  at::Tensor x;
  nn::AttentionMask mask;
  nn::MixerContext context;
  std::unique_ptr<nn::TokenMixer> mixer;  // a registered mixer, or
  at::Tensor wq, wk, wv, wo;              // an exact baseline's projections
  std::string baseline;                   // "sdpa" | "materialised" | ""
  Workload(const Workload&) = delete;     // `context` points at `mask`
  Workload() = default;
};

nn::ModelConfig bench_config(const Settings& s, int64_t n) {
  nn::ModelConfig c;
  c.vocab_size = 16;
  c.hidden_size = s.hidden();
  c.intermediate_size = 4 * s.hidden();
  c.num_hidden_layers = 1;
  c.num_attention_heads = s.heads;
  c.num_key_value_heads = s.heads;
  c.head_dim = s.head_dim;
  c.max_position_embeddings = n;
  c.sliding_window = {0};
  c.layer_mixers = {"attention"};
  // Without --causal the mixer sits in a classifier, where bidirectional options are legal.
  if (!s.causal) c.architecture = nn::Architecture::kLowrankMixerSequenceClassification;
  c.mixer_config = Json::object();
  for (const auto& [name, o] : s.options) c.mixer_config[name] = o;
  return c;
}

// Fills `w` for `name` ("sdpa", "materialised" or a registered mixer) at length n. Throws the
// mixer's own error when it cannot run this row.
void prepare(Workload& w, const Settings& s, const std::string& name, int64_t n) {
  w.config = bench_config(s, n);
  const int64_t h = s.hidden();
  at::Generator gen = at::detail::createCPUGenerator(11);
  const bool grad = s.backward;
  w.x = at::randn({s.batch, n, h}, gen, at::kFloat).requires_grad_(grad);
  const double scale = 1.0 / std::sqrt(static_cast<double>(h));
  if (name == "sdpa" || name == "materialised") {
    w.baseline = name;
    for (at::Tensor* t : {&w.wq, &w.wk, &w.wv, &w.wo})
      *t = at::randn({h, h}, gen, at::kFloat).mul_(scale).requires_grad_(grad);
    return;
  }
  const MethodInfo* info = nullptr;
  const std::vector<MethodInfo> known = mix::registry().list();
  for (const MethodInfo& i : known)
    if (i.name == name) info = &i;
  LR_CHECK(info != nullptr, NotFound, "bench_mixers: unknown mixer \"", name,
           "\"; known: ", mix::registry().known());
  Json options = w.config.mixer_options(name);
  for (const auto& [key, help] : info->options)
    if (key == "max_seq_len" && !options.contains("max_seq_len")) options["max_seq_len"] = n;
  w.config.mixer_config[name] = options;
  nn::MixerSpec spec{w.config, 0, nn::mixer_prefix(name, 0), options, nullptr, nullptr};
  // With --backward every tensor the mixer owns is a leaf that wants a gradient, as in training.
  spec.projection = [&gen, grad](const std::string&, int64_t out, int64_t in, bool bias) {
    const double sc = 1.0 / std::sqrt(static_cast<double>(in));
    return std::make_shared<const nn::DenseOperator>(
        at::randn({out, in}, gen, at::kFloat).mul_(sc).requires_grad_(grad),
        bias ? at::zeros({out}, at::kFloat).requires_grad_(grad) : at::Tensor());
  };
  spec.tensor = [&gen, grad](const std::string&, std::vector<int64_t> shape, nn::ParamInit init,
                             const at::Tensor& value) {
    return nn::initial_tensor(
               init, shape, value, at::kFloat,
               [&gen](at::IntArrayRef size) { return at::randn(size, gen, at::kFloat).mul_(0.02); })
        .detach()
        .requires_grad_(grad);
  };
  w.mixer = mix::registry().factory(name)(spec);
  LR_CHECK(!s.causal || w.mixer->causal(), InvalidArgument, name,
           " is bidirectional (not run with --causal)");
  if (s.causal) {
    w.mask = nn::make_attention_mask({}, false, 0, n, 0, at::kCPU);
    w.context.mask = &w.mask;
  }
  w.context.positions = at::arange(n, at::kLong).unsqueeze(0).expand({s.batch, n});
  std::tie(w.context.cos, w.context.sin) =
      nn::RotaryEmbedding(w.config, at::kCPU, at::kFloat).cos_sin(w.context.positions, at::kFloat);
  const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  if (side * side == n) w.context.grid = nn::Grid2d{side, side};
}

// A mixer's FLOPs and bytes per forward at length n beyond or instead of the nominal count: the
// dominant terms of its own computation at its options (defaults as mix/ documents them).
struct MixerCost {
  double flops = 0, bytes = 0;
  bool counted = false;  // false: the mixer's own terms are not modelled here
};

MixerCost mixer_cost(const std::string& name, const Json& o, const Settings& s, int64_t n) {
  const double B = static_cast<double>(s.batch), N = static_cast<double>(n), H = static_cast<double>(s.heads),
               d = static_cast<double>(s.head_dim), h = static_cast<double>(s.hidden());
  const double projections = 8.0 * B * N * h * h, activations = 4.0 * (5.0 * B * N * h + 4.0 * h * h);
  auto num = [&](const char* key, double fallback) {
    return o.contains(key) ? o[key].get<double>() : fallback;
  };
  const double m_default = std::floor(d * std::log(d));  // performer / scatterbrain: ⌊d ln d⌋
  // A window of w keys per query: scores and their product with V.
  auto window = [&](double w) { return 4.0 * B * H * N * std::min(w, N) * d; };
  // Positive random features: φ(Q), φ(K) (2·n·d·m each), the key state and the readout (2·n·m·d
  // each); the feature maps are written and read once.
  auto features = [&](double m) {
    return std::pair{8.0 * B * H * N * m * d, 4.0 * 2.0 * 2.0 * B * H * N * m};
  };
  if (name == "local") return {projections + window(num("window", 64)), activations, true};
  if (name == "neighborhood") {
    const double k =
        o.contains("kernel_size") && o["kernel_size"].is_number() ? o["kernel_size"].get<double>() : 7;
    return {projections + window(std::pow(k, num("dims", 1))), activations, true};
  }
  if (name == "performer") {
    const auto [f, b] = features(num("n_features", m_default));
    return {projections + f, activations + b, true};
  }
  if (name == "scatterbrain") {
    const double w = num("window", 64), m = num("n_features", std::max(2.0, m_default));
    const auto [f, b] = features(m);
    // The exact window (blocks of 2w keys for w queries) and φ(q)·φ(k) on it, times V.
    const double keys = std::min(2.0 * w, N);
    return {projections + f + 4.0 * B * H * N * keys * d + 2.0 * B * H * N * keys * (m + d), activations + b,
            true};
  }
  if (name == "linformer") {
    const double k = num("k", std::min(256.0, N));
    return {projections + 4.0 * B * k * N * h + 4.0 * B * H * N * k * d, activations, true};
  }
  if (name == "fnet") {
    // No projections: a real 2-D FFT of the [n, h] slab (≈ 2.5·M·log₂M FLOPs for M real points),
    // the input read, a complex half-spectrum written and read, the output written.
    const double M = N * h;
    return {B * 2.5 * M * std::log2(M), 4.0 * B * M * 2.0 + 8.0 * B * M, true};
  }
  return {projections, activations, false};
}

at::Tensor run(const Workload& w, const Settings& s) {
  if (!w.baseline.empty()) {
    const int64_t B = w.x.size(0), n = w.x.size(1), H = s.heads, d = s.head_dim;
    auto heads = [&](const at::Tensor& W) { return at::linear(w.x, W).view({B, n, H, d}).transpose(1, 2); };
    const at::Tensor q = heads(w.wq), k = heads(w.wk), v = heads(w.wv);
    at::Tensor o;
    if (w.baseline == "sdpa") {
      o = at::scaled_dot_product_attention(q, k, v, {}, 0.0, s.causal);
    } else {
      at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).mul_(1.0 / std::sqrt(static_cast<double>(d)));
      if (s.causal) scores.masked_fill_(at::ones({n, n}, at::kBool).triu(1), -INFINITY);
      o = at::matmul(at::softmax(scores, -1), v);
    }
    return at::linear(o.transpose(1, 2).reshape({B, n, H * d}), w.wo);
  }
  return w.mixer->forward(w.x, w.context);
}

// Child mode: one forward of `name` at length n; prints the rise of the peak RSS it caused.
int measure_child(const Settings& s, const std::string& name, int64_t n) {
  c10::InferenceMode inference;
  Workload w;
  prepare(w, s, name, n);
  const int64_t before = bench::peak_rss_bytes();
  const at::Tensor y = run(w, s);
  const int64_t after = bench::peak_rss_bytes();
  std::printf("%lld\n", static_cast<long long>(after - before));
  (void)y;
  return 0;
}

// The peak-memory rise of one forward of `name` at n, measured in a fresh process; nullopt when
// the child failed.
std::optional<int64_t> measure_in_child(const Settings& s, const std::string& name, int64_t n) {
  std::string args = " --child " + name + " " + std::to_string(n) + " --heads " + std::to_string(s.heads) +
                     " --head-dim " + std::to_string(s.head_dim) + " --batch " + std::to_string(s.batch) +
                     " --threads " + std::to_string(at::get_num_threads());
  if (s.causal) args += " --causal";
  for (const auto& [mixer, o] : s.options) args += " --options '" + mixer + "=" + o.dump() + "'";
  return bench::run_child_for_number(args);
}

struct Roofs {
  double flops_per_s = 0;
  double bytes_per_s = 0;
};

Roofs probe_roofs(int repeats) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  const int64_t g = 2048;
  const at::Tensor a = at::randn({g, g}, gen, at::kFloat), b = at::randn({g, g}, gen, at::kFloat);
  at::Tensor c = at::empty({g, g}, at::kFloat);
  const double gemm_s = bench::median_seconds([&] { at::mm_out(c, a, b); }, repeats);
  const int64_t m = 32 << 20;  // 32 Mi floats = 128 MiB per array
  const at::Tensor y = at::randn({m}, gen, at::kFloat), z = at::randn({m}, gen, at::kFloat);
  at::Tensor t = at::empty({m}, at::kFloat);
  const double triad_s = bench::median_seconds([&] { at::add_out(t, y, z, 2.5); }, repeats);
  return {2.0 * g * g * g / gemm_s, 3.0 * 4.0 * static_cast<double>(m) / triad_s};
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  std::optional<std::pair<std::string, int64_t>> child;
  for (int i = 1; i < argc; ++i) {
    try {
      if (bench::parse_mixer_bench_flag(argc, argv, i, s)) continue;
    } catch (const std::invalid_argument& e) {
      std::fprintf(stderr, "bench_mixers: %s\n", e.what());
      return 1;
    }
    if (!std::strcmp(argv[i], "--causal"))
      s.causal = true;
    else if (!std::strcmp(argv[i], "--backward"))
      s.backward = true;
    else if (!std::strcmp(argv[i], "--no-memory"))
      s.memory = false;
    else if (!std::strcmp(argv[i], "--child") && i + 2 < argc) {
      child = {argv[i + 1], std::atoll(argv[i + 2])};
      i += 2;
    } else {
      std::fprintf(stderr, "bench_mixers: unknown argument %s\n", argv[i]);
      return 1;
    }
  }
  if (const std::string wrong = bench::check_mixer_bench_args(s); !wrong.empty()) {
    std::fprintf(stderr, "bench_mixers: %s\n", wrong.c_str());
    return 1;
  }
  configure_threads(s.threads);
  if (s.backward) s.memory = false;
  mix::registry();
  try {
    if (child) return measure_child(s, child->first, child->second);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_mixers: %s\n", e.what());
    return 1;
  }
  if (s.mixers.empty())
    for (const MethodInfo& info : mix::registry().list())
      if (info.name != "attention") s.mixers.push_back(info.name);

  std::optional<c10::InferenceMode> inference;
  if (!s.backward) inference.emplace();
  const Roofs roofs = probe_roofs(s.repeats);
  // One timed call: a forward, or (--backward) a forward and the backward of mean(y²).
  auto step = [&s](const Workload& w) {
    at::Tensor y = run(w, s);
    if (s.backward) y.square().mean().backward();
  };

  OrderedJson rows = OrderedJson::array();
  if (!s.json)
    std::printf(
        "token mixers vs exact attention, %s: batch %lld, %lld heads × %lld (hidden %lld), float32, %s, "
        "%d threads\n"
        "roofs of this run: GEMM %.1f GFLOP/s, triad %.2f GB/s\n",
        s.backward ? "forward + backward" : "forward", static_cast<long long>(s.batch),
        static_cast<long long>(s.heads), static_cast<long long>(s.head_dim),
        static_cast<long long>(s.hidden()), s.causal ? "causal" : "bidirectional", at::get_num_threads(),
        roofs.flops_per_s / 1e9, roofs.bytes_per_s / 1e9);
  for (int64_t n : s.lengths) {
    const double B = static_cast<double>(s.batch), N = static_cast<double>(n),
                 h = static_cast<double>(s.hidden());
    // Forward counts; a training step's (--backward) are `passes` times these.
    const double passes = s.backward ? 3.0 : 1.0;
    const double projection_flops = 8.0 * B * N * h * h;
    const double exact_flops = projection_flops + 4.0 * B * static_cast<double>(s.heads) * N * N * s.head_dim;
    const double bytes = 4.0 * (5.0 * B * N * h + 4.0 * h * h);
    std::map<std::string, double> baseline_s;
    std::map<std::string, int64_t> baseline_bytes;
    std::vector<std::string> names = {"sdpa", "materialised"};
    names.insert(names.end(), s.mixers.begin(), s.mixers.end());
    if (!s.json) std::printf("\nn = %lld\n", static_cast<long long>(n));
    for (const std::string& name : names) {
      OrderedJson row;
      row["mixer"] = name;
      row["n"] = n;
      Workload w;
      try {
        prepare(w, s, name, n);
        step(w);
      } catch (const std::exception& e) {
        row["skipped"] = e.what();
        if (!s.json) std::printf("  %-14s skipped: %s\n", name.c_str(), e.what());
        rows.push_back(row);
        continue;
      }
      const double seconds = bench::median_seconds([&] { step(w); }, s.repeats);
      w.x = at::Tensor();
      const bool exact = !w.baseline.empty();
      const MixerCost cost =
          exact ? MixerCost{exact_flops, bytes, true} : mixer_cost(name, w.config.mixer_options(name), s, n);
      const double flops = passes * (cost.counted ? cost.flops : projection_flops);
      const double row_bytes = passes * (cost.counted ? cost.bytes : bytes);
      const double compute_time = flops / roofs.flops_per_s, memory_time = row_bytes / roofs.bytes_per_s;
      row["ms"] = seconds * 1e3;
      row["gflop_per_s"] = flops / seconds / 1e9;
      row["gflop_per_s_is_lower_bound"] = !cost.counted;
      row["cost_counted"] = cost.counted;
      row["gflop"] = flops / 1e9;
      row["mb"] = row_bytes / 1e6;
      row["gb_per_s"] = row_bytes / seconds / 1e9;
      row["bound"] = compute_time >= memory_time ? "compute" : "bandwidth";
      row["roof_fraction"] = std::max(compute_time, memory_time) / seconds;
      if (exact) baseline_s[name] = seconds;
      if (baseline_s.contains("sdpa")) row["sdpa_over_this"] = baseline_s["sdpa"] / seconds;
      if (baseline_s.contains("materialised"))
        row["materialised_over_this"] = baseline_s["materialised"] / seconds;
      std::optional<int64_t> peak;
      if (s.memory) peak = measure_in_child(s, name, n);
      if (peak) {
        row["peak_mib"] = static_cast<double>(*peak) / (1 << 20);
        if (exact) baseline_bytes[name] = *peak;
        if (baseline_bytes.contains("materialised") && baseline_bytes["materialised"] > 0)
          row["memory_vs_materialised"] =
              static_cast<double>(*peak) / static_cast<double>(baseline_bytes["materialised"]);
      }
      if (!s.json) {
        std::printf(
            "  %-14s %10.2f ms  sdpa/this %6.2fx  materialised/this %6.2fx  %8.1f GFLOP/s%s  %6.2f GB/s  %s",
            name.c_str(), seconds * 1e3, row.value("sdpa_over_this", NAN),
            row.value("materialised_over_this", NAN), flops / seconds / 1e9, cost.counted ? " " : "+",
            row_bytes / seconds / 1e9, compute_time >= memory_time ? "compute" : "bandwidth");
        if (peak)
          std::printf("  peak +%8.1f MiB (%.3f of materialised)", static_cast<double>(*peak) / (1 << 20),
                      row.value("memory_vs_materialised", NAN));
        std::printf("\n");
      }
      rows.push_back(row);
    }
  }
  if (s.json) {
    OrderedJson out;
    out["batch"] = s.batch;
    out["heads"] = s.heads;
    out["head_dim"] = s.head_dim;
    out["causal"] = s.causal;
    out["backward"] = s.backward;
    out["threads"] = at::get_num_threads();
    out["repeats"] = s.repeats;
    out["gemm_gflop_per_s"] = roofs.flops_per_s / 1e9;
    out["triad_gb_per_s"] = roofs.bytes_per_s / 1e9;
    OrderedJson options = OrderedJson::object();
    for (const auto& [name, o] : s.options) options[name] = OrderedJson::parse(o.dump());
    out["options"] = options;
    out["rows"] = rows;
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::printf(
        "\n(+: FLOP/s on the projections only, a lower bound for mixers with their own arithmetic)\n");
  }
  return 0;
}
