// ntk: the closed-form empirical NTK against the autograd Jacobian Gram of the same network, the
// infinite-width recursion against wide networks by Monte Carlo, neural-tangents' stax kernels
// (fixture), linearised GD against Euler integration of its ODE and against kernel regression at
// t → ∞, positive definiteness on the sphere, and the estimator end to end.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <vector>

#include "lowrank/kernel_methods/cnn_kernel.h"
#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/krr.h"
#include "lowrank/kernel_methods/ntk.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

double relative_error(const at::Tensor& a, const at::Tensor& b) {
  return testing::rel_max_error(a, b);
}

at::Tensor on_sphere(int64_t n, int64_t d, uint64_t seed) {
  const at::Tensor x = kernel_testing::normal({n, d}, seed);
  return x / x.norm(2, 1, true);
}

// f(x) of one input row written directly with autograd-tracked copies of the parameters: the
// network of ntk.h's header, independent of its forward/backward code.
at::Tensor autograd_output(const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases,
                           const FullyConnectedArchitecture& arch, const at::Tensor& row) {
  at::Tensor a = row;
  for (size_t l = 0; l < weights.size(); ++l) {
    const double fan_in = static_cast<double>(weights[l].size(1));
    at::Tensor h = std::sqrt(arch.weight_variance / fan_in) * at::mv(weights[l], a) +
                   std::sqrt(arch.bias_variance) * biases[l];
    a = l + 1 == weights.size() ? h : (arch.activation == "erf" ? at::erf(h) : at::relu(h));
  }
  return a.sum();
}

// Autograd-tracked copies of a network's parameters; `all` alternates weights[l], biases[l].
struct TrackedParameters {
  std::vector<at::Tensor> weights, biases, all;
  explicit TrackedParameters(const FullyConnectedNet& net) {
    for (size_t l = 0; l < net.weights.size(); ++l) {
      weights.push_back(net.weights[l].detach().clone().requires_grad_(true));
      biases.push_back(net.biases[l].detach().clone().requires_grad_(true));
      all.push_back(weights.back());
      all.push_back(biases.back());
    }
  }
};

// Rows of ∂f(x_i)/∂θ, all parameters flattened: [n, P].
at::Tensor autograd_jacobian(const FullyConnectedNet& net, const at::Tensor& x) {
  const TrackedParameters tracked(net);
  const auto& [weights, biases, params] = tracked;
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < x.size(0); ++i) {
    const at::Tensor f = autograd_output(weights, biases, net.arch, x[i]);
    std::vector<at::Tensor> flat;
    for (const at::Tensor& g : torch::autograd::grad({f}, params)) flat.push_back(g.reshape({-1}));
    rows.push_back(at::cat(flat));
  }
  return at::stack(rows);
}

TEST(NtkTest, EmpiricalNtkEqualsTheAutogradJacobianGram) {
  const at::Tensor x = kernel_testing::normal({5, 4}, 1), y = kernel_testing::normal({3, 4}, 2);
  for (const std::string activation : {"relu", "erf"}) {
    for (int64_t depth : {1, 3}) {
      const FullyConnectedArchitecture arch{depth, 1.7, 0.3, activation};
      const FullyConnectedNet net = init_fully_connected(arch, 4, 8, 10 + depth);
      const at::Tensor jx = autograd_jacobian(net, x), jy = autograd_jacobian(net, y);
      EXPECT_LE(relative_error(empirical_ntk(net, x, y), at::matmul(jx, jy.t())), 1e-10)
          << activation << " depth " << depth;
      EXPECT_LE(relative_error(empirical_ntk(net, x, x), at::matmul(jx, jx.t())), 1e-10)
          << activation << " depth " << depth;
    }
  }
}

