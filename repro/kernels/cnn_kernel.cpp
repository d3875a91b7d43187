// Reproduction of Cagnetta, Favero & Wyart, 2023, "What Can Be Learnt With Wide Convolutional Neural
// Networks?" (ICML, arXiv:2208.01003), with kernel_methods/cnn_kernel.h (the tree-CNN NTK) against
// kernel_methods/ntk.h (the fully connected NTK).
//
// The paper's claim: in the teacher-student setting, ridgeless regression with a deep CNN's kernel
// (filter = stride = s, L layers, d = s^L) learns a target at the rate set by the dimension of the
// target's support, not by d: the generalisation error decays as n^{−β} with β ∝ 1/d_eff, so a target
// that depends on one patch only (d_eff = s) is learnt faster than a global one (d_eff = d), by a factor
// d/s in the exponent for these kernels; a fully connected kernel does not adapt (both exponents ∝ 1/d).
// Here: s = 3, L = 2 (d = 9), every input patch uniform on the unit sphere S² (the paper's inputs);
// teachers are Gaussian-process draws with covariance the tree NTK of depth 1 on patch 1 alone (local)
// and the tree NTK of depth 2 on all nine coordinates (global). Students: kernel ridge regression with
// the tree NTK (s = 3, L = 2) and with the fully connected NTK (L = 2), both ReLU, σ_w² = 2, σ_b² = 0,
// ridge λ = 10⁻⁸ · mean diag K (ridgeless up to round-off). The test MSE (relative to the teacher's
// variance on 1000 test points) over n, its log-log slope −β per teacher and student, and the ratio
// β_local / β_global.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/cnn_kernel.h"
#include "lowrank/kernel_methods/ntk.h"
#include "repro/kernels/repro.h"

namespace lowrank::repro_kernels {
namespace {

using namespace kernel_methods;

constexpr int64_t kFilter = 3, kDepth = 2, kDim = 9;
constexpr double kRelativeRidge = 1e-8;

// n points whose three patches are each uniform on S².
at::Tensor patch_sphere_points(int64_t n, at::Generator& gen) {
  const at::Tensor x = at::empty({n, kDim / kFilter, kFilter}, at::kDouble).normal_(0, 1, gen);
  return (x / x.norm(2, 2, true)).reshape({n, kDim});
}

// One draw of N(0, K) for K [n, n] positive semidefinite (Cholesky with a growing jitter).
at::Tensor gaussian_process_draw(const at::Tensor& k, at::Generator& gen) {
  const double scale = k.diagonal().mean().item<double>();
  const at::Tensor eye = at::eye(k.size(0), at::kDouble);
  for (double jitter = 1e-10; jitter < 1e-3; jitter *= 10) {
    const auto [factor, info] = at::linalg_cholesky_ex(k + jitter * scale * eye);
    if (info.item<int64_t>() == 0)
      return at::matmul(factor, at::empty({k.size(0)}, at::kDouble).normal_(0, 1, gen));
  }
  LR_CHECK(false, InternalError, "cnn_kernel repro: the teacher covariance is not positive definite");
  return {};
}

// Relative test MSE of ridge regression with kernel `kernel` fitted on the first n points.
template <typename KernelFunction>
double test_error(const KernelFunction& kernel, const at::Tensor& x, const at::Tensor& y, int64_t n,
                  const at::Tensor& x_test, const at::Tensor& y_test) {
  const at::Tensor x_train = x.slice(0, 0, n), y_train = y.slice(0, 0, n);
  const at::Tensor k = kernel(x_train, x_train);
  const double ridge = kRelativeRidge * k.diagonal().mean().item<double>();
  const at::Tensor coef =
      at::linalg_solve(k + ridge * at::eye(n, at::kDouble), y_train.unsqueeze(1)).squeeze(1);
  const at::Tensor prediction = at::matmul(kernel(x_test, x_train), coef);
  return ((prediction - y_test).pow(2).mean() / y_test.pow(2).mean()).item<double>();
}

ReproResult run(const ReproOptions& options) {
  const std::vector<int64_t> sizes = options.quick ? std::vector<int64_t>{32, 64, 128, 256}
                                                   : std::vector<int64_t>{64, 128, 256, 512, 1024, 2048};
  const int64_t n_test = options.quick ? 200 : 1000;
  const TreeCnnArchitecture tree{.filter = kFilter, .depth = kDepth};
  const TreeCnnArchitecture local_tree{.filter = kFilter, .depth = 1};
  const FullyConnectedArchitecture fully_connected;  // L = 2, ReLU, σ_w² = 2, σ_b² = 0
  auto cnn = [&](const at::Tensor& a, const at::Tensor& b) { return tree_cnn_kernels(tree, a, b).ntk; };
  auto fc = [&](const at::Tensor& a, const at::Tensor& b) {
    return infinite_width_kernels(fully_connected, a, b).ntk;
  };
  const std::vector<std::string> teachers = {"local", "global"}, students = {"CNN NTK", "FC NTK"};
  // errors[teacher][student][seed][size]
  std::vector<std::vector<std::vector<std::vector<double>>>> errors(
      2, std::vector<std::vector<std::vector<double>>>(2));
  const int64_t total = sizes.back() + n_test;
  for (int64_t seed = 0; seed < options.seeds; ++seed) {
    at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(100 + seed));
    const at::Tensor x = patch_sphere_points(total, gen);
    const at::Tensor patch = x.slice(1, 0, kFilter);
    const std::vector<at::Tensor> targets = {
        gaussian_process_draw(tree_cnn_kernels(local_tree, patch, patch).ntk, gen),
        gaussian_process_draw(tree_cnn_kernels(tree, x, x).ntk, gen)};
    const at::Tensor x_test = x.slice(0, sizes.back());
    for (size_t t = 0; t < targets.size(); ++t) {
      const at::Tensor y_test = targets[t].slice(0, sizes.back());
      std::vector<double> cnn_row, fc_row;
      for (int64_t n : sizes) {
        cnn_row.push_back(test_error(cnn, x, targets[t], n, x_test, y_test));
        fc_row.push_back(test_error(fc, x, targets[t], n, x_test, y_test));
      }
      errors[t][0].push_back(cnn_row);
      errors[t][1].push_back(fc_row);
    }
  }

