// GaLore projector refresh, optimizer-state bytes and step overhead, on gradient-shaped matrices.
//
// Gradient sequence (synthetic, seeded, float32; bench/peers/projectors.py draws the same
// distribution with PyTorch's generator). For a shape m × n and rank r, with K = min(2r, min(m, n))
// latent directions:
//   G_t = U_t diag(s) V_tᵀ + σ N_t,   s_i = i^(-1/2) (i = 1..K),   N_t iid N(0, 1), fresh per t,
// with σ chosen so that the noise carries 10% of E‖G‖²: a low-rank-dominated gradient with a
// slowly decaying head (the top r of the 2r directions hold about 90% of the signal) over a flat
// minibatch-noise bulk. Between refreshes the subspaces drift: U_{t+1} = orth(U_t + δ E), E iid
// N(0, 1/m) (V likewise with 1/n), δ = --drift (0.3: each direction turns by about 17°), so
// successive gradients share most, not all, of their top-r subspace.
//
// Part 1, refresh (rank r, default d/8 for d = min(m, n): 128 for 1024, 256 for 2048, 512 for
// 4096, as `--rank` overrides). One cold refresh on G_0, then --refreshes warm ones on G_1..G_T,
// each timed once (the reported time is their median):
//   exact    linalg::truncated_svd (at::linalg_svd, thin): what SvdProjector::refresh and
//            galore-torch compute; timed on the last gradient only (on all of them for d ≤ 2048)
//   ours     the projector GaLore uses with projector = randomized_svd (RandomizedSvdProjector,
//            LowRankConfig's oversample and power_iters), warm-started from its previous matrix
//   cold     torch.svd_lowrank(G, q=r, niter=2) transcribed from torch/_lowrank.py (the same
//            ATen calls; svd_lowrank_basis below), timed alternately with ours on each gradient:
//            the peer's algorithm in this process, under the same load
// Captured energy of a basis P: ‖Pᵀ G‖²/‖G‖² (left) or ‖G Qᵀ‖²/‖G‖² (right, GaLore's side rule),
// reported against the exact top-r energy Σ_{i≤r} σ_i²/‖G‖² on the same gradient. "stale" is
// the previous refresh's projector (ours) on the new gradient: how much the drift costs.
//
// Part 2, GaLore at r = d/4 (update gap T = 200) against optim::AdamW on one parameter of the
// shape: optimizer-state bytes from the optimizers' own accounting (bytes(), memory()); the step
// time without refresh and with one (the randomized projector, warm: a step at k = 200 after
// load_state), paired with AdamW's step (bench/timing.h); the amortised step
// (t_refresh_step + (T − 1)·t_step)/T against AdamW's. The same with GaLore's default exact
// projector uses part 1's exact SVD time as its refresh. For scale, the forward + backward
// GEMMs of a linear layer with this weight on --tokens tokens are timed too, and the token count
// per optimizer step above which the amortised overhead is ≤ 15% of a training step is derived
// (the GEMMs scale linearly in tokens).
//
// Part 3, the whole training step of a LLaMA-shaped model (random weights; GaLore-60M's
// proportions at --model-hidden, default 512: 8 heads of 64, MLP 8/3·hidden rounded up to 32,
// --model-layers 4, vocab 8192, untied), forward + backward of the LM loss on
// --model-batch × --model-seq tokens (8 × 256) + the optimizer step: AdamW on every tensor
// against GaLore (r = hidden/4, T = 200: the attention/MLP weights projected, the rest AdamW), on
// two copies of the same model, their steps timed alternately; a refresh step (warm, randomized
// SVD; and with GaLore's default exact SVD, on a third copy) timed as in part 2; the amortised
// step (t_refresh_step + (T − 1)·t_step)/T over AdamW's step: the step-time overhead.
//
//   build/bin/bench_projectors [--shapes 1024x1024,4096x11008] [--quick] [--rank r]
//                              [--refreshes 4] [--repeats 3] [--drift 0.3] [--tokens 512] [--json]
//                              [--refresh-only]   (part 1 only)
//                              [--model-step-only] [--model-hidden 512] [--model-layers 4]
//                              [--model-batch 8] [--model-seq 256]   (part 3)
// Threads: LOWRANK_NUM_THREADS (1 gives the stable numbers on a shared machine).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/core/json.h"
#include "lowrank/core/process.h"
#include "lowrank/core/threads.h"
#include "lowrank/linalg/svd.h"
#include "lowrank/nn/model.h"
#include "lowrank/optim/adamw.h"
#include "lowrank/optim/galore.h"
#include "lowrank/optim/methods.h"
#include "lowrank/optim/projector.h"
#include "lowrank/train/trainer.h"
#include "models.h"
#include "timing.h"

