// Reproduction of Fang et al., 2024, "Functional Bayesian Tucker Decomposition for Continuous-indexed
// Tensor Data" (ICLR, arXiv:2311.04829), with kernel_methods/funbat.h.
//
// The paper's claim: treating continuous indices as inputs of GP factor functions (FunBaT) predicts
// better than discretising them into a tensor, at a cost linear in the number of observations
// thanks to the state-space (Kalman/RTS) form of the GPs. Here: a smooth rank-2 function on [0, 1]²,
//   f(x₁, x₂) = Σ_rs W_rs g_r(x₁) h_s(x₂),  g = (sin 2πx, e^{−2x}),  h = (cos πx, x sin 3πx),
// 500 observations at uniform random (irregular) coordinates with noise N(0, 0.1²), and the RMSE
// against the noise-free f at 2000 unseen random coordinates. Three predictors on the same data:
//  - FunBaT, rank 2, Matérn-3/2 factors with ℓ = 0.3, 50 sweeps;
//  - the exact GP with the product kernel σ_f² k₃/₂(x₁)k₃/₂(x₂) (the same ℓ), σ_f² = var(y),
//    the true noise variance, by Cholesky (kernel_methods/krr.h) — the O(n³) reference;
//  - a binned discrete Tucker: each coordinate cut into B equal bins, a rank-2 two-mode Tucker
//    (U 𝒲 Vᵀ, the core absorbed into U) fitted to the binned entries by alternating ridge least
//    squares (ridge 0.1, 30 sweeps), predicting the fitted value of the test point's cell; B from
//    {5, 10, 20, 40} chosen by the RMSE on a held-out fifth of the training entries (fitted on the
//    other four fifths), then refitted on all of them.
// Time: the fit of FunBaT and of the exact GP at n = 1000 … 8000 (one seed), and the log-log slopes.
#include <chrono>
#include <cmath>
#include <numbers>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/kernel_methods/dataset.h"
#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/krr.h"
#include "repro/kernels/repro.h"