TEST(NtkTest, GradientStepEqualsTheAutogradStep) {
  const at::Tensor x = kernel_testing::normal({6, 3}, 41), y = kernel_testing::normal({6}, 42);
  for (const std::string activation : {"relu", "erf"}) {
    const FullyConnectedArchitecture arch{2, 1.7, 0.3, activation};
    FullyConnectedNet net = init_fully_connected(arch, 3, 8, 43);
    const TrackedParameters tracked(net);
    const auto& [weights, biases, params] = tracked;
    at::Tensor loss = at::zeros({}, at::kDouble);
    for (int64_t i = 0; i < 6; ++i)
      loss = loss + (autograd_output(weights, biases, arch, x[i]) - y[i]).pow(2);
    loss = loss / 12.0;  // (1/2N)Σ r²
    const std::vector<at::Tensor> grads = torch::autograd::grad({loss}, params);
    const double eta = 0.3;
    EXPECT_NEAR(gradient_descent_step(net, x, y, eta), loss.item<double>(), 1e-14);
    for (size_t l = 0; l < net.weights.size(); ++l) {
      EXPECT_LE(testing::max_abs_diff(net.weights[l], weights[l].detach() - eta * grads[2 * l]), 1e-13) << l;
      EXPECT_LE(testing::max_abs_diff(net.biases[l], biases[l].detach() - eta * grads[2 * l + 1]), 1e-13)
          << l;
    }
  }
}

// Mean and standard error over seeds of a per-seed [n, m] estimate.
struct SeedStatistics {
  at::Tensor mean, standard_error;
};
template <typename Fn>
SeedStatistics over_seeds(int seeds, Fn&& estimate) {
  std::vector<at::Tensor> draws;
  for (int s = 0; s < seeds; ++s) draws.push_back(estimate(static_cast<uint64_t>(1000 + s)));
  const at::Tensor all = at::stack(draws);
  return {all.mean(0), all.std(0) / std::sqrt(static_cast<double>(seeds))};
}

// f(x) [seeds, n] of `seeds` independent networks of the header's form (all parameters N(0, 1)), run
// as batched matrix products.
at::Tensor random_network_outputs(const FullyConnectedArchitecture& arch, const at::Tensor& x, int64_t width,
                                  int64_t seeds, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor a = x.t().unsqueeze(0).expand({seeds, x.size(1), x.size(0)});  // [S, fan_in, n]
  for (int64_t l = 0; l <= arch.depth; ++l) {
    const int64_t fan_in = a.size(1), fan_out = l == arch.depth ? 1 : width;
    const at::Tensor w = at::empty({seeds, fan_out, fan_in}, at::kDouble).normal_(0, 1, gen);
    const at::Tensor b = at::empty({seeds, fan_out, 1}, at::kDouble).normal_(0, 1, gen);
    const at::Tensor h =
        std::sqrt(arch.weight_variance / fan_in) * at::bmm(w, a) + std::sqrt(arch.bias_variance) * b;
    a = l == arch.depth ? h : (arch.activation == "erf" ? at::erf(h) : at::relu(h));
  }
  return a.squeeze(1);
}

TEST(NtkTest, InfiniteWidthKernelsAreTheWideNetworkAverages) {
  const at::Tensor x = on_sphere(4, 3, 3);
  for (const std::string activation : {"relu", "erf"}) {
    const FullyConnectedArchitecture arch{2, 1.5, 0.2, activation};
    const NeuralKernels limit = infinite_width_kernels(arch, x, x);
    // NTK: the empirical kernel concentrates at rate width^-½; its mean is within 4 s.e. (plus the
    // O(1/width) finite-width bias, far below that here).
    const SeedStatistics ntk = over_seeds(
        20, [&](uint64_t seed) { return empirical_ntk(init_fully_connected(arch, 3, 512, seed), x, x); });
    EXPECT_TRUE(((ntk.mean - limit.ntk).abs() <= 4 * ntk.standard_error + 1e-3 * limit.ntk.abs().max())
                    .all()
                    .item<bool>())
        << activation << "\nmean\n"
        << ntk.mean << "\nlimit\n"
        << limit.ntk << "\nse\n"
        << ntk.standard_error;
    // NNGP: the covariance of the outputs at initialisation, E[f(x) f(x')], over many random networks
    // drawn and run as one batch.
    const at::Tensor f = random_network_outputs(arch, x, 32, 4000, 77);
    const at::Tensor products = at::einsum("si,sj->sij", {f, f});
    const at::Tensor mean = products.mean(0), se = products.std(0) / std::sqrt(4000.0);
    EXPECT_TRUE(((mean - limit.nngp).abs() <= 4 * se).all().item<bool>()) << activation << "\nmean\n"
                                                                          << mean << "\nlimit\n"
                                                                          << limit.nngp << "\nse\n"
                                                                          << se;
  }
}

