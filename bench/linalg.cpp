// Randomized vs exact truncated SVD (lowrank::linalg::randomized_svd vs truncated_svd).
//
// Matrices: A = U diag(s) V^T in float32 with Haar-random orthogonal U, V (QR of a Gaussian) and
// a planted power-law spectrum s_i = i^-alpha, i = 1..min(m, n): alpha = 1 (default) and
// alpha = 0.5 (a heavier tail, like the slowly decaying bulk of trained transformer weights).
// For each shape and alpha the exact SVD is computed once (that run is also its timing) and its
// singular values give the optimal rank-k error sqrt(sum_{i>k} sigma_i^2) (Eckart–Young).
// Randomized runs use the library defaults (oversample 10, 2 power iterations, QR between them)
// and report, as counters of the same run: rel_err = ||A - A_k||_F / ||A||_F, opt_rel_err (the
// same for the exact truncation) and err_ratio = rel_err / opt_rel_err. A summary table with the
// time ratio exact / randomized follows the benchmark output. Randomized runs are repeated 3 times
// and the median is reported (robust to other load on the machine); the exact SVD runs once.
//
//   build-la/bin/bench_linalg [--benchmark_filter=4096x4096] [--alphas=1,0.5]
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <benchmark/benchmark.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "lowrank/core/threads.h"
#include "lowrank/linalg/svd.h"

namespace {

using lowrank::linalg::randomized_svd;
using lowrank::linalg::truncated_svd;

struct Shape {
  int64_t m, n;
  std::string name() const { return std::to_string(m) + "x" + std::to_string(n); }
};

const std::vector<Shape> kShapes = {{1024, 1024}, {4096, 1024}, {4096, 4096}};
const std::vector<int64_t> kRanks = {8, 32, 64, 128, 256};

// Haar-random orthogonal factors per shape, shared by the spectra.
std::pair<at::Tensor, at::Tensor> orthogonal_factors(const Shape& shape) {
  static std::map<std::pair<int64_t, int64_t>, std::pair<at::Tensor, at::Tensor>> cache;
  auto key = std::make_pair(shape.m, shape.n);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const int64_t r = std::min(shape.m, shape.n);
  at::Generator gen = at::detail::createCPUGenerator(1234);
  auto U = std::get<0>(at::linalg_qr(at::randn({shape.m, r}, gen, at::kFloat), "reduced"));
  auto V = std::get<0>(at::linalg_qr(at::randn({shape.n, r}, gen, at::kFloat), "reduced"));
  return cache[key] = {U, V};
}

struct Problem {
  at::Tensor A;
  double norm = 0;
  at::Tensor exact_S;  // float64, from the exact SVD (filled by the exact run or lazily)
};

Problem& problem(const Shape& shape, double alpha) {
  static std::map<std::tuple<int64_t, int64_t, double>, Problem> cache;
  auto& p = cache[{shape.m, shape.n, alpha}];
  if (!p.A.defined()) {
    auto [U, V] = orthogonal_factors(shape);
    auto s = at::arange(1, U.size(1) + 1, at::kFloat).pow(-alpha);
    p.A = at::matmul(U * s.unsqueeze(0), V.mT()).contiguous();
    p.norm = p.A.to(at::kDouble).norm().item<double>();
  }
  return p;
}

double optimal_rel_error(const Problem& p, int64_t k) {
  const auto& S = p.exact_S;
  return S.narrow(0, k, S.numel() - k).norm().item<double>() / p.norm;
}

void bm_exact(benchmark::State& state, Shape shape, double alpha) {
  auto& p = problem(shape, alpha);
  lowrank::linalg::Svd svd;
  for (auto _ : state) {
    svd = truncated_svd(p.A, std::min(shape.m, shape.n));
    benchmark::DoNotOptimize(svd.S.data_ptr());
  }
  p.exact_S = svd.S.to(at::kDouble);
}

void bm_randomized(benchmark::State& state, Shape shape, double alpha, int64_t k) {
  auto& p = problem(shape, alpha);
  if (!p.exact_S.defined()) p.exact_S = truncated_svd(p.A, std::min(shape.m, shape.n)).S.to(at::kDouble);
  lowrank::linalg::Svd svd;
  for (auto _ : state) {
    svd = randomized_svd(p.A, k, {.seed = 7});
    benchmark::DoNotOptimize(svd.S.data_ptr());
  }
  const double rel = (p.A - svd.reconstruct()).to(at::kDouble).norm().item<double>() / p.norm;
  const double opt = optimal_rel_error(p, k);
  state.counters["rel_err"] = rel;
  state.counters["opt_rel_err"] = opt;
  state.counters["err_ratio"] = rel / opt;
}

// Keeps every run's real time (seconds) and counters for the summary table.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  explicit SummaryReporter(bool color) : ConsoleReporter(color ? OO_ColorTabular : OO_Tabular) {}
  struct Row {
    double seconds;
    std::map<std::string, double> counters;
  };
  std::map<std::string, Row> rows;

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& run : runs) {
      // Single runs (exact SVD) and the median of repeated ones (randomized SVD).
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      if (run.error_occurred || (run.run_type != Run::RT_Iteration && !median)) continue;
      Row row{run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit), {}};
      for (const auto& [name, counter] : run.counters) row.counters[name] = counter.value;
      rows[run.run_name.function_name] = row;
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

