// The kernel methods' workloads of issue 22's performance table, one row per call, timed here; the
// peers run the same workloads at the same shapes in bench/peers/kernel_methods.py, and
// bench/kernel_methods.py runs both and writes the ratios. Inputs are drawn from libtorch's
// generator (the same law as the peer's, not the same numbers), fp64 throughout, outside the timing.
//
//   ntk_gram       infinite-width NTK and NNGP of a ReLU net (depth --depth, σ_w² 2, σ_b² 0.1) on
//                  x [n, d], x ~ N(0, I/d): ntk.h's infinite_width_kernels(x, x)
//   empirical_ntk  Θ̂(x, x) of a finite ReLU net (depth --depth, --width units) on x [n, d]
//   rf_path        ridge over --lambdas ridges on ReLU random features Φ [n, k] (rf_ridge's map, built
//                  outside the timing): one thin SVD (krr.h's ridge_path) and β(λ) for every λ
//   krr            RBF Gram (h = 1) of x [n, d] and the Cholesky solve with λ = 0.1 (krr_solve)
//   kde            exact Gaussian KDE: log ρ̂ (h = 1) of q queries against n points in d dimensions
//   quantum_gram   the Havlíček feature-map Gram of n points on --qubits qubits (quantum_gram(x, x))
//   dpp            one projection-DPP draw with the Legendre basis of size m = n (chain rule)
//   gp             GP log evidence of y under K = σ_f²·RBF(ℓ) + σ_n² I (n points, d dims) and its
//                  gradient in (log ℓ, log σ_f², log σ_n²): krr_solve's Cholesky for α and the evidence,
//                  then ½ tr((ααᵀ − K_y⁻¹) ∂K_y/∂θ) with K_y⁻¹ from the same factor
//   dp_query       ε = 1 ℓ1 dp_similarity structure of n points uniform in [0, 1]^d (built outside the
//                  timing): the distance sums of --m queries (the query costs O(dL) whatever n)
//   sparse_dkm     the sparse DKM fit (dkm_fit: 2 layers, arc-cosine, ν = 10, --k inducing points,
//                  20 Adam steps) on x ~ N(0, I_d), y = sin(2x₁) + 0.5x₂²
//   funbat         the FunBaT fit (rank 2, Matérn-3/2, ℓ = 0.3, 10 sweeps) on n entries of a smooth
//                  surface at uniform random coordinates in [0, 1]²
//   dp_classifier  the fit of the dp_similarity estimator (one ε-DP structure per class, what
//                  `lowrank kernel fit --method dp_similarity` runs) on --data (safetensors x, y, read
//                  outside the timing) at ε = --epsilon
//
//   build/bin/bench_kernel_methods --workload NAME --n N [--m M] [--d D] [--depth L] [--width W]
//       [--k K] [--lambdas 30] [--qubits 8] [--data FILE] [--epsilon 1] [--repeats 3] [--threads T]
// prints one JSON object: the workload, its shape, the median seconds over --repeats calls after one
// warm-up call (bench/timing.h), and a checksum of the output (to keep the work observable).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "lowrank/core/json.h"
#include "lowrank/core/threads.h"
#include "lowrank/kernel_methods/dataset.h"
#include "lowrank/kernel_methods/dkm.h"
#include "lowrank/kernel_methods/dp_similarity.h"
#include "lowrank/kernel_methods/dpp_sampling.h"
#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/kde.h"
#include "lowrank/kernel_methods/krr.h"
#include "lowrank/kernel_methods/ntk.h"
#include "lowrank/kernel_methods/quantum_kernel.h"
#include "lowrank/linalg/random_features.h"
#include "timing.h"

using namespace lowrank;
using namespace lowrank::kernel_methods;

