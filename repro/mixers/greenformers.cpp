// Greenformers (Winata et al., 2020, arXiv:2006.10754; the thesis's efficiency comparison): one
// transformer layer's forward + backward time and peak memory against sequence length, for
//   dense      softmax attention, dense projections and SwiGLU MLP (the Llama layer of this project)
//   lrt        the Low-Rank Transformer: every projection and MLP matrix W [out, in] replaced by U·V
//              with U [out, r], V [r, in], r = hidden / 4 (compress::LowRankOperator; what
//              `--parameterization lowrank` trains), attention itself exact
//   linformer  the `linformer` mixer (k = min(--k, n), E and F along the sequence) with dense
//              projections and MLP
// Claim: LRT is the fastest for short sequences (the d² terms dominate) and Linformer for long
// ones (the n² term dominates); the crossover is where they meet. Bidirectional (an encoder, as in
// the thesis), batch --batch, float32. Time: the median of --repeats forward + backward passes
// (all parameters require grad), the variants timed in turn; memory: the peak-RSS rise of one pass
// in a fresh process.
//
//   repro_mixers_greenformers [--lengths 128,256,512,1024,2048,4096] [--hidden 128] [--heads 4]
//       [--intermediate 384] [--rank 32] [--k 128] [--batch 1] [--repeats 7] [--threads N] --out FILE.json
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include "bench/process.h"
#include "bench/timing.h"
#include "lowrank/compress/operators.h"
#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"
#include "lowrank/core/threads.h"
#include "lowrank/mix/registry.h"
#include "lowrank/nn/config.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/model.h"
#include "lowrank/nn/rope.h"
#include "lowrank/nn/token_mixer.h"
#include "repro/mixers/common.h"

using namespace lowrank;