std::string exact_name(const Shape& s, double alpha) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "exact_svd/%s/alpha:%g", s.name().c_str(), alpha);
  return buf;
}

std::string randomized_name(const Shape& s, double alpha, int64_t k) {
  char buf[112];
  std::snprintf(buf, sizeof buf, "randomized_svd/%s/alpha:%g/k:%ld", s.name().c_str(), alpha,
                static_cast<long>(k));
  return buf;
}

std::vector<double> parse_alphas(int* argc, char** argv) {
  std::vector<double> alphas = {1.0, 0.5};
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--alphas=", 0) == 0) {
      alphas.clear();
      std::string list = arg.substr(9);
      size_t pos = 0;
      while (pos <= list.size()) {
        size_t comma = list.find(',', pos);
        if (comma == std::string::npos) comma = list.size();
        alphas.push_back(std::stod(list.substr(pos, comma - pos)));
        pos = comma + 1;
      }
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return alphas;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<double> alphas = parse_alphas(&argc, argv);
  const int threads = lowrank::configure_threads();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  // Warm up MKL/LAPACK so the first measured run does not pay their initialisation.
  {
    auto W = at::randn({256, 256});
    benchmark::DoNotOptimize(truncated_svd(W, 8).S.data_ptr());
    benchmark::DoNotOptimize(randomized_svd(W, 8).S.data_ptr());
  }

  for (const auto& shape : kShapes) {
    for (double alpha : alphas) {
      benchmark::RegisterBenchmark(exact_name(shape, alpha).c_str(), bm_exact, shape, alpha)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->Iterations(1);
      for (int64_t k : kRanks) {
        benchmark::RegisterBenchmark(randomized_name(shape, alpha, k).c_str(), bm_randomized, shape, alpha, k)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->MinTime(0.5)
            ->Repetitions(3)
            ->ReportAggregatesOnly(true);
      }
    }
  }
  std::printf("libtorch %s, MKL %s, %d intra-op threads, float32\n", TORCH_VERSION,
              at::hasMKL() ? "yes" : "no", threads);
  SummaryReporter reporter(isatty(fileno(stdout)) != 0);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  std::printf(
      "\nSummary (time ratio = exact / randomized; error ratio = randomized / optimal rank-k error)\n");
  std::printf("%-10s %5s %5s %12s %12s %10s %10s %11s %10s\n", "shape", "alpha", "k", "exact ms", "rand ms",
              "time x", "rel err", "optimal", "err ratio");
  bool target_checked = false, target_met = true;
  for (const auto& shape : kShapes) {
    for (double alpha : alphas) {
      auto exact = reporter.rows.find(exact_name(shape, alpha));
      for (int64_t k : kRanks) {
        auto rand = reporter.rows.find(randomized_name(shape, alpha, k));
        if (rand == reporter.rows.end()) continue;
        const auto& c = rand->second.counters;
        const double exact_s = exact != reporter.rows.end() ? exact->second.seconds : NAN;
        const double speedup = exact_s / rand->second.seconds;
        std::printf("%-10s %5g %5ld %12.1f %12.1f %10.1f %10.4f %11.4f %10.4f\n", shape.name().c_str(), alpha,
                    static_cast<long>(k), exact_s * 1e3, rand->second.seconds * 1e3, speedup, c.at("rel_err"),
                    c.at("opt_rel_err"), c.at("err_ratio"));
        if (shape.m == 4096 && shape.n == 4096 && k <= 64 && exact != reporter.rows.end()) {
          target_checked = true;
          target_met = target_met && speedup >= 20 && c.at("err_ratio") <= 1.02;
        }
      }
    }
  }
  if (target_checked) {
    std::printf("\nTarget (4096x4096, k <= 64: >= 20x faster, error within 2%% of optimal): %s\n",
                target_met ? "MET" : "MISSED");
  }
  return 0;
}