TEST(NtkTest, MatchesNeuralTangentsStax) {
  const SafetensorsFile f = kernel_testing::fixture("ntk.safetensors");
  const at::Tensor x = f.load("x"), y = f.load("y");
  struct Case {
    std::string name, activation;
    int64_t depth;
    double w2, b2;
  };
  for (const Case& c : {Case{"relu_d1", "relu", 1, 2.0, 0.0}, Case{"relu_d3", "relu", 3, 1.7, 0.3},
                        Case{"erf_d2", "erf", 2, 1.3, 0.1}, Case{"relu_d0", "relu", 0, 1.1, 0.4}}) {
    const NeuralKernels k = infinite_width_kernels({c.depth, c.w2, c.b2, c.activation}, x, y);
    EXPECT_LE(relative_error(k.nngp, f.load(c.name + "_nngp")), 1e-9) << c.name;
    EXPECT_LE(relative_error(k.ntk, f.load(c.name + "_ntk")), 1e-9) << c.name;
  }
}

TEST(NtkTest, PositiveDefiniteWithConstantDiagonalOnTheSphere) {
  const at::Tensor x = on_sphere(24, 5, 4);
  const NeuralKernels k = infinite_width_kernels({3, 2.0, 0.0, "relu"}, x, x);
  for (const at::Tensor& g : {k.nngp, k.ntk}) {
    EXPECT_LE((g - g.t()).abs().max().item<double>(), 1e-14);
    const at::Tensor diag = g.diagonal();
    EXPECT_LE((diag - diag[0]).abs().max().item<double>(), 1e-12);
    EXPECT_GT(at::linalg_eigvalsh(g).min().item<double>(), 1e-6 * diag[0].item<double>());
  }
  // σ_w² = 2, σ_b = 0 keeps Σ(x, x) = ‖x‖²/n₀ at every layer, so Θ(x, x) = (L + 1)/n₀ on the sphere.
  EXPECT_NEAR(k.nngp[0][0].item<double>(), 2.0 / 5, 1e-14);
  EXPECT_NEAR(k.ntk[0][0].item<double>(), 4 * 2.0 / 5, 1e-14);
}

// Euler steps of ḟ(X) = −(η/N) Θ (f(X) − Y), ḟ(x) = −(η/N) Θ(x, X)(f(X) − Y), in plain doubles.
std::pair<std::vector<double>, std::vector<double>> euler(const at::Tensor& theta, const at::Tensor& cross,
                                                          const at::Tensor& f0, const at::Tensor& g0,
                                                          const at::Tensor& y, double eta, double time,
                                                          int64_t steps) {
  const int64_t n = theta.size(0), m = cross.size(0);
  auto vec = [](const at::Tensor& t) {
    const at::Tensor c = t.contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  const std::vector<double> k = vec(theta), kc = vec(cross), target = vec(y);
  std::vector<double> f = vec(f0), g = vec(g0), residual(n);
  const double step = time / static_cast<double>(steps), rate = eta / static_cast<double>(n);
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t i = 0; i < n; ++i) residual[i] = f[i] - target[i];
    for (int64_t i = 0; i < n; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < n; ++j) acc += k[i * n + j] * residual[j];
      f[i] -= step * rate * acc;
    }
    for (int64_t i = 0; i < m; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < n; ++j) acc += kc[i * n + j] * residual[j];
      g[i] -= step * rate * acc;
    }
  }
  return {f, g};
}