namespace lowrank::repro_kernels {
namespace {

using namespace kernel_methods;

constexpr double kNoise = 0.1, kLengthscale = 0.3;
constexpr int64_t kRank = 2;

at::Tensor truth(const at::Tensor& x) {
  const double pi = std::numbers::pi;
  const at::Tensor x1 = x.select(1, 0), x2 = x.select(1, 1);
  const at::Tensor g0 = at::sin(2 * pi * x1), g1 = at::exp(-2 * x1);
  const at::Tensor h0 = at::cos(pi * x2), h1 = x2 * at::sin(3 * pi * x2);
  return 1.0 * g0 * h0 + 0.6 * g0 * h1 - 0.8 * g1 * h0 + 0.9 * g1 * h1;
}

struct Draw {
  at::Tensor x, y, x_test, f_test;
};
Draw draw(int64_t n, int64_t n_test, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  Draw d;
  d.x = at::rand({n, 2}, gen, at::kDouble);
  d.y = truth(d.x) + kNoise * at::empty({n}, at::kDouble).normal_(0, 1, gen);
  d.x_test = at::rand({n_test, 2}, gen, at::kDouble);
  d.f_test = truth(d.x_test);
  return d;
}

double rmse(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).square().mean().sqrt().item<double>();
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

at::Tensor funbat_fit_predict(const Draw& d, int64_t iterations, uint64_t seed) {
  auto est = create_estimator(
      "funbat", {{"rank", kRank}, {"nu", 1.5}, {"lengthscale", kLengthscale}, {"iterations", iterations}},
      seed);
  est->fit(make_dataset(d.x, d.y, "funbat repro"));
  return est->predict(d.x_test);
}

// The product Matérn-3/2 Gram k(x₁, x₁') k(x₂, x₂').
at::Tensor product_gram(const at::Tensor& a, const at::Tensor& b) {
  const KernelSpec spec{"matern", kLengthscale, 1.5};
  return gram(spec, a.slice(1, 0, 1), b.slice(1, 0, 1)) * gram(spec, a.slice(1, 1, 2), b.slice(1, 1, 2));
}

at::Tensor exact_gp_fit_predict(const Draw& d) {
  const at::Tensor centre = d.y.mean();
  const at::Tensor yc = d.y - centre;
  const double signal = yc.var().item<double>();
  const KrrSolution sol = krr_solve(signal * product_gram(d.x, d.x), yc, kNoise * kNoise);
  return signal * at::mv(product_gram(d.x_test, d.x), sol.alpha) + centre;
}

// Bin index in [0, bins) of coordinates in [0, 1].
at::Tensor bin_of(const at::Tensor& c, int64_t bins) {
  return (c * static_cast<double>(bins)).floor().clamp(0, static_cast<double>(bins - 1)).to(at::kLong);
}

// One ridge least-squares update of every row of `target` [B, R] given the other mode's rows at
// each entry: row b minimises Σ_{n in bin b} (y_n − target_b·other_n)² + ridge‖target_b‖².
at::Tensor ridge_rows(const at::Tensor& bins, const at::Tensor& other, const at::Tensor& y, int64_t count,
                      double ridge) {
  const int64_t r = other.size(1);
  const at::Tensor gram_rows =
      at::zeros({count, r, r}, at::kDouble).index_add_(0, bins, other.unsqueeze(2) * other.unsqueeze(1));
  const at::Tensor rhs = at::zeros({count, r}, at::kDouble).index_add_(0, bins, other * y.unsqueeze(1));
  return at::linalg_solve(gram_rows + ridge * at::eye(r, at::kDouble), rhs);
}

// Fits the binned Tucker to entries (x, y) and predicts at x_query.
at::Tensor binned_tucker_fit_predict(const at::Tensor& x, const at::Tensor& y, const at::Tensor& x_query,
                                     int64_t bins, uint64_t seed) {
  const at::Tensor b1 = bin_of(x.select(1, 0), bins), b2 = bin_of(x.select(1, 1), bins);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor u = at::rand({bins, kRank}, gen, at::kDouble), v = at::rand({bins, kRank}, gen, at::kDouble);
  for (int sweep = 0; sweep < 30; ++sweep) {
    u = ridge_rows(b1, v.index_select(0, b2), y, bins, 0.1);
    v = ridge_rows(b2, u.index_select(0, b1), y, bins, 0.1);
  }
  const at::Tensor t1 = bin_of(x_query.select(1, 0), bins), t2 = bin_of(x_query.select(1, 1), bins);
  return (u.index_select(0, t1) * v.index_select(0, t2)).sum(1);
}

// The bin count of the grid with the lowest RMSE on the last fifth of the training entries when
// fitted on the first four fifths (the coordinates are i.i.d., so the split needs no shuffling).
int64_t validated_bins(const Draw& d, const std::vector<int64_t>& grid, uint64_t seed) {
  const int64_t n = d.x.size(0), fit = n - n / 5;
  const at::Tensor x_fit = d.x.slice(0, 0, fit), y_fit = d.y.slice(0, 0, fit);
  const at::Tensor x_val = d.x.slice(0, fit), y_val = d.y.slice(0, fit);
  double best = INFINITY;
  int64_t best_bins = grid.front();
  for (int64_t bins : grid) {
    const double e = rmse(binned_tucker_fit_predict(x_fit, y_fit, x_val, bins, seed), y_val);
    if (e < best) best = e, best_bins = bins;
  }
  return best_bins;
}

ReproResult run(const ReproOptions& options) {
  const int64_t n = options.quick ? 200 : 500, n_test = options.quick ? 500 : 2000;
  const int64_t iterations = options.quick ? 25 : 50;
  const std::vector<int64_t> bin_grid =
      options.quick ? std::vector<int64_t>{5, 10} : std::vector<int64_t>{5, 10, 20, 40};
  ReproResult out;
  Table accuracy{"Test RMSE against the noise-free function at unseen coordinates (noise σ = 0.1)",
                 {"seed", "FunBaT", "exact product GP", "binned Tucker (validated B)", "B", "FunBaT / GP",
                  "FunBaT / binned"},
                 {}};
  std::vector<double> fun, gp, binned;
  for (int64_t seed = 0; seed < options.seeds; ++seed) {
    const Draw d = draw(n, n_test, 100 + static_cast<uint64_t>(seed));
    const double f = rmse(funbat_fit_predict(d, iterations, static_cast<uint64_t>(seed)), d.f_test);
    const double g = rmse(exact_gp_fit_predict(d), d.f_test);
    const int64_t best_bins = validated_bins(d, bin_grid, static_cast<uint64_t>(seed));
    const double best =
        rmse(binned_tucker_fit_predict(d.x, d.y, d.x_test, best_bins, static_cast<uint64_t>(seed)), d.f_test);
    fun.push_back(f);
    gp.push_back(g);
    binned.push_back(best);
    accuracy.rows.push_back({seed, f, g, best, best_bins, f / g, f / best});
  }
  const double mf = mean(fun), mg = mean(gp), mb = mean(binned);
  accuracy.rows.push_back({"mean", mf, mg, mb, "", mf / mg, mf / mb});
  out.tables.push_back(accuracy);

  const std::vector<int64_t> sizes =
      options.quick ? std::vector<int64_t>{200, 400, 800} : std::vector<int64_t>{1000, 2000, 4000, 8000};
  Table timing{"Fit + predict time (s) against n (seed 0, 200 test points)", {"n", "FunBaT", "exact GP"}, {}};
  std::vector<double> ns, t_fun, t_gp;
  for (int64_t size : sizes) {
    const Draw d = draw(size, 200, 7);
    auto start = std::chrono::steady_clock::now();
    funbat_fit_predict(d, iterations, 0);
    const double tf = seconds_since(start);
    start = std::chrono::steady_clock::now();
    exact_gp_fit_predict(d);
    const double tg = seconds_since(start);
    ns.push_back(static_cast<double>(size));
    t_fun.push_back(tf);
    t_gp.push_back(tg);
    timing.rows.push_back({size, tf, tg});
  }
  const double slope_fun = loglog_slope(ns, t_fun), slope_gp = loglog_slope(ns, t_gp);
  timing.rows.push_back({"log-log slope", slope_fun, slope_gp});
  out.tables.push_back(timing);

  out.claims.push_back({"rmse_near_exact_gp", "FunBaT's mean test RMSE ≤ 1.1× the exact product-kernel GP's",
                        "FunBaT is as accurate as GP-based continuous models at a fraction of the cost",
                        mf <= 1.1 * mg,
                        "FunBaT " + format_number(mf) + " vs exact GP " + format_number(mg) + " (ratio " +
                            format_number(mf / mg) + "; per seed FunBaT " + join_numbers(fun) + "; GP " +
                            join_numbers(gp) + ")",
                        false});
  out.claims.push_back(
      {"rmse_beats_binned_tucker",
       "FunBaT's mean test RMSE ≤ 0.7× the binned discrete Tucker's (bin count chosen on held-out "
       "training entries)",
       "FunBaT beats discretised tensor methods on continuous-indexed data", mf <= 0.7 * mb,
       "FunBaT " + format_number(mf) + " vs binned Tucker " + format_number(mb) + " (ratio " +
           format_number(mf / mb) + "; per seed binned " + join_numbers(binned) + ")",
       false});
  out.claims.push_back(
      {"time_slope_linear_vs_cubic", "fit-time log-log slope in n: FunBaT in [0.7, 1.3], exact GP ≥ 2.5",
       "cost linear in the number of observations (state space) against O(n³) for a GP",
       slope_fun >= 0.7 && slope_fun <= 1.3 && slope_gp >= 2.5,
       "FunBaT " + format_number(slope_fun) + ", exact GP " + format_number(slope_gp) + " over n = " +
           join_numbers(ns) + " (FunBaT s " + join_numbers(t_fun) + "; GP s " + join_numbers(t_gp) + ")",
       false});
  out.setup = "f = Σ W_rs g_r(x₁)h_s(x₂) on [0, 1]², rank 2; " + std::to_string(n) +
              " noisy (σ = 0.1) observations at uniform random coordinates, " + std::to_string(n_test) +
              " unseen test coordinates; FunBaT rank 2, Matérn-3/2, ℓ = 0.3, " + std::to_string(iterations) +
              " sweeps; exact GP product Matérn-3/2, ℓ = 0.3, true noise; binned Tucker rank 2, B ∈ {" +
              join_numbers(std::vector<double>(bin_grid.begin(), bin_grid.end())) +
              "} chosen on a held-out fifth of the training entries; " + std::to_string(options.seeds) +
              " seeds" + (options.quick ? " (quick: smaller n, fewer sweeps)" : "");
  return out;
}

}  // namespace

KernelRepro funbat_repro() {
  return {
      "funbat",
      "Fang et al. 2024, \"Functional Bayesian Tucker Decomposition for Continuous-indexed Tensor Data\" "
      "(ICLR)",
      "GP factor functions in state-space form predict continuous-indexed tensors better than binning, at "
      "linear cost",
      &run};
}

}  // namespace lowrank::repro_kernels
