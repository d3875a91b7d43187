// Reproduction of Chae, Kim, Kim & Lin, 2023, "A likelihood approach to nonparametric estimation of a
// singular distribution using deep generative models" (JMLR 24, arXiv:2105.04046), with
// kernel_methods/singular_likelihood.h.
//
// The paper's claims: for data on an r-dimensional manifold in R^D, the sieve MLE of X = G(Z) + σε
// fitted to instance-noise-perturbed data (X̃ = X + τε, σ ≥ τ) is consistent, at a rate governed by r
// rather than D; without the perturbation the likelihood is unbounded (σ → 0) and the MLE is not
// consistent. Here: the unit circle (r = 1) and the flat torus (cos a, sin a, cos b, sin b)/√2 (r = 2),
// each embedded in R^D, D ∈ {10, 30}, by a random orthogonal map; n training points; the method fitted
// with latent dimension r at τ = 0.05 (σ ≥ τ) and, at the middle n only, at τ = 0 (no floor: the plain
// MLE). The error is the
// sliced W₁ between 4000 generated points G(Z) and 4000 fresh points of the truth (200 directions);
// the same distance between two independent truth samples is reported as the estimate's floor.
// Checked: at τ > 0 the error falls with n, with log-log slopes in n that agree between D = 10 and
// D = 30 (within 0.2); at τ = 0 the fitted σ̂ collapses (below τ/5 = 0.01 at every size).
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <tuple>

#include "lowrank/kernel_methods/singular_likelihood.h"
#include "repro/kernels/repro.h"