TEST(NtkTest, LinearisedDynamicsSolveTheGradientFlow) {
  const at::Tensor x = on_sphere(6, 3, 5), x_test = on_sphere(3, 3, 6);
  const FullyConnectedArchitecture arch{2, 2.0, 0.1, "relu"};
  const at::Tensor theta = infinite_width_kernels(arch, x, x).ntk;
  const at::Tensor cross = infinite_width_kernels(arch, x_test, x).ntk;
  const at::Tensor y = kernel_testing::normal({6}, 7), f0 = 0.3 * kernel_testing::normal({6}, 8);
  const at::Tensor g0 = 0.3 * kernel_testing::normal({3}, 9);
  const double eta = 1.5, time = 3.0;
  const LinearisedDynamics dynamics(theta, y - f0, eta);
  // Euler at two step sizes, Richardson-extrapolated (error O(h²) ≈ 1e-9 here).
  const auto [f_coarse, g_coarse] = euler(theta, cross, f0, g0, y, eta, time, 20000);
  const auto [f_fine, g_fine] = euler(theta, cross, f0, g0, y, eta, time, 40000);
  const at::Tensor train = f0 + dynamics.train_change(time), test = g0 + dynamics.test_change(cross, time);
  for (int64_t i = 0; i < 6; ++i)
    EXPECT_NEAR(train[i].item<double>(), 2 * f_fine[i] - f_coarse[i], 1e-6) << i;
  for (int64_t i = 0; i < 3; ++i) EXPECT_NEAR(test[i].item<double>(), 2 * g_fine[i] - g_coarse[i], 1e-6) << i;
  // Plain Euler at the fine step is within its O(h) error too.
  for (int64_t i = 0; i < 6; ++i) EXPECT_NEAR(train[i].item<double>(), f_fine[i], 1e-4) << i;
}

TEST(NtkTest, LinearisedDynamicsTendToKernelRegression) {
  const at::Tensor x = on_sphere(8, 4, 11), x_test = on_sphere(5, 4, 12);
  const FullyConnectedArchitecture arch{2, 2.0, 0.0, "relu"};
  const at::Tensor theta = infinite_width_kernels(arch, x, x).ntk;
  const at::Tensor cross = infinite_width_kernels(arch, x_test, x).ntk;
  const at::Tensor y = kernel_testing::normal({8, 2}, 13);
  const LinearisedDynamics dynamics(theta, y, 1.0);
  // Kernel regression by a direct solve (f₀ = 0).
  const at::Tensor krr = at::matmul(cross, at::linalg_solve(theta, y));
  EXPECT_LE(relative_error(dynamics.test_change(cross, INFINITY), krr), 1e-9);
  EXPECT_LE(relative_error(dynamics.train_change(INFINITY), y), 1e-12);
  const double slowest = dynamics.eigenvalues().min().item<double>();
  const double late = 60.0 * 8 / slowest;  // e^{−ηλ_min t/N} = e^{−60}
  EXPECT_LE(relative_error(dynamics.test_change(cross, late), krr), 1e-9);
  // At t = 0 nothing has moved.
  EXPECT_LE(dynamics.test_change(cross, 0.0).abs().max().item<double>(), 1e-15);
}

TEST(NtkTest, EstimatorFitsPredictsAndRoundTrips) {
  const at::Tensor x = on_sphere(10, 3, 21), x_test = on_sphere(4, 3, 22);
  Dataset data;
  data.x = x;
  data.y = at::sin(3 * x.select(1, 0));
  data.source = "test";
  auto interpolant = create_estimator("ntk", {{"depth", 2}, {"bias_variance", 0.1}}, 0);
  interpolant->fit(data);
  EXPECT_LE((interpolant->predict(x) - data.y).abs().max().item<double>(), 1e-8);
  // A long linearised-GD time gives the same predictions.
  auto late = create_estimator("ntk", {{"depth", 2}, {"bias_variance", 0.1}, {"time", 1e9}}, 0);
  late->fit(data);
  EXPECT_LE(relative_error(late->predict(x_test), interpolant->predict(x_test)), 1e-8);
  // NNGP regression predicts with the NNGP.
  auto nngp = create_estimator("ntk", {{"kernel", "nngp"}, {"lambda", 1e-3}}, 0);
  nngp->fit(data);
  const NeuralKernels k = infinite_width_kernels({}, x, x), kt = infinite_width_kernels({}, x_test, x);
  const at::Tensor expected =
      at::matmul(kt.nngp, at::linalg_solve(k.nngp + 1e-3 * at::eye(10, at::kDouble), data.y));
  EXPECT_LE(relative_error(nngp->predict(x_test), expected), 1e-9);

  testing::TempDir dir;
  nngp->save(dir / "model");
  EXPECT_LE(testing::max_abs_diff(load_estimator(dir / "model")->predict(x_test), nngp->predict(x_test)),
            0.0);
}

