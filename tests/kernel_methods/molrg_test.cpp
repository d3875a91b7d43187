// molrg: the posterior-mean denoiser and its component weights against a self-normalised
// Monte-Carlo estimate of E[x₀ | x_t] and P(k | x_t) from prior draws (within 4 standard errors);
// with K = 1 the trained subspace against the top-r principal subspace of the data (an SVD, the
// paper's PCA equivalence); the estimator's save/load and option errors.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/molrg.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;
using kernel_testing::SingleThreaded;

TEST(MolrgTest, DenoiserIsTheMonteCarloPosteriorMean) {
  const int64_t n = 3, draws = 400000;
  const double scale = 0.8, noise = 0.6;
  const at::Tensor bases = std::get<0>(at::linalg_qr(normal({2, n, 1}, 1)));  // K = 2, r = 1
  // Prior draws: k uniform, a ~ N(0, 1), x₀ = U_k a.
  at::Generator generator = at::detail::createCPUGenerator(2);
  const at::Tensor component = at::randint(2, {draws}, generator, at::kLong);
  const at::Tensor coefficient = at::empty({draws, 1}, at::kDouble).normal_(0, 1, generator);
  const at::Tensor x0 = coefficient * bases.index_select(0, component).squeeze(-1);  // [draws, n]
  const at::Tensor queries = at::tensor({0.9, -0.4, 0.3, -0.2, 1.1, 0.5}, at::kDouble).reshape({2, 3});
  const at::Tensor denoised = molrg_denoise(queries, bases, scale, noise);
  const at::Tensor weights = molrg_weights(queries, bases, scale, noise);
  for (int64_t q = 0; q < queries.size(0); ++q) {
    // Likelihood weights N(x_t; s x₀, γ²I), normalised.
    const at::Tensor log_w = -(queries[q] - scale * x0).pow(2).sum(1) / (2 * noise * noise);
    const at::Tensor w = at::softmax(log_w, 0);
    const at::Tensor mean = at::matmul(w, x0);
    const at::Tensor standard_error = at::matmul(w.pow(2), (x0 - mean).pow(2)).sqrt();
    EXPECT_LT(standard_error.max().item<double>(), 0.02);
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_LE(std::abs(denoised[q][i].item<double>() - mean[i].item<double>()),
                4 * standard_error[i].item<double>())
          << "query " << q << " coordinate " << i;
    }
    const at::Tensor is_first = component.eq(0).to(at::kDouble);
    const double p_first = at::dot(w, is_first).item<double>();
    const double p_error = std::sqrt(at::dot(w.pow(2), (is_first - p_first).pow(2)).item<double>());
    EXPECT_LE(std::abs(weights[q][0].item<double>() - p_first), 4 * p_error) << "query " << q;
  }
}

TEST(MolrgTest, OneComponentLearnsThePrincipalSubspace) {
  SingleThreaded single_threaded;
  const int64_t n = 6, rank = 2;
  // Data with a clear spectral gap: scales 3, 2 on two directions, 0.3 on the rest.
  const at::Tensor rotation = std::get<0>(at::linalg_qr(normal({n, n}, 3)));
  const at::Tensor scales = at::tensor({3.0, 2.0, 0.3, 0.3, 0.3, 0.3}, at::kDouble);
  const at::Tensor x = at::matmul(normal({200, n}, 4) * scales, rotation.t());
  MolrgOptions options;
  options.components = 1;
  options.rank = rank;
  options.noise_levels = 4;
  options.noise_samples = 2;
  options.steps = 150;
  options.learning_rate = 0.05;
  at::Generator generator = at::detail::createCPUGenerator(5);
  const MolrgFit fit = molrg_fit(x, options, generator);
  EXPECT_LT(fit.loss.back(), fit.loss.front());
  // The top-r right singular vectors of the (uncentred) data.
  const at::Tensor principal = std::get<2>(at::linalg_svd(x, false)).slice(0, 0, rank).t();
  EXPECT_LT(subspace_distance(fit.bases[0], principal), 0.1);
}

TEST(MolrgTest, EstimatorRoundTripsAndRefusesBadOptions) {
  SingleThreaded single_threaded;
  const at::Tensor x = normal({20, 5}, 6);
  auto molrg =
      create_estimator("molrg", {{"components", 2}, {"rank", 1}, {"steps", 3}, {"noise_levels", 2}}, 0);
  molrg->fit(make_dataset(x, at::Tensor(), "x"));
  testing::TempDir dir;
  molrg->save(dir / "model");
  EXPECT_TRUE(at::equal(load_estimator(dir / "model")->predict(x), molrg->predict(x)));
  kernel_testing::expect_error(
      [] {
        create_estimator("molrg", {{"sigma_min", 0}}, 0);
      },
      "\"sigma_min\" and \"sigma_max\" must satisfy 0 < sigma_min <= sigma_max");
  kernel_testing::expect_error(
      [] {
        create_estimator("molrg", {{"predict_sigma", -1}}, 0);
      },
      "\"predict_sigma\" must be > 0");
  kernel_testing::expect_error(
      [&] {
        create_estimator("molrg", {{"rank", 9}}, 0)->fit(make_dataset(x, at::Tensor(), "x"));
      },
      "\"rank\" = 9 exceeds the input dimension 5");
}

}  // namespace
}  // namespace lowrank::kernel_methods