namespace lowrank::repro_kernels {
namespace {

using namespace kernel_methods;

constexpr double kTau = 0.05, kCollapse = kTau / 5, kSlopeTolerance = 0.2;
constexpr int64_t kEvaluation = 4000, kDirections = 200;

// n points of the manifold of intrinsic dimension r (1: circle, 2: torus) in R^D through `embedding`.
at::Tensor manifold(int64_t r, const at::Tensor& embedding, int64_t n, at::Generator& gen) {
  const at::Tensor angles = at::empty({n, r}, at::kDouble).uniform_(0, 2 * std::numbers::pi, gen);
  const at::Tensor flat = at::stack({at::cos(angles), at::sin(angles)}, 2).reshape({n, 2 * r}) /
                          std::sqrt(static_cast<double>(r));
  return at::matmul(flat, embedding.t());
}

struct Cell {
  std::vector<double> error, sigma, floor;
};

ReproResult run(const ReproOptions& options) {
  const std::vector<int64_t> dims = {10, 30};
  const std::vector<int64_t> intrinsic = options.quick ? std::vector<int64_t>{1} : std::vector<int64_t>{1, 2};
  const std::vector<int64_t> sizes =
      options.quick ? std::vector<int64_t>{50, 200} : std::vector<int64_t>{100, 300, 1000};
  // τ = 0 is fitted at the middle size only: the collapse needs one size, and the row its time.
  const int64_t collapse_size = sizes[sizes.size() / 2];
  const int64_t seeds = options.quick ? 1 : options.seeds;
  SingularLikelihoodOptions fit_options;
  fit_options.steps = options.quick ? 100 : 300;
  fit_options.samples = 128;
  // cells[r][D][tau][n]
  std::map<std::tuple<int64_t, int64_t, bool, int64_t>, Cell> cells;
  for (int64_t r : intrinsic) {
    fit_options.latent_dim = r;
    for (int64_t dim : dims) {
      for (int64_t seed = 0; seed < seeds; ++seed) {
        at::Generator gen =
            at::detail::createCPUGenerator(static_cast<uint64_t>(5000 + 100 * r + dim + 7 * seed));
        const at::Tensor embedding =
            std::get<0>(at::linalg_qr(at::empty({dim, 2 * r}, at::kDouble).normal_(0, 1, gen)));
        const at::Tensor pool = manifold(r, embedding, sizes.back(), gen);
        const at::Tensor truth = manifold(r, embedding, kEvaluation, gen);
        const double floor =
            sliced_wasserstein1(manifold(r, embedding, kEvaluation, gen), truth, kDirections, gen);
        for (int64_t n : sizes) {
          for (bool perturbed : {true, false}) {
            if (!perturbed && n != collapse_size) continue;
            fit_options.tau = perturbed ? kTau : 0.0;
            at::Generator fit_gen = at::detail::createCPUGenerator(static_cast<uint64_t>(6000 + seed));
            const SingularLikelihoodFit fit =
                singular_likelihood_fit(pool.slice(0, 0, n), fit_options, fit_gen);
            const at::Tensor generated =
                fit.generator(at::empty({kEvaluation, r}, at::kDouble).normal_(0, 1, fit_gen));
            Cell& cell = cells[{r, dim, perturbed, n}];
            cell.error.push_back(sliced_wasserstein1(generated, truth, kDirections, fit_gen));
            cell.sigma.push_back(fit.sigma);
            cell.floor.push_back(floor);
          }
        }
      }
    }
  }

  ReproResult out;
  Table table{"Sliced W₁ between G(Z) and the truth, and the fitted σ̂ (means over seeds)",
              {"manifold", "D", "n", "τ = 0.05: SW₁", "σ̂", "τ = 0: SW₁", "σ̂", "SW₁ floor (truth vs truth)"},
              {}};
  std::vector<double> size_x(sizes.begin(), sizes.end());
  std::string slopes_text, falls_text;
  bool slopes_agree = true, falls = true, collapsed = true;
  double largest_sigma0 = 0;
  for (int64_t r : intrinsic) {
    const std::string name = r == 1 ? "circle" : "torus";
    std::vector<double> slope_by_dim;
    for (int64_t dim : dims) {
      std::vector<double> curve;
      for (int64_t n : sizes) {
        const Cell& on = cells[{r, dim, true, n}];
        const Cell& off = cells[{r, dim, false, n}];
        const bool has_off = !off.sigma.empty();
        table.rows.push_back({name, dim, n, mean(on.error), mean(on.sigma),
                              has_off ? OrderedJson(mean(off.error)) : OrderedJson("not run"),
                              has_off ? OrderedJson(mean(off.sigma)) : OrderedJson(""), mean(on.floor)});
        curve.push_back(mean(on.error));
        for (double s : off.sigma) largest_sigma0 = std::max(largest_sigma0, s);
      }
      const double slope = loglog_slope(size_x, curve);
      slope_by_dim.push_back(slope);
      falls = falls && curve.back() < curve.front();
      falls_text += (falls_text.empty() ? "" : "; ") + name + " D = " + std::to_string(dim) + ": " +
                    join_numbers(curve);
    }
    slopes_agree = slopes_agree && std::abs(slope_by_dim[0] - slope_by_dim[1]) <= kSlopeTolerance;
    slopes_text += (slopes_text.empty() ? "" : "; ") + name + " D = 10: " + format_number(slope_by_dim[0]) +
                   ", D = 30: " + format_number(slope_by_dim[1]);
  }
  collapsed = largest_sigma0 < kCollapse;
  out.tables.push_back(table);
  out.claims.push_back(
      {"error_falls_with_n",
       "at τ = 0.05 the SW₁ error at the largest n is below that at the smallest, every manifold and D",
       "with instance noise the sieve MLE is consistent: the error falls with n", falls,
       "SW₁ over n = " + join_numbers(size_x, 6) + ": " + falls_text, true});
  out.claims.push_back({"slope_independent_of_d",
                        "at τ = 0.05 the log-log slopes of SW₁ in n for D = 10 and D = 30 agree within " +
                            format_number(kSlopeTolerance),
                        "the rate is governed by the intrinsic dimension r, not by D", slopes_agree,
                        slopes_text, false});
  out.claims.push_back(
      {"sigma_collapses_without_noise",
       "at τ = 0 (n = " + std::to_string(collapse_size) +
           ") every fitted σ̂ < τ/5 = " + format_number(kCollapse),
       "without the perturbation σ → 0: the likelihood is unbounded", collapsed,
       "largest σ̂ at τ = 0: " + format_number(largest_sigma0) + " (σ̂ ≥ τ = 0.05 by the sieve otherwise)",
       false});
  out.setup =
      "circle (r = 1) and flat torus (r = 2) embedded in R^10 and R^30 by random orthogonal maps; n ∈ {" +
      join_numbers(size_x, 6) + "} (nested); singular_likelihood_fit with latent dimension r, hidden 32, " +
      std::to_string(fit_options.samples) + " latent draws, " + std::to_string(fit_options.steps) +
      " Adam steps at 0.01, τ = 0.05 (σ ≥ τ) at every n and τ = 0 at n = " + std::to_string(collapse_size) +
      "; SW₁ over " + std::to_string(kDirections) + " directions between " + std::to_string(kEvaluation) +
      " generated and " + std::to_string(kEvaluation) + " true points; " + std::to_string(seeds) + " seeds" +
      (options.quick ? " (quick: the circle only, fewer sizes and steps, one seed)" : "");
  return out;
}

}  // namespace

KernelRepro singular_likelihood_repro() {
  return {
      "singular_likelihood",
      "Chae, Kim, Kim & Lin 2023, \"A likelihood approach to nonparametric estimation of a singular "
      "distribution using deep generative models\" (JMLR)",
      "instance noise makes the likelihood estimator of a singular distribution consistent; without it σ̂ → 0",
      &run};
}

}  // namespace lowrank::repro_kernels
