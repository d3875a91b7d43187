// Reproduction of Backurs, Lin, Mahabadi, Silwal & Tarnawski, 2024, "Efficiently Computing
// Similarities to Private Datasets" (ICLR, arXiv:2403.08917), with kernel_methods/dp_similarity.h.
//
// The paper's claims: the DP ℓ1 distance-sum structure has an additive error ∝ R d^{1.5} L^{1.5}/ε that
// does not grow with n, and classifying by the average similarity to each class's private structure
// reaches DP-SGD's accuracy orders of magnitude faster. Here:
//   - errors: the RMS over 100 queries (drawn from the mixture) of the DP estimate of Σ_x ‖x − y‖₁
//     minus its exact value (raw data, no clipping or binning), for a dataset of one Gaussian class,
//     against ε ∈ {0.05, 0.1, 0.5, 1} (d = 32, n = 5000), d ∈ {8, 16, 32, 64} (ε = 1, n = 5000) and
//     n ∈ {1250, 5000, 20000} (ε = 1, d = 32); 3 seeds × 4 noise draws, L = 10, box [−4, 4]^d;
//   - accuracy: 10 Gaussian classes in d = 32 (centres N(0, 0.4² I), unit noise), 5000 training and
//     100 test points per class, and digits (2/3 train, 1/3 test, box [0, 16]^64, L = 4), for the l1
//     class-mean distance and the Gaussian-kernel mean (σ = 4 on the mixture, 20 on digits, 1024
//     features), ε ∈ {0.05, 0.1, 0.5, 1, ∞}; ε = ∞ is the non-private class-mean classifier. Every ε uses
//     the same data, projections and seeds.
// The paper compares with DP-SGD (not run here; the benchmark table holds that comparison).
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>

#include "lowrank/kernel_methods/dataset.h"
#include "lowrank/kernel_methods/dp_similarity.h"
#include "repro/kernels/repro.h"