namespace {

struct Settings {
  std::vector<int64_t> lengths = {128, 256, 512, 1024, 2048, 4096};
  int64_t hidden = 128, heads = 4, intermediate = 384, rank = 32, k = 128, batch = 1;
  int repeats = 7;
  int threads = 0;  // 0: all cores
};

const char* const kVariants[] = {"dense", "lrt", "linformer"};

// One layer of `variant` at length n: h = x + Mixer(RMSNorm(x)); y = h + MLP(RMSNorm(h)).
struct Layer {
  nn::ModelConfig config;
  std::unique_ptr<nn::TokenMixer> mixer;
  std::vector<std::shared_ptr<const nn::BaseOperator>> mlp;  // gate, up, down
  at::Tensor norm1, norm2;
  std::vector<at::Tensor> parameters;
  nn::AttentionMask mask;  // bidirectional: no mask tensor, not causal
  nn::MixerContext context;
  Layer(const Layer&) = delete;  // `context` points at `mask`
  Layer() = default;
};

void build(Layer& layer, const Settings& s, const std::string& variant, int64_t n) {
  at::Generator gen = at::detail::createCPUGenerator(17);
  nn::ModelConfig& c = layer.config;
  c.vocab_size = 16;
  c.hidden_size = s.hidden;
  c.intermediate_size = s.intermediate;
  c.num_hidden_layers = 1;
  c.num_attention_heads = s.heads;
  c.num_key_value_heads = s.heads;
  c.head_dim = s.hidden / s.heads;
  c.max_position_embeddings = n;
  c.sliding_window = {0};
  c.layer_mixers = {"attention"};
  const bool lrt = variant == "lrt";
  auto param = [&](std::vector<int64_t> shape, double scale) {
    at::Tensor t = at::randn(shape, gen, at::kFloat).mul_(scale).requires_grad_(true);
    layer.parameters.push_back(t);
    return t;
  };
  auto op = [&](int64_t out, int64_t in) -> std::shared_ptr<const nn::BaseOperator> {
    const double scale = 1.0 / std::sqrt(static_cast<double>(in));
    if (!lrt) return std::make_shared<const nn::DenseOperator>(param({out, in}, scale), at::Tensor());
    const double root = std::sqrt(scale);
    return std::make_shared<const compress::LowRankOperator>(param({out, s.rank}, root / std::sqrt(s.rank)),
                                                             param({s.rank, in}, root));
  };
  const std::string mixer = variant == "linformer" ? "linformer" : "attention";
  Json options = Json::object();
  if (mixer == "linformer") options = Json{{"max_seq_len", n}, {"k", std::min(s.k, n)}};
  c.mixer_config = Json{{mixer, options}};
  nn::MixerSpec spec{c, 0, nn::mixer_prefix(mixer, 0), options, nullptr, nullptr};
  spec.projection = [&](const std::string&, int64_t out, int64_t in, bool) { return op(out, in); };
  spec.tensor = [&](const std::string&, std::vector<int64_t> shape, nn::ParamInit init,
                    const at::Tensor& value) {
    at::Tensor t = nn::initial_tensor(init, shape, value, at::kFloat, [&](at::IntArrayRef size) {
      return at::randn(size, gen, at::kFloat).mul_(0.02);
    });
    t.requires_grad_(true);
    layer.parameters.push_back(t);
    return t;
  };
  layer.mixer = mix::registry().factory(mixer)(spec);
  layer.mlp = {op(s.intermediate, s.hidden), op(s.intermediate, s.hidden), op(s.hidden, s.intermediate)};
  layer.norm1 = param({s.hidden}, 0).add(1).detach().requires_grad_(true);
  layer.norm2 = param({s.hidden}, 0).add(1).detach().requires_grad_(true);
  layer.context.mask = &layer.mask;
  layer.context.positions = at::arange(n, at::kLong).unsqueeze(0).expand({s.batch, n});
  std::tie(layer.context.cos, layer.context.sin) =
      nn::RotaryEmbedding(c, at::kCPU, at::kFloat).cos_sin(layer.context.positions, at::kFloat);
}

void forward_backward(const Layer& layer, const at::Tensor& x) {
  const double eps = 1e-5;
  const at::Tensor h = x + layer.mixer->forward(nn::rms_norm(x, layer.norm1, eps), layer.context);
  const at::Tensor u = nn::rms_norm(h, layer.norm2, eps);
  const at::Tensor mlp = layer.mlp[2]->forward(at::silu(layer.mlp[0]->forward(u)) * layer.mlp[1]->forward(u));
  (h + mlp).sum().backward();
}

at::Tensor input(const Settings& s, int64_t n) {
  at::Generator gen = at::detail::createCPUGenerator(23);
  return at::randn({s.batch, n, s.hidden}, gen, at::kFloat);
}

std::string child_args(const Settings& s) {
  return " --hidden " + std::to_string(s.hidden) + " --heads " + std::to_string(s.heads) +
         " --intermediate " + std::to_string(s.intermediate) + " --rank " + std::to_string(s.rank) + " --k " +
         std::to_string(s.k) + " --batch " + std::to_string(s.batch) + " --threads " +
         std::to_string(s.threads);
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  std::string out, child_variant;
  int64_t child_n = 0;
  try {
    for (int i = 1; i < argc; ++i) {
      const bool has_value = i + 1 < argc;
      auto is = [&](const char* flag) { return !std::strcmp(argv[i], flag) && has_value; };
      if (is("--lengths")) {
        s.lengths.clear();
        for (double v : repro::numbers(argv[++i])) s.lengths.push_back(static_cast<int64_t>(v));
      } else if (is("--hidden"))
        s.hidden = std::atoll(argv[++i]);
      else if (is("--heads"))
        s.heads = std::atoll(argv[++i]);
      else if (is("--intermediate"))
        s.intermediate = std::atoll(argv[++i]);
      else if (is("--rank"))
        s.rank = std::atoll(argv[++i]);
      else if (is("--k"))
        s.k = std::atoll(argv[++i]);
      else if (is("--batch"))
        s.batch = std::atoll(argv[++i]);
      else if (is("--repeats"))
        s.repeats = std::atoi(argv[++i]);
      else if (is("--threads"))
        s.threads = std::atoi(argv[++i]);
      else if (is("--out"))
        out = argv[++i];
      else if (!std::strcmp(argv[i], "--child") && i + 2 < argc) {
        child_variant = argv[i + 1];
        child_n = std::atoll(argv[i + 2]);
        i += 2;
      } else
        throw InvalidArgument(std::string("unknown argument ") + argv[i]);
    }
    LR_CHECK(s.hidden > 0 && s.heads > 0 && s.hidden % s.heads == 0 && s.rank > 0 && s.k > 0 && s.batch > 0 &&
                 s.repeats > 0,
             InvalidArgument, "need positive sizes and --hidden a multiple of --heads");
    configure_threads(s.threads);
    log::set_level(log::Level::kError);
    mix::registry();
    if (!child_variant.empty()) {
      Layer layer;
      build(layer, s, child_variant, child_n);
      const at::Tensor x = input(s, child_n);
      const int64_t before = bench::peak_rss_bytes();
      forward_backward(layer, x);
      std::printf("%lld\n", static_cast<long long>(bench::peak_rss_bytes() - before));
      return 0;
    }
    LR_CHECK(!out.empty(), InvalidArgument, "need --out FILE.json");
    OrderedJson rows = OrderedJson::array();
    for (int64_t n : s.lengths) {
      // The three variants timed in turn (interleaved), so that a drift of the machine's load
      // affects all alike.
      std::vector<std::unique_ptr<Layer>> layers;
      std::vector<std::function<void()>> passes;
      const at::Tensor x = input(s, n);
      for (const char* variant : kVariants) {
        layers.push_back(std::make_unique<Layer>());
        build(*layers.back(), s, variant, n);
        const Layer* layer = layers.back().get();
        passes.push_back([layer, &x] { forward_backward(*layer, x); });
      }
      const std::vector<double> seconds = bench::interleaved_median_seconds(passes, s.repeats);
      for (size_t v = 0; v < std::size(kVariants); ++v) {
        const char* variant = kVariants[v];
        const std::optional<int64_t> peak = bench::run_child_for_number(
            std::string(" --child ") + variant + " " + std::to_string(n) + child_args(s));
        OrderedJson row;
        row["n"] = n;
        row["variant"] = variant;
        row["ms"] = seconds[v] * 1e3;
        if (peak) row["peak_mib"] = static_cast<double>(*peak) / (1 << 20);
        std::printf("  n %5lld  %-10s %9.2f ms  peak +%.1f MiB\n", static_cast<long long>(n), variant,
                    seconds[v] * 1e3, peak ? static_cast<double>(*peak) / (1 << 20) : NAN);
        std::fflush(stdout);
        rows.push_back(row);
      }
    }
    OrderedJson result;
    result["claim"] = "LRT fastest for short sequences, Linformer for long ones";
    result["hidden"] = s.hidden;
    result["heads"] = s.heads;
    result["intermediate"] = s.intermediate;
    result["rank"] = s.rank;
    result["k"] = s.k;
    result["batch"] = s.batch;
    result["threads"] = at::get_num_threads();
    result["rows"] = rows;
    write_json_file(out, result);
    std::printf("wrote %s\n", out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "repro_mixers_greenformers: %s\n", e.what());
    return 1;
  }
  return 0;
}
