// Reproduction of Sehanobish, Choromanski et al., 2024, "Scalable Neural Network Kernels" (ICLR,
// arXiv:2310.13225), with kernel_methods/snnk.h.
//
// (i) Universal random features on the sphere: for f ∈ {cos, sin, gaussian}, pairs (x, w) uniform on
// S⁷ and b ~ U[−1, 1], the URF estimate Re Σ_j φ_j(x)ψ_j(w, b) of f(wᵀx + b) at m = 16 … 4096 features
// (M = 0); RMSE over 256 pairs and 8 independent draws of (G, ξ) per seed and m. The estimator is
// unbiased with i.i.d. features, so the RMSE should fall as m^{−½}: claim, least-squares log-log
// slope in [−0.6, −0.4] for each f.
// (ii) Diabetes (442 × 10): the bundled SNNK-ReLU network (estimator `snnk`, readout by ridge, no
// backpropagation) against a one-hidden-layer ReLU MLP of the same width m trained by full-batch Adam
// on the squared loss. Per seed: a random 80/20 train/test split, the training part split again 75/25
// into fit/validation for tuning; inputs and targets standardised with the training statistics; the
// bundle's λ (log grid 1e-4 … 1e2) and the MLP's learning rate (grid 1e-3, 3e-3, 1e-2, 3e-2) and
// number of steps (≤ 3000, checked every 25) chosen by validation MSE, then both refitted on the whole
// training part and scored on the test part (RMSE in the target's units). Same splits, seeds and
// widths for both. Claim: at every m ≥ 2d the bundle's mean test RMSE is within 10% of the MLP's.
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "lowrank/kernel_methods/dataset.h"
#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/snnk.h"
#include "lowrank/optim/adamw.h"
#include "repro/kernels/repro.h"