TEST(NtkTest, BadOptionsAreNamed) {
  kernel_testing::expect_error([] { create_estimator("ntk", {{"depth", -1}}, 0); }, "\"depth\"");
  kernel_testing::expect_error([] { create_estimator("ntk", {{"activation", "tanh"}}, 0); }, "tanh");
  kernel_testing::expect_error(
      [] {
        create_estimator("ntk", {{"weight_variance", 0}}, 0);
      },
      "weight_variance");
  kernel_testing::expect_error([] { create_estimator("ntk", {{"bias_variance", -1}}, 0); }, "bias_variance");
  kernel_testing::expect_error([] { create_estimator("ntk", {{"kernel", "rbf"}}, 0); }, "rbf");
  kernel_testing::expect_error([] { create_estimator("ntk", {{"time", -2}}, 0); }, "\"time\"");
  kernel_testing::expect_error([] { create_estimator("ntk", {{"time", 1}, {"lambda", 1}}, 0); }, "not both");
  kernel_testing::expect_error(
      [] {
        create_estimator("ntk", {{"width", 3}}, 0);
      },
      "unknown option \"width\"");
  kernel_testing::expect_error(
      [] {
        infinite_width_kernels({}, at::zeros({2, 3}, at::kDouble), at::zeros({2, 4}, at::kDouble));
      },
      "same d");
}

TEST(NtkTest, GramVerbWritesTheNeuralKernels) {
  testing::TempDir dir;
  testing::write_text_file(dir / "x.csv", "0.5,0.1,-0.3,1.0,0\n-0.2,0.7,0.4,0.1,1\n1.1,-0.5,0.2,0.3,2\n");
  const at::Tensor x =
      at::tensor(std::vector<double>{0.5, 0.1, -0.3, 1.0, -0.2, 0.7, 0.4, 0.1, 1.1, -0.5, 0.2, 0.3},
                 at::kDouble)
          .reshape({3, 4});
  auto gram_of = [&](const std::string& method, const std::string& options, const std::string& out) {
    const auto r = testing::run_command(testing::lowrank_binary().string() + " kernel gram --method " +
                                        method + " --data " + (dir / "x.csv").string() + " --options '" +
                                        options + "' --out " + (dir / out).string() + " 2>&1");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return SafetensorsFile::open(dir / out).load("gram");
  };
  const FullyConnectedArchitecture arch{3, 1.5, 0.2, "erf"};
  const std::string options =
      R"({"depth": 3, "weight_variance": 1.5, "bias_variance": 0.2, "activation": "erf"})";
  EXPECT_LE(testing::max_abs_diff(gram_of("ntk", options, "ntk.safetensors"),
                                  infinite_width_kernels(arch, x, x).ntk),
            1e-15);
  EXPECT_LE(testing::max_abs_diff(gram_of("nngp", options, "nngp.safetensors"),
                                  infinite_width_kernels(arch, x, x).nngp),
            1e-15);
  // A 4-column input is a tree of filter 2 and depth 2; {"kernel": "nngp"} picks the NNGP.
  EXPECT_LE(testing::max_abs_diff(
                gram_of("cnn", R"({"filter": 2, "depth": 2, "kernel": "nngp"})", "cnn.safetensors"),
                tree_cnn_kernels({2, 2, 2.0, 0.0, "relu"}, x, x).nngp),
            1e-15);
  const auto bad = testing::run_command(
      testing::lowrank_binary().string() + " kernel gram --method ntk --data " + (dir / "x.csv").string() +
      " --options '{\"width\": 3}' --out " + (dir / "bad.safetensors").string() + " 2>&1");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("unknown key \"width\""), std::string::npos) << bad.out;
  EXPECT_FALSE(std::filesystem::exists(dir / "bad.safetensors"));
}

}  // namespace
}  // namespace lowrank::kernel_methods