  ReproResult out;
  std::vector<double> n_values(sizes.begin(), sizes.end());
  Table curves{"Relative test MSE (mean over seeds)", {"n"}, {}};
  double beta[2][2];
  std::vector<std::vector<double>> means;
  for (size_t t = 0; t < 2; ++t)
    for (size_t s = 0; s < 2; ++s) {
      curves.columns.push_back(students[s] + ", " + teachers[t] + " teacher");
      means.push_back(mean_over_seeds(errors[t][s]));
      beta[t][s] = -loglog_slope(n_values, means.back());
    }
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::vector<OrderedJson> row = {sizes[i]};
    for (const auto& m : means) row.push_back(m[i]);
    curves.rows.push_back(row);
  }
  out.tables.push_back(curves);
  Table exponents{"Learning-curve exponents β (error ∝ n^{−β}, least squares over n)",
                  {"student", "β local", "β global", "ratio local/global"},
                  {}};
  for (size_t s = 0; s < 2; ++s)
    exponents.rows.push_back({students[s], beta[0][s], beta[1][s], beta[0][s] / beta[1][s]});
  out.tables.push_back(exponents);

  const double cnn_ratio = beta[0][0] / beta[1][0], fc_ratio = beta[0][1] / beta[1][1];
  auto betas = [&](size_t s) {
    return "β local " + format_number(beta[0][s]) + ", β global " + format_number(beta[1][s]);
  };
  out.claims.push_back({"cnn_adapts_to_local_target",
                        "CNN NTK: β_local / β_global ≥ 1.5 (d/s = 3 if β ∝ 1/d_eff)",
                        "a deep CNN kernel learns a local target at a rate set by the patch dimension",
                        beta[1][0] > 0 && cnn_ratio >= 1.5,
                        "ratio " + format_number(cnn_ratio) + " (" + betas(0) + ")", false});
  out.claims.push_back({"fully_connected_does_not_adapt", "fully connected NTK: β_local / β_global ≤ 1.3",
                        "a fully connected kernel's rate is set by the input dimension for both targets",
                        beta[1][1] > 0 && fc_ratio <= 1.3,
                        "ratio " + format_number(fc_ratio) + " (" + betas(1) + ")", true});
  out.setup = "s = 3, L = 2 (d = 9), patches uniform on S²; n " + join_numbers(n_values, 5) + ", " +
              std::to_string(n_test) + " test points; GP teachers (tree NTK on patch 1 / on all of x); " +
              std::to_string(options.seeds) + " seeds" + (options.quick ? " (quick sizes)" : "");
  return out;
}

}  // namespace

KernelRepro cnn_kernel_repro() {
  return {"cnn_kernel",
          "Cagnetta, Favero & Wyart 2023, \"What Can Be Learnt With Wide Convolutional Neural Networks?\" "
          "(ICML)",
          "deep CNN kernels adapt to the spatial scale of the target: local targets are learnt much faster",
          &run};
}

}  // namespace lowrank::repro_kernels
