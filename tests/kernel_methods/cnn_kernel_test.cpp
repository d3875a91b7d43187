// cnn_kernel: the tree CNN's infinite-width NTK against the autograd Jacobian Gram of wide tree CNNs
// averaged over seeds, its NNGP against the output covariance of random networks, neural-tangents'
// Conv(stride = filter)+Flatten+Dense kernels (fixture), the one-layer case against the fully
// connected kernel, the paper's normalisation, and the estimator.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <vector>

#include "lowrank/kernel_methods/cnn_kernel.h"
#include "lowrank/kernel_methods/estimator.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

// A finite tree CNN written directly with autograd: layer l maps [n, P, C_in] to [n, P/s, C_out] by one
// weight matrix W [C_out, s·C_in] on each window of s children (what a Conv1d with kernel = stride = s
// computes), the NTK parameterisation with fan-in s·C_in; after L layers a dense readout on C channels.
struct TreeCnn {
  TreeCnnArchitecture arch;
  std::vector<at::Tensor> weights, biases;  // requires_grad
};

TreeCnn random_tree_cnn(const TreeCnnArchitecture& arch, int64_t width, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  TreeCnn net{arch, {}, {}};
  int64_t channels = 1;
  for (int64_t l = 0; l <= arch.depth; ++l) {
    const bool readout = l == arch.depth;
    const int64_t fan_in = readout ? channels : arch.filter * channels, fan_out = readout ? 1 : width;
    net.weights.push_back(at::empty({fan_out, fan_in}, at::kDouble).normal_(0, 1, gen).requires_grad_(true));
    net.biases.push_back(at::empty({fan_out}, at::kDouble).normal_(0, 1, gen).requires_grad_(true));
    channels = fan_out;
  }
  return net;
}

at::Tensor tree_cnn_forward(const TreeCnn& net, const at::Tensor& x) {
  const int64_t n = x.size(0), s = net.arch.filter;
  const double sw = std::sqrt(net.arch.weight_variance), sb = std::sqrt(net.arch.bias_variance);
  at::Tensor a = x.reshape({n, x.size(1), 1});  // [n, positions, channels]
  for (int64_t l = 0; l <= net.arch.depth; ++l) {
    const bool readout = l == net.arch.depth;
    const at::Tensor windows =
        readout ? a.reshape({n, a.size(2)}) : a.reshape({n, a.size(1) / s, s * a.size(2)});
    const at::Tensor h =
        sw / std::sqrt(static_cast<double>(windows.size(-1))) * at::matmul(windows, net.weights[l].t()) +
        sb * net.biases[l];
    a = readout ? h : (net.arch.activation == "erf" ? at::erf(h) : at::relu(h));
  }
  return a.reshape({n});
}

at::Tensor autograd_ntk(const TreeCnn& net, const at::Tensor& x) {
  std::vector<at::Tensor> params = net.weights;
  params.insert(params.end(), net.biases.begin(), net.biases.end());
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < x.size(0); ++i) {
    const at::Tensor f = tree_cnn_forward(net, x.narrow(0, i, 1)).sum();
    std::vector<at::Tensor> flat;
    for (const at::Tensor& g : torch::autograd::grad({f}, params)) flat.push_back(g.reshape({-1}));
    rows.push_back(at::cat(flat));
  }
  const at::Tensor j = at::stack(rows);
  return at::matmul(j, j.t());
}

TEST(CnnKernelTest, NtkIsTheWideTreeCnnAverage) {
  const TreeCnnArchitecture arch{3, 2, 2.0, 0.1, "relu"};
  const at::Tensor x = kernel_testing::normal({4, 9}, 31);
  const NeuralKernels limit = tree_cnn_kernels(arch, x, x);
  const int seeds = 16;
  std::vector<at::Tensor> draws;
  for (int s = 0; s < seeds; ++s) draws.push_back(autograd_ntk(random_tree_cnn(arch, 160, 500 + s), x));
  const at::Tensor all = at::stack(draws), mean = all.mean(0), se = all.std(0) / std::sqrt(double(seeds));
  // Within 4 standard errors or 3% (the O(1/width) bias of a width-160 network).
  const at::Tensor gap = (mean - limit.ntk).abs();
  EXPECT_TRUE((gap.le(4 * se) | gap.le(0.03 * limit.ntk.abs())).all().item<bool>()) << "mean\n"
                                                                                    << mean << "\nlimit\n"
                                                                                    << limit.ntk << "\nse\n"
                                                                                    << se;
}

// f(x) [seeds, n] of `seeds` independent tree CNNs of random_tree_cnn's form, as one batch.
at::Tensor random_tree_cnn_outputs(const TreeCnnArchitecture& arch, const at::Tensor& x, int64_t width,
                                   int64_t seeds, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const int64_t n = x.size(0), s = arch.filter;
  const double sw = std::sqrt(arch.weight_variance), sb = std::sqrt(arch.bias_variance);
  at::Tensor a = x.reshape({1, n, x.size(1), 1}).expand({seeds, n, x.size(1), 1});  // [S, n, positions, C]
  for (int64_t l = 0; l <= arch.depth; ++l) {
    const bool readout = l == arch.depth;
    const at::Tensor windows =
        readout ? a.reshape({seeds, n, 1, a.size(3)}) : a.reshape({seeds, n, a.size(2) / s, s * a.size(3)});
    const int64_t fan_in = windows.size(3), fan_out = readout ? 1 : width;
    const at::Tensor w = at::empty({seeds, 1, fan_in, fan_out}, at::kDouble).normal_(0, 1, gen);
    const at::Tensor b = at::empty({seeds, 1, 1, fan_out}, at::kDouble).normal_(0, 1, gen);
    const at::Tensor h = sw / std::sqrt(static_cast<double>(fan_in)) * at::matmul(windows, w) + sb * b;
    a = readout ? h : (arch.activation == "erf" ? at::erf(h) : at::relu(h));
  }
  return a.reshape({seeds, n});
}