namespace lowrank::repro_kernels {
namespace {

using namespace kernel_methods;

at::Tensor unit_rows(int64_t n, int64_t d, at::Generator& gen) {
  const at::Tensor v = at::empty({n, d}, at::kDouble).normal_(0, 1, gen);
  return v / v.norm(2, 1, true);
}

// The MSE of the URF estimate of f over `pairs` random (x, w, b) and `draws` independent draws of
// (G, ξ), for each m; one seed.
std::vector<double> urf_mse(const std::string& f, const std::vector<int64_t>& widths, int64_t pairs,
                            int64_t draws, uint64_t seed) {
  constexpr int64_t d = 8;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const at::Tensor x = unit_rows(pairs, d, gen), w = unit_rows(pairs, d, gen);
  const at::Tensor b = at::empty({pairs}, at::kDouble).uniform_(-1, 1, gen);
  const at::Tensor truth = urf_activation(f, (x * w).sum(1) + b);
  std::vector<double> out;
  for (int64_t m : widths) {
    double mse = 0;
    for (int64_t r = 0; r < draws; ++r) {
      const UrfDraw draw = draw_urf(f, m, d, 0.0, gen);
      const at::Tensor estimate =
          at::real((urf_input_features(draw, x) * urf_weight_features(draw, w, b)).sum(1));
      mse += (estimate - truth).pow(2).mean().item<double>() / static_cast<double>(draws);
    }
    out.push_back(mse);
  }
  return out;
}

struct Split {
  at::Tensor x_fit, y_fit, x_val, y_val, x_train, y_train, x_test, y_test;
  double y_scale = 1;  // the training targets' standard deviation: RMSE back in target units
};

Split split(const Dataset& data, uint64_t seed) {
  const int64_t n = data.x.size(0), n_test = n / 5, n_train = n - n_test, n_val = n_train / 4;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const at::Tensor order = at::randperm(n, gen, at::kLong);
  const at::Tensor train = order.slice(0, 0, n_train), test = order.slice(0, n_train, n);
  const at::Tensor x_train = data.x.index_select(0, train), y_train = data.y.index_select(0, train);
  const at::Tensor x_centre = x_train.mean(0), x_spread = x_train.std(0);
  const double y_centre = y_train.mean().item<double>(), y_spread = y_train.std().item<double>();
  auto xs = [&](const at::Tensor& idx) { return (data.x.index_select(0, idx) - x_centre) / x_spread; };
  auto ys = [&](const at::Tensor& idx) { return (data.y.index_select(0, idx) - y_centre) / y_spread; };
  const at::Tensor fit = train.slice(0, n_val, n_train), val = train.slice(0, 0, n_val);
  return {xs(fit), ys(fit), xs(val), ys(val), xs(train), ys(train), xs(test), ys(test), y_spread};
}

double rmse(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).pow(2).mean().sqrt().item<double>();
}

// The bundled SNNK-ReLU network: λ by validation, refitted on the whole training part.
struct BundleResult {
  double test_rmse = 0, lambda = 0, seconds = 0;
};
BundleResult bundle(const Split& s, int64_t m, uint64_t seed, const std::vector<double>& lambdas) {
  const auto start = std::chrono::steady_clock::now();
  auto fitted = [&](const at::Tensor& x, const at::Tensor& y, double lambda) {
    auto est = create_estimator("snnk", {{"features", m}, {"lambda", lambda}}, seed);
    est->fit(make_dataset(x, y, "diabetes"));
    return est;
  };
  BundleResult r;
  double best = std::numeric_limits<double>::infinity();
  for (double lambda : lambdas) {
    const double val = rmse(fitted(s.x_fit, s.y_fit, lambda)->predict(s.x_val), s.y_val);
    if (val < best) best = val, r.lambda = lambda;
  }
  r.test_rmse = rmse(fitted(s.x_train, s.y_train, r.lambda)->predict(s.x_test), s.y_test) * s.y_scale;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

// One-hidden-layer ReLU MLP y = w₂ᵀReLU(W₁x + b₁) + b₂, PyTorch's default uniform initialisation,
// full-batch Adam with hand-written backpropagation.
struct Mlp {
  at::Tensor w1, b1, w2, b2;
  Mlp(int64_t d, int64_t width, uint64_t seed) {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    const double a1 = 1 / std::sqrt(static_cast<double>(d)), a2 = 1 / std::sqrt(static_cast<double>(width));
    w1 = at::empty({width, d}, at::kDouble).uniform_(-a1, a1, gen);
    b1 = at::empty({width}, at::kDouble).uniform_(-a1, a1, gen);
    w2 = at::empty({width}, at::kDouble).uniform_(-a2, a2, gen);
    b2 = at::empty({1}, at::kDouble).uniform_(-a2, a2, gen);
  }
  at::Tensor forward(const at::Tensor& x) const {
    return at::matmul(at::relu(at::linear(x, w1, b1)), w2) + b2;
  }
};

// Trains for `steps` Adam steps; calls `every(step)` after each multiple of `stride`.
template <typename Every>
void train(Mlp& net, const at::Tensor& x, const at::Tensor& y, double lr, int64_t steps, int64_t stride,
           Every every) {
  optim::AdamConfig config;
  config.beta2 = 0.999;  // torch.optim.Adam's defaults
  config.weight_decay = 0;
  optim::AdamState s_w1, s_b1, s_w2, s_b2;
  const double n = static_cast<double>(x.size(0));
  for (int64_t step = 1; step <= steps; ++step) {
    const at::Tensor pre = at::linear(x, net.w1, net.b1), hidden = at::relu(pre);
    const at::Tensor residual = at::matmul(hidden, net.w2) + net.b2 - y;
    const at::Tensor d_out = residual * (2 / n);  // ∂(mean r²)/∂out
    const at::Tensor d_pre = at::outer(d_out, net.w2) * pre.gt(0);
    optim::adam_update(net.w2, at::matmul(hidden.t(), d_out), s_w2, config, lr);
    optim::adam_update(net.b2, d_out.sum().reshape({1}), s_b2, config, lr);
    optim::adam_update(net.w1, at::matmul(d_pre.t(), x), s_w1, config, lr);
    optim::adam_update(net.b1, d_pre.sum(0), s_b1, config, lr);
    if (step % stride == 0) every(step);
  }
}

struct MlpResult {
  double test_rmse = 0, lr = 0, seconds = 0;
  int64_t steps = 0;
};
MlpResult mlp(const Split& s, int64_t width, uint64_t seed, const std::vector<double>& lrs,
              int64_t max_steps) {
  const auto start = std::chrono::steady_clock::now();
  constexpr int64_t kStride = 25;
  MlpResult r;
  double best = std::numeric_limits<double>::infinity();
  for (double lr : lrs) {
    Mlp net(s.x_fit.size(1), width, seed);
    train(net, s.x_fit, s.y_fit, lr, max_steps, kStride, [&](int64_t step) {
      const double val = rmse(net.forward(s.x_val), s.y_val);
      if (val < best) best = val, r.lr = lr, r.steps = step;
    });
  }
  Mlp net(s.x_train.size(1), width, seed);
  train(net, s.x_train, s.y_train, r.lr, r.steps, r.steps, [](int64_t) {});
  r.test_rmse = rmse(net.forward(s.x_test), s.y_test) * s.y_scale;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

ReproResult run(const ReproOptions& options) {
  ReproResult out;
  // (i) URF on the sphere.
  const std::vector<int64_t> widths =
      options.quick ? std::vector<int64_t>{16, 64, 256, 1024} : std::vector<int64_t>{16, 64, 256, 1024, 4096};
  const int64_t pairs = options.quick ? 64 : 256, draws = options.quick ? 4 : 8;
  Table urf_table{"URF on S⁷: RMSE of Re Σφψ against f(wᵀx + b), pooled over seeds and draws", {"f"}, {}};
  for (int64_t m : widths) urf_table.columns.push_back("m = " + std::to_string(m));
  urf_table.columns.push_back("log-log slope");
  std::vector<double> ms(widths.begin(), widths.end());
  for (const std::string& f : urf_activations()) {
    std::vector<std::vector<double>> per_seed;
    for (int64_t seed = 0; seed < options.seeds; ++seed)
      per_seed.push_back(urf_mse(f, widths, pairs, draws, 100 + seed));
    // RMSE = √(mean MSE): the per-feature variance is heavy-tailed (e^{|ξ|‖x + w‖²}), so the draws
    // are pooled before the root rather than averaging roots.
    std::vector<double> curve = mean_over_seeds(per_seed);
    for (double& v : curve) v = std::sqrt(v);
    const double slope = loglog_slope(ms, curve);
    std::vector<OrderedJson> row = {f};
    for (double v : curve) row.push_back(v);
    row.push_back(slope);
    urf_table.rows.push_back(row);
    out.claims.push_back(
        {"urf_slope_half_" + f, "RMSE log-log slope in m within [−0.6, −0.4] for f = " + f,
         "URF estimates f(wᵀx + b) with error ∝ m^{−½}", slope >= -0.6 && slope <= -0.4,
         "slope " + format_number(slope) + "; RMSE " + join_numbers(curve) + " at m = " + join_numbers(ms),
         // The Gaussian's ξ ~ N(0, 1) makes the variance heavy-tailed: not robust at quick sizes.
         f != "gaussian"});
  }
  out.tables.push_back(urf_table);

  // (ii) Diabetes: bundle vs backprop MLP.
  const Dataset diabetes = read_builtin_dataset("diabetes");
  const int64_t d = diabetes.x.size(1);
  const std::vector<int64_t> features = options.quick ? std::vector<int64_t>{2 * d, 4 * d}
                                                      : std::vector<int64_t>{d, 2 * d, 4 * d, 8 * d, 16 * d};
  const std::vector<double> lambdas = log_grid(1e-4, 1e2, 13);
  const std::vector<double> lrs = {1e-3, 3e-3, 1e-2, 3e-2};
  const int64_t max_steps = options.quick ? 600 : 3000;
  Table table{
      "Diabetes: test RMSE (target units), bundled SNNK-ReLU (ridge readout) vs backprop MLP of width m",
      {"m", "m/d", "bundle RMSE", "MLP RMSE", "bundle / MLP", "bundle per seed", "MLP per seed",
       "bundle λ per seed", "MLP lr / steps per seed", "bundle s", "MLP s"},
      {}};
  std::vector<std::string> failures;
  std::vector<double> ratios;
  for (int64_t m : features) {
    std::vector<double> b_rmse, m_rmse, b_lambda;
    std::string mlp_choice;
    double b_seconds = 0, m_seconds = 0;
    for (int64_t seed = 0; seed < options.seeds; ++seed) {
      const Split s = split(diabetes, 200 + seed);
      const BundleResult br = bundle(s, m, 300 + seed, lambdas);
      const MlpResult mr = mlp(s, m, 300 + seed, lrs, max_steps);
      b_rmse.push_back(br.test_rmse);
      m_rmse.push_back(mr.test_rmse);
      b_lambda.push_back(br.lambda);
      mlp_choice +=
          (mlp_choice.empty() ? "" : "; ") + format_number(mr.lr) + " / " + std::to_string(mr.steps);
      b_seconds += br.seconds;
      m_seconds += mr.seconds;
    }
    const double ratio = mean(b_rmse) / mean(m_rmse);
    table.rows.push_back({m, static_cast<double>(m) / static_cast<double>(d), mean(b_rmse), mean(m_rmse),
                          ratio, join_numbers(b_rmse), join_numbers(m_rmse), join_numbers(b_lambda, 2),
                          mlp_choice, b_seconds, m_seconds});
    if (m >= 2 * d) {
      ratios.push_back(ratio);
      if (ratio > 1.1) failures.push_back("m = " + std::to_string(m) + ": " + format_number(ratio));
    }
  }
  out.tables.push_back(table);
  out.claims.push_back(
      {"bundle_within_10_percent_of_mlp",
       "at every m ≥ 2d the bundle's mean test RMSE ≤ 1.1 × the MLP's (same width, data, seeds)",
       "the bundled SNNK network solved in closed form matches backprop training", failures.empty(),
       "bundle/MLP RMSE ratios at m ≥ 2d: " + join_numbers(ratios) +
           (failures.empty() ? ""
                             : "; above 1.1 at " +
                                   [&] {
                                     std::string s;
                                     for (const auto& f : failures) s += (s.empty() ? "" : ", ") + f;
                                     return s;
                                   }()),
       false});
  out.setup =
      "URF: S⁷, " + std::to_string(pairs) + " pairs (x, w, b ~ U[−1, 1]) and " + std::to_string(draws) +
      " draws of (G, ξ) per seed, M = 0, m = " + join_numbers(ms) +
      "; diabetes: 80/20 split per seed, 75/25 fit/validation inside training, " +
      "bundle λ over 13 log-spaced values in [1e-4, 1e2], MLP Adam lr in {1e-3, 3e-3, 1e-2, 3e-2} and " +
      "steps ≤ " + std::to_string(max_steps) + " (every 25) by validation; " + std::to_string(options.seeds) +
      " seeds" + (options.quick ? " (quick: fewer pairs, widths and steps)" : "");
  return out;
}

}  // namespace

KernelRepro snnk_repro() {
  return {"snnk", "Sehanobish, Choromanski et al. 2024, \"Scalable Neural Network Kernels\" (ICLR)",
          "URFs estimate f(wᵀx + b) at the Monte Carlo rate; bundled SNNK layers solved in closed form match "
          "backprop-trained networks without backpropagation",
          &run};
}

}  // namespace lowrank::repro_kernels