namespace {

struct Shape {
  std::string workload;
  int64_t n = 0, m = 0, d = 0, depth = 3, width = 1024, k = 0, lambdas = 30, qubits = 8;
  int repeats = 3, threads = 0;
  std::string data;
  double epsilon = 1.0;
};

at::Tensor normal(at::IntArrayRef size, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::empty(size, at::kDouble).normal_(0, 1, gen);
}

// The workload as a callable (inputs prepared once) and where it leaves a number to print.
std::function<void()> prepare(const Shape& s, double& checksum) {
  const std::string& w = s.workload;
  if (w == "ntk_gram") {
    const at::Tensor x = normal({s.n, s.d}, 1) / std::sqrt(static_cast<double>(s.d));
    const FullyConnectedArchitecture arch{s.depth, 2.0, 0.1, "relu"};
    return [x, arch, &checksum] { checksum = infinite_width_kernels(arch, x, x).ntk.sum().item<double>(); };
  }
  if (w == "empirical_ntk") {
    const at::Tensor x = normal({s.n, s.d}, 1) / std::sqrt(static_cast<double>(s.d));
    const FullyConnectedNet net = init_fully_connected({s.depth, 2.0, 0.1, "relu"}, s.d, s.width, 2);
    return [x, net, &checksum] { checksum = empirical_ntk(net, x, x).sum().item<double>(); };
  }
  if (w == "rf_path") {
    const at::Tensor x = normal({s.n, s.d}, 1), g = normal({s.k, s.d}, 2);
    const at::Tensor features = linalg::relu_features(x / std::sqrt(static_cast<double>(s.d)), g);
    const at::Tensor y = x.select(1, 0).tanh() + 0.1 * normal({s.n}, 3);
    const at::Tensor grid = at::logspace(-4, 2, s.lambdas, 10.0, at::kDouble);
    return [features, y, grid, &checksum] {
      const RidgePath path = ridge_path(features, y);
      double total = 0;
      for (int64_t i = 0; i < grid.size(0); ++i)
        total += ridge_coefficients(path, grid[i].item<double>()).sum().item<double>();
      checksum = total;
    };
  }
  if (w == "krr") {
    const at::Tensor x = normal({s.n, s.d}, 1);
    const at::Tensor y = x.select(1, 0).sin() + 0.1 * normal({s.n}, 2);
    return [x, y, &checksum] {
      const at::Tensor k = gram({"rbf", 1.0, 2.5}, x, x);
      checksum = krr_solve(k, y, 0.1).alpha.sum().item<double>();
    };
  }
  if (w == "kde") {
    const at::Tensor data = normal({s.n, s.d}, 1), queries = normal({s.m, s.d}, 2);
    return
        [data, queries, &checksum] { checksum = kde_log_density(data, queries, 1.0).sum().item<double>(); };
  }
  if (w == "quantum_gram") {
    at::Generator gen = at::detail::createCPUGenerator(1);
    const at::Tensor x = at::empty({s.n, s.qubits}, at::kDouble).uniform_(0, 2 * M_PI, gen);
    return [x, &checksum] { checksum = quantum_gram(x, x).sum().item<double>(); };
  }
  if (w == "dpp") {
    const OrthonormalBasis basis = parse_basis("legendre:" + std::to_string(s.n));
    auto seed = std::make_shared<uint64_t>(0);
    return
        [basis, seed, &checksum] { checksum = sample_projection_dpp(basis, ++*seed).sum().item<double>(); };
  }
  if (w == "gp") {
    const at::Tensor x = normal({s.n, s.d}, 1);
    const at::Tensor y = x.select(1, 0).sin() + 0.1 * normal({s.n}, 2);
    const double lengthscale = 1.0, signal = 1.0, noise = 0.1;
    return [x, y, lengthscale, signal, noise, &checksum] {
      const at::Tensor d2 = squared_distances(x, x);
      const at::Tensor kf = signal * at::exp(-0.5 * d2 / (lengthscale * lengthscale));
      const KrrSolution solution = krr_solve(kf, y, noise);
      const at::Tensor ky = kf + (noise + solution.jitter) * at::eye(x.size(0), at::kDouble);
      const at::Tensor inverse = at::cholesky_inverse(at::linalg_cholesky(ky));
      const at::Tensor a = at::outer(solution.alpha, solution.alpha) - inverse;
      // ∂K/∂log ℓ = K_f ⊙ D²/ℓ², ∂K/∂log σ_f² = K_f, ∂K/∂log σ_n² = σ_n² I.
      const double g_length = 0.5 * (a * kf * d2).sum().item<double>() / (lengthscale * lengthscale);
      const double g_signal = 0.5 * (a * kf).sum().item<double>();
      const double g_noise = 0.5 * noise * a.diagonal().sum().item<double>();
      checksum = solution.log_evidence + g_length + g_signal + g_noise;
    };
  }
  if (w == "dp_query") {
    at::Generator gen = at::detail::createCPUGenerator(1);
    const at::Tensor x = at::rand({s.n, s.d}, gen, at::kDouble),
                     queries = at::rand({s.m, s.d}, gen, at::kDouble);
    DpOptions options;
    options.epsilon = 1;
    const auto structure = std::make_shared<DpStructure>(dp_build(x, options, gen));
    return [structure, queries, &checksum] {
      checksum = dp_similarity_sums(*structure, queries).sum().item<double>();
    };
  }
  if (w == "sparse_dkm") {
    // dkm_fit differentiates its objective: no inference mode here, for the inputs either.
    c10::InferenceMode autograd_on(false);
    const at::Tensor x = normal({s.n, s.d}, 1);
    const at::Tensor y = at::sin(2 * x.select(1, 0)) + 0.5 * x.select(1, 1).square();
    DkmOptions options;
    options.nu = 10;
    options.inducing = s.k;
    options.steps = 20;
    return [x, y, options, &checksum] {
      c10::InferenceMode autograd_on(false);
      checksum = dkm_fit(x, y, options, 0).objective;
    };
  }
  if (w == "funbat") {
    at::Generator gen = at::detail::createCPUGenerator(1);
    const at::Tensor x = at::rand({s.n, 2}, gen, at::kDouble);
    const at::Tensor y =
        at::sin(2 * M_PI * x.select(1, 0)) * at::cos(M_PI * x.select(1, 1)) + 0.1 * normal({s.n}, 2);
    const Dataset data = make_dataset(x, y, "bench");
    const Json options = {{"rank", 2}, {"nu", 1.5}, {"lengthscale", 0.3}, {"iterations", 10}};
    return [data, options, &checksum] {
      const std::unique_ptr<Estimator> estimator = create_estimator("funbat", options, 0);
      estimator->fit(data);
      checksum = estimator->report()["train_rmse"].get<double>();
    };
  }
  if (w == "dp_classifier") {
    const Dataset data = read_dataset(s.data);
    const Json options = {{"epsilon", s.epsilon}};
    auto seed = std::make_shared<uint64_t>(0);
    return [data, options, seed, &checksum] {
      const std::unique_ptr<Estimator> estimator = create_estimator("dp_similarity", options, ++*seed);
      estimator->fit(data);
      checksum = estimator->predict(data.x.slice(0, 0, 1)).sum().item<double>();
    };
  }
  std::fprintf(stderr, "bench_kernel_methods: unknown workload \"%s\"\n", w.c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  Shape s;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--workload")
      s.workload = value;
    else if (flag == "--n")
      s.n = std::atoll(value);
    else if (flag == "--m")
      s.m = std::atoll(value);
    else if (flag == "--d")
      s.d = std::atoll(value);
    else if (flag == "--depth")
      s.depth = std::atoll(value);
    else if (flag == "--width")
      s.width = std::atoll(value);
    else if (flag == "--k")
      s.k = std::atoll(value);
    else if (flag == "--lambdas")
      s.lambdas = std::atoll(value);
    else if (flag == "--qubits")
      s.qubits = std::atoll(value);
    else if (flag == "--repeats")
      s.repeats = std::atoi(value);
    else if (flag == "--threads")
      s.threads = std::atoi(value);
    else if (flag == "--data")
      s.data = value;
    else if (flag == "--epsilon")
      s.epsilon = std::atof(value);
    else {
      std::fprintf(stderr, "bench_kernel_methods: unknown argument %s\n", argv[i]);
      return 1;
    }
  }
  if (argc % 2 == 0 || s.workload.empty() || s.n < 1 || s.repeats < 1) {
    std::fprintf(stderr,
                 "usage: bench_kernel_methods --workload NAME --n N [--m M] [--d D] [--depth L] "
                 "[--width W] [--k K] [--lambdas 30] [--qubits 8] [--data FILE] [--epsilon 1] [--repeats 3] "
                 "[--threads T]\n");
    return 1;
  }
  const int threads = configure_threads(s.threads);
  c10::InferenceMode guard;
  double checksum = 0;
  try {
    const std::function<void()> fn = prepare(s, checksum);
    const double seconds = bench::median_seconds(fn, s.repeats);
    const OrderedJson out = {{"workload", s.workload},
                             {"n", s.n},
                             {"m", s.m},
                             {"d", s.d},
                             {"depth", s.depth},
                             {"width", s.width},
                             {"k", s.k},
                             {"lambdas", s.lambdas},
                             {"qubits", s.qubits},
                             {"threads", threads},
                             {"repeats", s.repeats},
                             {"seconds", seconds},
                             {"checksum", checksum}};
    std::printf("%s\n", out.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernel_methods: %s\n", e.what());
    return 1;
  }
  return 0;
}