namespace lowrank::repro_kernels {
namespace {

using namespace kernel_methods;

constexpr double kLower = -4, kRadius = 8, kSpread = 0.4;
constexpr int64_t kNoiseDraws = 4;
const double kInf = std::numeric_limits<double>::infinity();

at::Tensor standard_normal(int64_t n, int64_t d, at::Generator& gen) {
  return at::empty({n, d}, at::kDouble).normal_(0, 1, gen);
}

// Points of a 10-class mixture with the given centres [10, d]: x [10·per_class, d] and labels.
std::pair<at::Tensor, at::Tensor> mixture(const at::Tensor& centres, int64_t per_class, at::Generator& gen) {
  const at::Tensor labels = at::arange(centres.size(0), at::kLong).repeat_interleave(per_class);
  return {centres.index_select(0, labels) + standard_normal(labels.size(0), centres.size(1), gen), labels};
}

// RMS error of the DP ℓ1 sum over the queries, over kNoiseDraws noise draws.
double l1_error(const at::Tensor& x, const at::Tensor& queries, double epsilon, uint64_t seed) {
  DpOptions options;
  options.epsilon = epsilon;
  options.lower = kLower;
  options.radius = kRadius;
  const at::Tensor exact = at::cdist(queries, x, 1).sum(1);
  double squared = 0;
  for (int64_t draw = 0; draw < kNoiseDraws; ++draw) {
    at::Generator gen = at::detail::createCPUGenerator(seed * 1000 + draw);
    const DpStructure structure = dp_build(x, options, gen);
    squared += (dp_similarity_sums(structure, queries) - exact).pow(2).mean().item<double>() / kNoiseDraws;
  }
  return std::sqrt(squared);
}

// One data set's error at each setting, averaged over the seeds; `draw(seed, setting)` gives
// {x, queries} and `epsilon(setting)` the budget.
template <typename Draw, typename Epsilon>
std::vector<double> error_curve(int64_t settings, int64_t seeds, Draw draw, Epsilon epsilon) {
  std::vector<std::vector<double>> per_seed;
  for (int64_t seed = 0; seed < seeds; ++seed) {
    std::vector<double> row;
    for (int64_t s = 0; s < settings; ++s) {
      const auto [x, queries] = draw(seed, s);
      row.push_back(l1_error(x, queries, epsilon(s), static_cast<uint64_t>(seed)));
    }
    per_seed.push_back(row);
  }
  return mean_over_seeds(per_seed);
}

double accuracy(const Dataset& train, const at::Tensor& x, const at::Tensor& y, const Json& options,
                uint64_t seed) {
  const auto model = dp_fit(train, options, seed);
  return model->predict(x).eq(y.to(at::kDouble)).to(at::kDouble).mean().item<double>();
}

Json epsilon_json(double epsilon) {
  return std::isfinite(epsilon) ? Json(epsilon) : Json("inf");
}

// Mean accuracy over seeds for each (metric, ε); split(seed) gives {train, x_test, y_test}.
template <typename Split>
std::vector<std::vector<double>> accuracy_grid(const std::vector<Json>& metrics,
                                               const std::vector<double>& epsilons, int64_t seeds,
                                               Split split) {
  std::vector<std::vector<double>> grid(metrics.size(), std::vector<double>(epsilons.size(), 0.0));
  for (int64_t seed = 0; seed < seeds; ++seed) {
    const auto [train, x_test, y_test] = split(seed);
    for (size_t m = 0; m < metrics.size(); ++m)
      for (size_t e = 0; e < epsilons.size(); ++e) {
        Json options = metrics[m];
        options["epsilon"] = epsilon_json(epsilons[e]);
        grid[m][e] += accuracy(train, x_test, y_test, options, static_cast<uint64_t>(seed)) / seeds;
      }
  }
  return grid;
}

// "within 2 points of ε = ∞ at ε ≥ 0.5": the last entry is ε = ∞, the ones from index `from` are ≥ 0.5.
Claim within_two_points(const std::string& id, const std::string& what, const std::vector<double>& row,
                        const std::vector<double>& epsilons, size_t from) {
  double worst = 0;
  for (size_t e = from; e + 1 < row.size(); ++e) worst = std::max(worst, row.back() - row[e]);
  return {id,
          what + ": accuracy at ε ∈ {0.5, 1} within 2 points of the non-private (ε = ∞) one",
          "DP classification by average similarity reaches near non-private accuracy for ε ≳ 0.5",
          worst <= 0.02,
          "largest loss " + format_number(100 * worst) +
              " points; accuracy (%) at ε = " + join_numbers(epsilons) + ": " + join_numbers([&] {
                std::vector<double> pct;
                for (double a : row) pct.push_back(100 * a);
                return pct;
              }()),
          false};
}

ReproResult run(const ReproOptions& options) {
  const bool quick = options.quick;
  const int64_t seeds = options.seeds, queries = quick ? 30 : 100, base_n = quick ? 1000 : 5000;
  const std::vector<double> epsilons = {0.05, 0.1, 0.5, 1};
  const std::vector<int64_t> dims =
      quick ? std::vector<int64_t>{8, 16, 32} : std::vector<int64_t>{8, 16, 32, 64};
  const std::vector<int64_t> sizes =
      quick ? std::vector<int64_t>{250, 1000, 4000} : std::vector<int64_t>{1250, 5000, 20000};
  // One class's data (centre 0 of the mixture) and queries from the whole mixture, per seed.
  auto draw = [&](int64_t seed, int64_t d, int64_t n) {
    at::Generator gen = at::detail::createCPUGenerator(100 + seed);
    const at::Tensor centres = kSpread * standard_normal(10, d, gen);
    const at::Tensor x = centres[0] + standard_normal(n, d, gen);
    const at::Tensor q = mixture(centres, (queries + 9) / 10, gen).first.slice(0, 0, queries);
    return std::pair{x, q};
  };
  const std::vector<double> by_epsilon = error_curve(
      4, seeds, [&](int64_t seed, int64_t) { return draw(seed, 32, base_n); },
      [&](int64_t s) { return epsilons[s]; });
  const std::vector<double> by_dim = error_curve(
      static_cast<int64_t>(dims.size()), seeds,
      [&](int64_t seed, int64_t s) { return draw(seed, dims[s], base_n); }, [](int64_t) { return 1.0; });
  const std::vector<double> by_size = error_curve(
      static_cast<int64_t>(sizes.size()), seeds,
      [&](int64_t seed, int64_t s) { return draw(seed, 32, sizes[s]); }, [](int64_t) { return 1.0; });
  std::vector<double> dims_d(dims.begin(), dims.end()), sizes_d(sizes.begin(), sizes.end());
  const double slope_epsilon = loglog_slope(epsilons, by_epsilon), slope_dim = loglog_slope(dims_d, by_dim),
               slope_size = loglog_slope(sizes_d, by_size);

  ReproResult out;
  Table errors{"RMS error of the DP estimate of Σ_x ‖x − y‖₁ (L = 10, box [−4, 4]^d)",
               {"sweep", "value", "RMS error"},
               {}};
  for (size_t i = 0; i < epsilons.size(); ++i)
    errors.rows.push_back({"ε (d = 32, n = " + std::to_string(base_n) + ")", epsilons[i], by_epsilon[i]});
  for (size_t i = 0; i < dims.size(); ++i)
    errors.rows.push_back({"d (ε = 1, n = " + std::to_string(base_n) + ")", dims[i], by_dim[i]});
  for (size_t i = 0; i < sizes.size(); ++i)
    errors.rows.push_back({"n (ε = 1, d = 32)", sizes[i], by_size[i]});
  out.tables.push_back(errors);
  out.claims.push_back(
      {"error_slope_minus_one_in_epsilon", "log-log slope of the error in ε in [−1.1, −0.9]",
       "additive error ∝ 1/ε", slope_epsilon >= -1.1 && slope_epsilon <= -0.9,
       "slope " + format_number(slope_epsilon) + " (errors " + join_numbers(by_epsilon) + ")", true});
  out.claims.push_back({"error_slope_one_and_a_half_in_d", "log-log slope of the error in d in [1.3, 1.7]",
                        "additive error ∝ d^1.5", slope_dim >= 1.3 && slope_dim <= 1.7,
                        "slope " + format_number(slope_dim) + " (errors " + join_numbers(by_dim) + ")",
                        true});
  out.claims.push_back({"error_flat_in_n", "|log-log slope of the error in n| ≤ 0.1",
                        "additive error independent of n", std::abs(slope_size) <= 0.1,
                        "slope " + format_number(slope_size) + " (errors " + join_numbers(by_size) + ")",
                        false});

  // Classification.
  const std::vector<double> grid = {0.05, 0.1, 0.5, 1, kInf};
  const int64_t per_class = quick ? 500 : 5000, test_per_class = quick ? 30 : 100;
  const std::vector<Json> mixture_metrics = {
      Json{{"metric", "l1"}, {"lower", kLower}, {"radius", kRadius}},
      Json{{"metric", "gaussian"}, {"bandwidth", 4.0}, {"features", 1024}}};
  const auto mixture_accuracy = accuracy_grid(mixture_metrics, grid, seeds, [&](int64_t seed) {
    at::Generator gen = at::detail::createCPUGenerator(200 + seed);
    const at::Tensor centres = kSpread * standard_normal(10, 32, gen);
    const auto [x, y] = mixture(centres, per_class, gen);
    const auto [xt, yt] = mixture(centres, test_per_class, gen);
    return std::tuple{make_dataset(x, y.to(at::kDouble), "mixture"), xt, yt};
  });
  std::vector<std::vector<double>> digits_accuracy;
  const std::vector<Json> digits_metrics = {
      Json{{"metric", "l1"}, {"lower", 0}, {"radius", 16}, {"levels", 4}},
      Json{{"metric", "gaussian"}, {"bandwidth", 20.0}, {"features", 1024}}};
  if (!quick) {
    const Dataset digits = read_builtin_dataset("digits");
    digits_accuracy = accuracy_grid(digits_metrics, grid, seeds, [&](int64_t seed) {
      at::Generator gen = at::detail::createCPUGenerator(300 + seed);
      const int64_t n = digits.x.size(0), train = 2 * n / 3;
      const at::Tensor order = at::randperm(n, gen, at::kLong);
      const at::Tensor tr = order.slice(0, 0, train), te = order.slice(0, train);
      return std::tuple{make_dataset(digits.x.index_select(0, tr), digits.y.index_select(0, tr), "digits"),
                        digits.x.index_select(0, te), digits.y.index_select(0, te)};
    });
  }
  Table accuracy_table{"Class-mean accuracy (%) against ε (∞: non-private)", {"data", "metric"}, {}};
  for (double e : grid)
    accuracy_table.columns.push_back(std::isfinite(e) ? "ε = " + format_number(e) : "ε = ∞");
  auto add_rows = [&](const std::string& data, const std::vector<std::vector<double>>& rows) {
    for (size_t m = 0; m < rows.size(); ++m) {
      std::vector<OrderedJson> row = {data, m == 0 ? "l1" : "gaussian"};
      for (double a : rows[m]) row.push_back(100 * a);
      accuracy_table.rows.push_back(row);
    }
  };
  add_rows("mixture d = 32", mixture_accuracy);
  add_rows("digits", digits_accuracy);
  out.tables.push_back(accuracy_table);
  out.claims.push_back(
      within_two_points("mixture_l1_within_2_points", "10 Gaussians, l1", mixture_accuracy[0], grid, 2));
  out.claims.push_back(within_two_points("mixture_gaussian_within_2_points", "10 Gaussians, Gaussian kernel",
                                         mixture_accuracy[1], grid, 2));
  if (!quick) {
    out.claims.push_back(
        within_two_points("digits_l1_within_2_points", "digits, l1", digits_accuracy[0], grid, 2));
    out.claims.push_back(within_two_points("digits_gaussian_within_2_points", "digits, Gaussian kernel",
                                           digits_accuracy[1], grid, 2));
  }
  out.setup = "errors: one Gaussian class (centre of a 10-class mixture, spread 0.4, unit noise), " +
              std::to_string(queries) + " mixture queries, L = 10, box [−4, 4]^d, " + std::to_string(seeds) +
              " seeds × " + std::to_string(kNoiseDraws) + " noise draws; accuracy: 10 Gaussians d = 32, " +
              std::to_string(per_class) + " train / " + std::to_string(test_per_class) + " test per class" +
              (quick ? "" : "; digits 2/3 train, 1/3 test (box [0, 16], L = 4)") +
              "; ε split ½/½ between counts and sums (δ = 1e-5 for the Gaussian kernel); " +
              std::to_string(seeds) + " seeds" + (quick ? " (quick: smaller n, no digits)" : "");
  return out;
}

}  // namespace

KernelRepro dp_similarity_repro() {
  return {
      "dp_similarity",
      "Backurs, Lin, Mahabadi, Silwal & Tarnawski 2024, \"Efficiently Computing Similarities to Private "
      "Datasets\" (ICLR)",
      "DP distance sums with additive error ∝ d^1.5/ε independent of n; average-similarity classification "
      "near non-private accuracy, far faster than DP-SGD",
      &run};
}

}  // namespace lowrank::repro_kernels