TEST(CnnKernelTest, NngpIsTheOutputCovarianceOfRandomTreeCnns) {
  const TreeCnnArchitecture arch{2, 3, 1.6, 0.2, "erf"};
  const at::Tensor x = kernel_testing::normal({3, 8}, 32);
  const NeuralKernels limit = tree_cnn_kernels(arch, x, x);
  const int64_t seeds = 4000;
  const at::Tensor f = random_tree_cnn_outputs(arch, x, 32, seeds, 9000);
  const at::Tensor products = at::einsum("si,sj->sij", {f, f});
  const at::Tensor mean = products.mean(0), se = products.std(0) / std::sqrt(double(seeds));
  EXPECT_TRUE(((mean - limit.nngp).abs() <= 4 * se).all().item<bool>()) << "mean\n"
                                                                        << mean << "\nlimit\n"
                                                                        << limit.nngp << "\nse\n"
                                                                        << se;
}

TEST(CnnKernelTest, MatchesNeuralTangentsConvFlattenDense) {
  const SafetensorsFile f = kernel_testing::fixture("ntk.safetensors");
  struct Case {
    std::string name;
    TreeCnnArchitecture arch;
  };
  for (const Case& c :
       {Case{"cnn_s3_l2", {3, 2, 2.0, 0.0, "relu"}}, Case{"cnn_s2_l3", {2, 3, 1.7, 0.3, "relu"}},
        Case{"cnn_s3_l2_erf", {3, 2, 1.3, 0.1, "erf"}}}) {
    const at::Tensor x = f.load(c.name + "_x"), y = f.load(c.name + "_y");
    const NeuralKernels k = tree_cnn_kernels(c.arch, x, y);
    EXPECT_LE(testing::rel_max_error(k.nngp, f.load(c.name + "_nngp")), 1e-9) << c.name;
    EXPECT_LE(testing::rel_max_error(k.ntk, f.load(c.name + "_ntk")), 1e-9) << c.name;
  }
}

TEST(CnnKernelTest, OneLayerIsTheFullyConnectedKernel) {
  // L = 1: one window covering the whole input, then the readout: a one-hidden-layer dense network.
  const at::Tensor x = kernel_testing::normal({5, 4}, 33), y = kernel_testing::normal({3, 4}, 34);
  const NeuralKernels tree = tree_cnn_kernels({4, 1, 1.4, 0.2, "relu"}, x, y);
  const NeuralKernels dense = infinite_width_kernels({1, 1.4, 0.2, "relu"}, x, y);
  EXPECT_LE(testing::rel_max_error(tree.nngp, dense.nngp), 1e-13);
  EXPECT_LE(testing::rel_max_error(tree.ntk, dense.ntk), 1e-13);
}

TEST(CnnKernelTest, UnitDiagonalWithThePapersNormalisation) {
  // Patches of norm √(s/2) with σ_w² = 2, σ_b = 0: Σ¹(x, x) = 2‖x_j‖²/s = 1 and κ₁(1) = κ₀(1) = 1, so
  // every Σ(x, x) = 1 and Θ(x, x) = Θ_prev + 1 at each of the L − 1 upper convolutions and the readout.
  const int64_t s = 3, depth = 3;
  at::Tensor x = kernel_testing::normal({4, 27}, 35).reshape({4, 9, 3});
  x = (x / x.norm(2, 2, true) * std::sqrt(double(s) / 2)).reshape({4, 27});
  const NeuralKernels k = tree_cnn_kernels({s, depth, 2.0, 0.0, "relu"}, x, x);
  EXPECT_LE((k.nngp.diagonal() - 1).abs().max().item<double>(), 1e-13);
  EXPECT_LE((k.ntk.diagonal() - double(depth + 1)).abs().max().item<double>(), 1e-12);
  EXPECT_GT(at::linalg_eigvalsh(k.ntk).min().item<double>(), 0.0);
}

TEST(CnnKernelTest, EstimatorInterpolatesAndRoundTrips) {
  Dataset data;
  data.x = kernel_testing::normal({12, 9}, 36);
  data.y = at::tanh(data.x.narrow(1, 0, 3).sum(1));
  data.source = "test";
  auto est = create_estimator("cnn_kernel", {{"filter", 3}, {"depth", 2}}, 0);
  est->fit(data);
  EXPECT_LE((est->predict(data.x) - data.y).abs().max().item<double>(), 1e-8);
  testing::TempDir dir;
  est->save(dir / "model");
  const at::Tensor test = kernel_testing::normal({3, 9}, 37);
  EXPECT_LE(testing::max_abs_diff(load_estimator(dir / "model")->predict(test), est->predict(test)), 0.0);
  kernel_testing::expect_error(
      [&] {
        auto wrong = create_estimator("cnn_kernel", {{"filter", 2}, {"depth", 2}}, 0);
        wrong->fit(data);
      },
      "d = filter^depth = 2^2");
  kernel_testing::expect_error([] { create_estimator("cnn_kernel", {{"filter", 1}}, 0); }, "\"filter\"");
  kernel_testing::expect_error([] { create_estimator("cnn_kernel", {{"depth", 0}}, 0); }, "\"depth\"");
}

}  // namespace
}  // namespace lowrank::kernel_methods