namespace {

using namespace lowrank;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// The drifting gradient sequence of the header comment.
class GradientSequence {
 public:
  GradientSequence(int64_t m, int64_t n, int64_t r, double drift, uint64_t seed)
      : m_(m), n_(n), drift_(drift), gen_(at::detail::createCPUGenerator(seed)) {
    const int64_t K = std::min(2 * r, std::min(m, n));
    s_ = at::arange(1, K + 1, at::kFloat).pow(-0.5);
    const double signal = s_.square().sum().item<double>();
    sigma_ = std::sqrt(0.1 / 0.9 * signal / static_cast<double>(m * n));
    U_ = linalg::orthonormalize(at::randn({m, K}, gen_));
    V_ = linalg::orthonormalize(at::randn({n, K}, gen_));
  }

  // G_t, then the subspaces drift for G_{t+1}.
  at::Tensor next() {
    at::Tensor G = at::matmul(U_ * s_.unsqueeze(0), V_.t());
    G.add_(at::randn({m_, n_}, gen_), sigma_);
    U_ = linalg::orthonormalize(U_ + at::randn(U_.sizes(), gen_) * (drift_ / std::sqrt(double(m_))));
    V_ = linalg::orthonormalize(V_ + at::randn(V_.sizes(), gen_) * (drift_ / std::sqrt(double(n_))));
    return G;
  }

 private:
  int64_t m_, n_;
  double drift_, sigma_ = 0;
  at::Generator gen_;
  at::Tensor s_, U_, V_;
};

// Captured energy of a projector basis on G: left P (m, r) or right Q (r, n), GaLore's side rule.
double energy(const at::Tensor& G, const at::Tensor& basis, optim::ProjectionSide side) {
  const at::Tensor low =
      side == optim::ProjectionSide::kRight ? at::matmul(G, basis.t()) : at::matmul(basis.t(), G);
  return low.square().sum().item<double>() / G.square().sum().item<double>();
}

// torch.svd_lowrank(A, q, niter) transcribed from torch/_lowrank.py (PyTorch 2.15: _svd_lowrank
// and get_approximate_basis, M = None), the same ATen calls in the same order, so that the peer's
// algorithm is timed in this process beside ours. Returns the basis on GaLore's side: U (m, q)
// when m < n (left), else Vh (q, n) (right).
at::Tensor svd_lowrank_basis(const at::Tensor& A_in, int64_t q, int64_t niter, at::Generator& gen) {
  const int64_t m = A_in.size(0), n = A_in.size(1);
  const at::Tensor A = m < n ? A_in.mH() : A_in;
  // get_approximate_basis
  at::Tensor X = at::matmul(A, at::randn({A.size(1), q}, gen, A.options()));
  at::Tensor Q = std::get<0>(at::linalg_qr(X));
  for (int64_t i = 0; i < niter; ++i) {
    Q = std::get<0>(at::linalg_qr(at::matmul(A.mH(), Q)));
    Q = std::get<0>(at::linalg_qr(at::matmul(A, Q)));
  }
  const at::Tensor B = at::matmul(Q.mH(), A);
  auto [U, S, Vh] = at::linalg_svd(B, /*full_matrices=*/false);
  // m < n: the result's U is V of the transposed problem, Vh.mH(); otherwise U = Q U.
  return m < n ? Vh.mH() : Vh;
}

struct Shape {
  int64_t m, n;
};

std::vector<Shape> parse_shapes(const std::string& list) {
  std::vector<Shape> out;
  size_t pos = 0;
  while (pos < list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    const std::string item = list.substr(pos, end - pos);
    const size_t x = item.find('x');
    if (x == std::string::npos) {
      std::fprintf(stderr, "bench_projectors: shape \"%s\" is not MxN\n", item.c_str());
      std::exit(1);
    }
    out.push_back({std::atoll(item.substr(0, x).c_str()), std::atoll(item.substr(x + 1).c_str())});
    pos = end + 1;
  }
  return out;
}

// Part 1: exact, ours (warm) and cold refreshes along one gradient sequence.
OrderedJson refresh_case(const Shape& shape, int64_t r, int refreshes, double drift) {
  const int64_t m = shape.m, n = shape.n, d = std::min(m, n);
  const optim::ProjectionSide side = optim::std_side(m, n);
  GradientSequence seq(m, n, r, drift, 1000 + static_cast<uint64_t>(m * 7 + n));
  const optim::LowRankConfig galore = optim::galore_defaults();
  optim::ProjectorOptions po;
  po.kind = optim::ProjectorKind::kRandomizedSvd;
  po.rank = r;
  po.seed = 7;
  po.oversample = galore.oversample;
  po.power_iters = galore.power_iters;
  std::unique_ptr<optim::Projector> ours = optim::make_projector(po, m, n);
  auto* ours_matrix = dynamic_cast<optim::MatrixProjector*>(ours.get());
  at::Generator cold_gen = at::detail::createCPUGenerator(11);

  ours->refresh(seq.next(), 0);  // the cold first refresh
  const bool exact_every = d * m * n <= int64_t{2048} * 2048 * 2048;
  std::vector<double> t_exact, t_ours, t_cold, ours_ratio, cold_ratio;
  double e_exact = 0, e_ours = 0, e_cold = 0, e_stale = 0;
  for (int t = 1; t <= refreshes; ++t) {
    const at::Tensor G = seq.next();
    const bool last = t == refreshes;
    e_stale = energy(G, ours_matrix->matrix(), side);

    auto t0 = Clock::now();
    ours->refresh(G, int64_t{200} * t);
    t_ours.push_back(seconds_since(t0));
    e_ours = energy(G, ours_matrix->matrix(), side);

    t0 = Clock::now();
    const at::Tensor cold = svd_lowrank_basis(G, r, 2, cold_gen);
    t_cold.push_back(seconds_since(t0));
    e_cold = energy(G, cold, side);

    if (exact_every || last) {
      t0 = Clock::now();
      const linalg::Svd exact = linalg::truncated_svd(G, r);
      t_exact.push_back(seconds_since(t0));
      e_exact = exact.S.square().sum().item<double>() / G.square().sum().item<double>();
      ours_ratio.push_back(e_ours / e_exact);
      cold_ratio.push_back(e_cold / e_exact);
    }
  }
  return {{"shape", std::to_string(m) + "x" + std::to_string(n)},
          {"rank", r},
          {"side", side == optim::ProjectionSide::kRight ? "right" : "left"},
          {"refreshes", refreshes},
          {"seconds", {{"exact", median(t_exact)}, {"ours", median(t_ours)}, {"cold", median(t_cold)}}},
          {"energy_last", {{"exact", e_exact}, {"ours", e_ours}, {"cold", e_cold}, {"stale", e_stale}}},
          {"energy_over_exact_last",
           {{"ours", e_ours / e_exact}, {"cold", e_cold / e_exact}, {"stale", e_stale / e_exact}}},
          {"energy_over_exact_min",
           {{"ours", *std::min_element(ours_ratio.begin(), ours_ratio.end())},
            {"cold", *std::min_element(cold_ratio.begin(), cold_ratio.end())}}},
          {"ours_speedup_over_cold", median(t_cold) / median(t_ours)},
          {"ours_speedup_over_exact", median(t_exact) / median(t_ours)}};
}

// Part 2: GaLore (r = d/4, T = 200) against AdamW on one weight of the shape.
// The median time of a refresh step: before each, `optimizer`'s state is rewound to k = T, so that
// `step` refreshes every projector (warm from the current one) and then updates.
double refresh_step_seconds(optim::LowRankAdam& optimizer, int64_t T, int repeats,
                            const std::function<void()>& step) {
  const optim::NamedTensors saved = optimizer.state_tensors();
  std::vector<double> t;
  for (int i = 0; i < std::max(repeats, 1); ++i) {
    optimizer.load_state(saved, T);
    const auto t0 = Clock::now();
    step();
    t.push_back(seconds_since(t0));
  }
  return median(t);
}

// A step time averaged over an update gap T: one refresh step and T − 1 plain steps.
double amortised_seconds(double refresh_step, double step, int64_t T) {
  return (refresh_step + static_cast<double>(T - 1) * step) / static_cast<double>(T);
}

OrderedJson galore_case(const Shape& shape, int repeats, double drift, int64_t tokens, double exact_seconds) {
  const int64_t m = shape.m, n = shape.n, r = std::min(m, n) / 4, T = 200;
  GradientSequence seq(m, n, r, drift, 2000 + static_cast<uint64_t>(m * 7 + n));
  at::Generator gen = at::detail::createCPUGenerator(3);
  const std::string name = "model.layers.0.mlp.down_proj.weight";
  at::Tensor w_galore = at::randn({m, n}, gen) * 0.02;
  at::Tensor w_adamw = w_galore.clone();
  const at::Tensor G0 = seq.next();
  w_galore.mutable_grad() = G0;
  w_adamw.mutable_grad() = G0.clone();

  optim::LowRankAdam galore = optim::make_optimizer(
      "galore", {{name, w_galore}}, {{"rank", r}, {"update_gap", T}, {"projector", "randomized_svd"}});
  optim::AdamW adamw({{name, w_adamw}}, galore.config().adam);
  galore.step(1e-3);  // k = 0: the cold refresh and the states
  adamw.step(1e-3);
  w_galore.mutable_grad() = seq.next();

  const optim::OptimizerBytes gb = galore.bytes();
  const int64_t adamw_states = adamw.memory()["optimizer_states"].get<int64_t>();

  // Steps 1 .. 2·repeats + 2 < T: no refresh.
  const auto [t_step, t_adamw] =
      bench::paired_median_seconds([&] { galore.step(1e-3); }, [&] { adamw.step(1e-3); }, repeats);
  const double t_refresh_step = refresh_step_seconds(galore, T, repeats, [&] { galore.step(1e-3); });
  const double amortised = amortised_seconds(t_refresh_step, t_step, T);
  const double amortised_exact = t_step + exact_seconds / static_cast<double>(T);

  // Forward + backward GEMMs of y = x Wᵀ on `tokens` tokens: y = x Wᵀ, dx = dy W, dW = dyᵀ x.
  const at::Tensor x = at::randn({tokens, n}, gen), dy = at::randn({tokens, m}, gen);
  const double t_fb = bench::median_seconds(
      [&] {
        at::matmul(x, w_adamw.t());
        at::matmul(dy, w_adamw);
        at::matmul(dy.t(), x);
      },
      repeats);
  // Tokens per optimizer step at which (amortised − adamw) = 15% of (fb(tokens) + adamw).
  auto tokens_for_15pct = [&](double t_amortised) {
    const double extra = t_amortised - t_adamw;
    return std::max(0.0, (extra / 0.15 - t_adamw) / (t_fb / static_cast<double>(tokens)));
  };
  OrderedJson out = {
      {"shape", std::to_string(m) + "x" + std::to_string(n)},
      {"rank", r},
      {"update_gap", T},
      {"bytes",
       {{"adamw_states", adamw_states},
        {"galore_states", gb.optimizer_states},
        {"galore_projector", gb.projectors},
        {"states_over_adamw", double(gb.optimizer_states) / double(adamw_states)},
        {"states_and_projector_over_adamw",
         double(gb.optimizer_states + gb.projectors) / double(adamw_states)}}},
      {"seconds",
       {{"adamw_step", t_adamw},
        {"galore_step", t_step},
        {"galore_refresh_step", t_refresh_step},
        {"galore_amortised", amortised},
        {"exact_svd_refresh", exact_seconds},
        {"galore_exact_amortised", amortised_exact},
        {"linear_fwd_bwd", t_fb}}},
      {"tokens", tokens},
      {"optimizer_overhead", {{"ours", amortised / t_adamw - 1}, {"exact", amortised_exact / t_adamw - 1}}},
      {"train_step_overhead",
       {{"ours", (amortised - t_adamw) / (t_fb + t_adamw)},
        {"exact", (amortised_exact - t_adamw) / (t_fb + t_adamw)}}},
      {"tokens_for_15pct",
       {{"ours", tokens_for_15pct(amortised)}, {"exact", tokens_for_15pct(amortised_exact)}}}};
  return out;
}

// Part 3: a whole training step (forward + backward + optimizer) of a LLaMA-shaped model, GaLore
// against AdamW.
struct ModelStepShape {
  int64_t hidden = 512, layers = 4, batch = 8, seq = 256;
};

OrderedJson model_step_case(const ModelStepShape& shape, int repeats) {
  const at::AutoGradMode grad_mode(true);
  const int64_t T = 200, r = shape.hidden / 4;
  Json config = bench::small_preset_config();
  config["hidden_size"] = shape.hidden;
  config["intermediate_size"] = (8 * shape.hidden / 3 + 31) / 32 * 32;
  config["num_hidden_layers"] = shape.layers;
  config["num_attention_heads"] = shape.hidden / 64;
  config["num_key_value_heads"] = shape.hidden / 64;
  config["tie_word_embeddings"] = false;
  const nn::ModelConfig model_config = nn::ModelConfig::from_json(config, "bench model");
  nn::Model model_adamw = nn::Model::random(model_config, 0),
            model_galore = nn::Model::random(model_config, 0),
            model_exact = nn::Model::random(model_config, 0);
  auto trainable = [](nn::Model& model) {
    optim::NamedTensors params;
    for (auto& [name, t] : model.named_tensors()) params.emplace_back(name, t.requires_grad_(true));
    return params;
  };
  optim::AdamW adamw(trainable(model_adamw), optim::AdamConfig{});
  optim::LowRankAdam galore = optim::make_optimizer(
      "galore", trainable(model_galore), {{"rank", r}, {"update_gap", T}, {"projector", "randomized_svd"}});
  optim::LowRankAdam galore_exact = optim::make_optimizer(
      "galore", trainable(model_exact), {{"rank", r}, {"update_gap", T}, {"projector", "svd"}});
  // Parameters and, of them, the ones GaLore projects: the state ratio over those alone is
  // GaLore's own (moments 2·r·D against 2·m·n, + the projector m·r or r·n).
  int64_t weights = 0, projected = 0;
  for (const auto& [name, t] : model_adamw.named_tensors()) {
    weights += t.numel();
    if (optim::is_projectable(name, t, galore.config().target_modules)) projected += t.numel();
  }
  at::Generator gen = at::detail::createCPUGenerator(5);
  const at::Tensor windows =
      at::randint(model_config.vocab_size, {shape.batch, shape.seq + 1}, gen, at::kLong);
  auto train_step = [&](nn::Model& model, optim::Optimizer& optimizer) {
    optimizer.zero_grad();
    train::lm_loss(model, windows).backward();
    optimizer.step(1e-3);
  };
  train_step(model_galore, galore);  // k = 0: the cold refreshes and the states
  train_step(model_exact, galore_exact);
  const auto [t_galore, t_adamw] = bench::paired_median_seconds(
      [&] { train_step(model_galore, galore); }, [&] { train_step(model_adamw, adamw); }, repeats);
  const double t_refresh =
      refresh_step_seconds(galore, T, repeats, [&] { train_step(model_galore, galore); });
  const double t_refresh_exact =
      refresh_step_seconds(galore_exact, T, repeats, [&] { train_step(model_exact, galore_exact); });
  const double amortised = amortised_seconds(t_refresh, t_galore, T);
  const double amortised_exact = amortised_seconds(t_refresh_exact, t_galore, T);
  const optim::OptimizerBytes gb = galore.bytes();
  const int64_t adamw_states = adamw.memory()["optimizer_states"].get<int64_t>();
  const int64_t adamw_projected = 2 * projected * static_cast<int64_t>(sizeof(float));
  const int64_t galore_projected = gb.optimizer_states - (adamw_states - adamw_projected);
  return {{"model",
           {{"hidden", shape.hidden},
            {"layers", shape.layers},
            {"intermediate", model_config.intermediate_size},
            {"vocab", model_config.vocab_size},
            {"parameters", weights}}},
          {"tokens_per_step", shape.batch * shape.seq},
          {"rank", r},
          {"update_gap", T},
          {"bytes",
           {{"adamw_states", adamw_states},
            {"galore_states", gb.optimizer_states},
            {"galore_projectors", gb.projectors},
            {"projected_weights", projected},
            // AdamW's states of the projected weights, and GaLore's for them: its states less the
            // AdamW states it keeps for the rest (the same bytes as AdamW's for those tensors).
            {"projected_states_over_adamw", double(galore_projected) / double(adamw_projected)},
            {"projected_states_and_projectors_over_adamw",
             double(galore_projected + gb.projectors) / double(adamw_projected)}}},
          {"seconds",
           {{"adamw_step", t_adamw},
            {"galore_step", t_galore},
            {"galore_refresh_step", t_refresh},
            {"galore_exact_refresh_step", t_refresh_exact},
            {"galore_amortised", amortised},
            {"galore_exact_amortised", amortised_exact}}},
          {"step_overhead", {{"ours", amortised / t_adamw - 1}, {"exact", amortised_exact / t_adamw - 1}}}};
}

}  // namespace

int main(int argc, char** argv) {
  std::string shapes_arg = "1024x1024,2048x2048,4096x4096,4096x11008";
  int64_t rank = 0;
  int refreshes = 4, repeats = 3;
  double drift = 0.3;
  int64_t tokens = 512;
  bool json = false, refresh_only = false, model_step_only = false;
  ModelStepShape model_step;
  for (int i = 1; i < argc; ++i) {
    const bool has = i + 1 < argc;
    if (!std::strcmp(argv[i], "--shapes") && has)
      shapes_arg = argv[++i];
    else if (!std::strcmp(argv[i], "--quick"))
      shapes_arg = "512x512,1024x2752";
    else if (!std::strcmp(argv[i], "--rank") && has)
      rank = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--refreshes") && has)
      refreshes = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--repeats") && has)
      repeats = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--drift") && has)
      drift = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--tokens") && has)
      tokens = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--json"))
      json = true;
    else if (!std::strcmp(argv[i], "--refresh-only"))
      refresh_only = true;
    else if (!std::strcmp(argv[i], "--model-step-only"))
      model_step_only = true;
    else if (!std::strcmp(argv[i], "--model-hidden") && has)
      model_step.hidden = std::max<int64_t>(64, std::atoll(argv[++i]) / 64 * 64);
    else if (!std::strcmp(argv[i], "--model-layers") && has)
      model_step.layers = std::max<int64_t>(1, std::atoll(argv[++i]));
    else if (!std::strcmp(argv[i], "--model-batch") && has)
      model_step.batch = std::max<int64_t>(1, std::atoll(argv[++i]));
    else if (!std::strcmp(argv[i], "--model-seq") && has)
      model_step.seq = std::max<int64_t>(1, std::atoll(argv[++i]));
    else {
      std::fprintf(stderr, "bench_projectors: unknown argument %s (see the header of bench/projectors.cpp)\n",
                   argv[i]);
      return 1;
    }
  }
  keep_freed_memory();  // as the lowrank program does
  configure_threads(0);
  at::NoGradGuard no_grad;

  OrderedJson refresh = OrderedJson::array(), memory = OrderedJson::array();
  for (const Shape& s : parse_shapes(model_step_only ? std::string() : shapes_arg)) {
    const int64_t r =
        rank > 0 ? std::min(rank, std::min(s.m, s.n)) : std::max<int64_t>(1, std::min(s.m, s.n) / 8);
    const OrderedJson one = refresh_case(s, r, refreshes, drift);
    if (!json) {
      std::printf(
          "%-10s r=%-4lld exact %8.3f s | ours %7.3f s  E/E* %.4f (stale %.4f) | cold %7.3f s  E/E* %.4f "
          "| E* %.4f | ours %.2fx faster than cold, %.1fx than exact\n",
          one["shape"].get<std::string>().c_str(), static_cast<long long>(r),
          one["seconds"]["exact"].get<double>(), one["seconds"]["ours"].get<double>(),
          one["energy_over_exact_last"]["ours"].get<double>(),
          one["energy_over_exact_last"]["stale"].get<double>(), one["seconds"]["cold"].get<double>(),
          one["energy_over_exact_last"]["cold"].get<double>(), one["energy_last"]["exact"].get<double>(),
          one["ours_speedup_over_cold"].get<double>(), one["ours_speedup_over_exact"].get<double>());
      std::fflush(stdout);
    }
    refresh.push_back(one);
    if (refresh_only) continue;
    const OrderedJson g = galore_case(s, repeats, drift, tokens, one["seconds"]["exact"].get<double>());
    if (!json) {
      std::printf(
          "%-10s galore r=%-4lld states %.3f of adamw (+projector %.3f) | step %.4f s, refresh step %.4f s, "
          "amortised %.4f s vs adamw %.4f s: %+.0f%% (exact refresh %+.0f%%) | fwd+bwd %lld tokens %.3f s: "
          "%+.1f%% of a train step; <=15%% from %.0f tokens\n",
          g["shape"].get<std::string>().c_str(), static_cast<long long>(g["rank"].get<int64_t>()),
          g["bytes"]["states_over_adamw"].get<double>(),
          g["bytes"]["states_and_projector_over_adamw"].get<double>(),
          g["seconds"]["galore_step"].get<double>(), g["seconds"]["galore_refresh_step"].get<double>(),
          g["seconds"]["galore_amortised"].get<double>(), g["seconds"]["adamw_step"].get<double>(),
          100 * g["optimizer_overhead"]["ours"].get<double>(),
          100 * g["optimizer_overhead"]["exact"].get<double>(), static_cast<long long>(tokens),
          g["seconds"]["linear_fwd_bwd"].get<double>(), 100 * g["train_step_overhead"]["ours"].get<double>(),
          g["tokens_for_15pct"]["ours"].get<double>());
      std::fflush(stdout);
    }
    memory.push_back(g);
  }
  OrderedJson whole_step = nullptr;
  if (!refresh_only) {
    whole_step = model_step_case(model_step, repeats);
    if (!json) {
      const OrderedJson& w = whole_step;
      std::printf(
          "model h%lld L%lld (%.1fM parameters), %lld tokens/step, galore r=%lld T=%lld: adamw step %.3f s, "
          "galore step %.3f s, refresh step %.3f s (exact SVD %.3f s), amortised %.3f s: %+.1f%% "
          "(exact SVD %+.1f%%) | states %.3f of adamw; attention/MLP weights: %.3f (+projectors %.3f)\n",
          static_cast<long long>(model_step.hidden), static_cast<long long>(model_step.layers),
          w["model"]["parameters"].get<double>() / 1e6,
          static_cast<long long>(w["tokens_per_step"].get<int64_t>()),
          static_cast<long long>(w["rank"].get<int64_t>()),
          static_cast<long long>(w["update_gap"].get<int64_t>()), w["seconds"]["adamw_step"].get<double>(),
          w["seconds"]["galore_step"].get<double>(), w["seconds"]["galore_refresh_step"].get<double>(),
          w["seconds"]["galore_exact_refresh_step"].get<double>(),
          w["seconds"]["galore_amortised"].get<double>(), 100 * w["step_overhead"]["ours"].get<double>(),
          100 * w["step_overhead"]["exact"].get<double>(),
          double(w["bytes"]["galore_states"].get<int64_t>()) /
              double(w["bytes"]["adamw_states"].get<int64_t>()),
          w["bytes"]["projected_states_over_adamw"].get<double>(),
          w["bytes"]["projected_states_and_projectors_over_adamw"].get<double>());
    }
  }
  if (json) {
    const OrderedJson out = {{"threads", thread_summary()},
                             {"drift", drift},
                             {"refresh", refresh},
                             {"galore_vs_adamw", memory},
                             {"model_step", whole_step}};
    std::printf("%s\n", out.dump(2).c_str());
  }
  return 0;
}
