// dkm: at the NNGP initialisation every KL is 0 and the objective is the NNGP evidence (the kernel
// recursion and the evidence recomputed here with scalar loops and a dense solve); the KL's gradient
// against its closed form ½(K⁻¹ − G⁻¹) by autograd and central differences, 0 at G = K; the KL
// against a Monte-Carlo estimate; the sparse DKM with every point inducing against the full one, and
// its collapsed bound below the exact evidence otherwise; the predictive mean at the NNGP against
// the GP posterior recomputed here; a fit raises L; save/load; bad options.
#include <gtest/gtest.h>

#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numbers>

#include "lowrank/kernel_methods/dkm.h"
#include "lowrank/kernel_methods/estimator.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

// κ₁ on a Gram matrix with scalar arithmetic: ‖a‖‖b‖(sin θ + (π − θ) cos θ)/π, plus jitter·I.
at::Tensor arccos1_loops(const at::Tensor& g, double jitter) {
  const int64_t n = g.size(0);
  at::Tensor k = at::empty({n, n}, at::kDouble);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double gi = g[i][i].item<double>(), gj = g[j][j].item<double>(), gij = g[i][j].item<double>();
      const double norms = std::sqrt(gi * gj);
      const double c = std::clamp(gij / norms, -1.0, 1.0), theta = std::acos(c);
      k[i][j] = norms * (std::sin(theta) + (std::numbers::pi - theta) * c) / std::numbers::pi +
                (i == j ? jitter : 0);
    }
  return k;
}

// Σ_λ log N(y_λ; 0, C) by a dense solve and slogdet (no Cholesky).
double log_evidence(const at::Tensor& c, const at::Tensor& y) {
  const double n = static_cast<double>(y.size(0)), k = static_cast<double>(y.size(1));
  const double quadratic = (y * at::linalg_solve(c, y)).sum().item<double>();
  const double logdet = std::get<1>(at::linalg_slogdet(c)).item<double>();
  return -0.5 * quadratic - 0.5 * k * logdet - 0.5 * n * k * std::log(2 * std::numbers::pi);
}

at::Tensor random_spd(int64_t p, uint64_t seed) {
  const at::Tensor a = normal({p, p}, seed);
  return at::matmul(a, a.t()) / static_cast<double>(p) + 0.5 * at::eye(p, at::kDouble);
}

TEST(DkmTest, NngpInitialisationHasZeroKlAndTheNngpEvidence) {
  kernel_testing::SingleThreaded single;
  const at::Tensor x = normal({12, 3}, 1), y = normal({12, 2}, 2);
  DkmOptions o;
  o.layers = 3;
  o.kernel_jitter = 1e-3;
  const double noise = 0.3;
  const std::vector<at::Tensor> grams = dkm_nngp_grams(x, o);
  const DkmTerms terms = dkm_terms(x, y, x, grams, at::scalar_tensor(noise, at::kDouble), false, o);
  ASSERT_EQ(terms.kl.size(), 3u);
  for (const at::Tensor& kl : terms.kl) EXPECT_NEAR(kl.item<double>(), 0.0, 1e-10);
  at::Tensor g = at::matmul(x, x.t()) / 3.0;
  for (int l = 0; l <= o.layers; ++l) g = arccos1_loops(g, o.kernel_jitter);
  const double evidence = log_evidence(g + noise * at::eye(12, at::kDouble), y);
  EXPECT_NEAR(terms.log_likelihood.item<double>(), evidence, 1e-9 * std::abs(evidence));
  EXPECT_NEAR(terms.objective.item<double>(), evidence, 1e-9 * std::abs(evidence));
}

TEST(DkmTest, KlGradientIsHalfKInverseMinusGInverseAndVanishesAtK) {
  const at::Tensor k = random_spd(5, 3), g0 = random_spd(5, 4);
  auto gradient = [&](const at::Tensor& g_value) {
    at::Tensor g = g_value.clone().set_requires_grad(true);
    return torch::autograd::grad({dkm_gaussian_kl(g, k)}, {g})[0];
  };
  const at::Tensor expected = 0.5 * (at::linalg_inv(k) - at::linalg_inv(g0));
  EXPECT_LT((gradient(g0) - expected).abs().max().item<double>(), 1e-10);
  EXPECT_LT(gradient(k).abs().max().item<double>(), 1e-10);
  // Central differences along symmetric directions E = e_i e_jᵀ + e_j e_iᵀ: ⟨∇, E⟩ = 2∇_ij (i ≠ j).
  const double h = 1e-5;
  for (const auto& [i, j] : std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {1, 3}, {4, 2}}) {
    at::Tensor e = at::zeros({5, 5}, at::kDouble);
    e[i][j] = 1;
    e[j][i] = 1;
    for (const at::Tensor& at_g : {g0, k}) {
      const double fd =
          (dkm_gaussian_kl(at_g + h * e, k) - dkm_gaussian_kl(at_g - h * e, k)).item<double>() / (2 * h);
      const double closed = (0.5 * (at::linalg_inv(k) - at::linalg_inv(at_g)) * e).sum().item<double>();
      EXPECT_NEAR(fd, closed, 1e-7) << "(" << i << ", " << j << ")";
    }
  }
}

TEST(DkmTest, KlMatchesMonteCarlo) {
  const at::Tensor k = random_spd(3, 5), g = random_spd(3, 6);
  const int64_t samples = 200000;
  const at::Tensor z = at::matmul(normal({samples, 3}, 7), at::linalg_cholesky(g).t());
  // log N(z; 0, G) − log N(z; 0, K) per sample.
  auto quadratic = [&](const at::Tensor& c) { return (z * at::linalg_solve(c, z.t()).t()).sum(1); };
  const double logdet_ratio =
      std::get<1>(at::linalg_slogdet(k)).item<double>() - std::get<1>(at::linalg_slogdet(g)).item<double>();
  const at::Tensor log_ratio = 0.5 * (logdet_ratio + quadratic(k) - quadratic(g));
  const double estimate = log_ratio.mean().item<double>();
  const double standard_error = log_ratio.std().item<double>() / std::sqrt(static_cast<double>(samples));
  const double kl = dkm_gaussian_kl(g, k).item<double>();
  EXPECT_GT(kl, 0.05);
  EXPECT_NEAR(kl, estimate, 4 * standard_error);
}

// NNGP Grams moved by a random symmetric positive definite amount, so the conditional is exercised.
std::vector<at::Tensor> moved_grams(const at::Tensor& z, const DkmOptions& o, uint64_t seed) {
  std::vector<at::Tensor> grams = dkm_nngp_grams(z, o);
  for (size_t l = 0; l < grams.size(); ++l) grams[l] = grams[l] + 0.2 * random_spd(z.size(0), seed + l);
  return grams;
}

TEST(DkmTest, SparseWithEveryPointInducingIsTheFullDkm) {
  kernel_testing::SingleThreaded single;
  const at::Tensor x = normal({10, 3}, 8), y = normal({10, 2}, 9);
  const at::Tensor noise = at::scalar_tensor(0.2, at::kDouble);
  for (const std::string kernel : {"rbf", "arccos1"}) {
    for (const double gram_jitter : {0.0, 0.1}) {
      DkmOptions o;
      o.kernel = kernel;
      o.nu = 2.5;
      o.kernel_jitter = 0;
      o.gram_jitter = gram_jitter;
      const std::vector<at::Tensor> grams = moved_grams(x, o, 10);
      const DkmTerms full = dkm_terms(x, y, x, grams, noise, false, o);
      const DkmTerms sparse = dkm_terms(x, y, x, grams, noise, true, o);
      EXPECT_GT(full.kl[0].item<double>(), 1e-3);
      EXPECT_NEAR(sparse.log_likelihood.item<double>(), full.log_likelihood.item<double>(), 1e-8) << kernel;
      EXPECT_NEAR(sparse.objective.item<double>(), full.objective.item<double>(), 1e-8) << kernel;
      for (size_t l = 0; l < grams.size(); ++l)
        EXPECT_NEAR(sparse.kl[l].item<double>(), full.kl[l].item<double>(), 1e-8) << kernel;
    }
  }
}

TEST(DkmTest, SparseBoundAtTheNngpStaysBelowTheExactEvidence) {
  kernel_testing::SingleThreaded single;
  const at::Tensor x = normal({16, 3}, 11), y = normal({16, 1}, 12);
  const at::Tensor noise = at::scalar_tensor(0.3, at::kDouble);
  DkmOptions o;
  o.kernel = "rbf";
  const DkmTerms full = dkm_terms(x, y, x, dkm_nngp_grams(x, o), noise, false, o);
  const at::Tensor z = x.slice(0, 0, 6);
  const DkmTerms sparse = dkm_terms(x, y, z, dkm_nngp_grams(z, o), noise, true, o);
  for (const at::Tensor& kl : sparse.kl) EXPECT_NEAR(kl.item<double>(), 0.0, 1e-10);
  EXPECT_LT(sparse.log_likelihood.item<double>(), full.log_likelihood.item<double>() - 1e-3);
}

TEST(DkmTest, NngpPredictionIsTheGpPosterior) {
  kernel_testing::SingleThreaded single;
  const at::Tensor x = normal({9, 2}, 13), x_test = normal({4, 2}, 14);
  const at::Tensor y = 3 + 2 * normal({9}, 15);
  DkmOptions o;
  o.nngp = true;
  o.learn_noise = false;
  o.noise = 0.25;
  o.kernel_jitter = 1e-4;
  const DkmModel model = dkm_fit(x, y, o, 0);
  const DkmPrediction p = dkm_predict(model, x_test, o);
  // The NNGP kernel of all 13 points; the GP posterior of the standardised targets. The jitter sits
  // on the training points' diagonal and on the test points' prior variance alike.
  at::Tensor g = at::matmul(at::cat({x, x_test}), at::cat({x, x_test}).t()) / 2.0;
  for (int l = 0; l <= o.layers; ++l) g = arccos1_loops(g, o.kernel_jitter);
  const at::Tensor k = g.slice(0, 0, 9).slice(1, 0, 9), k_star = g.slice(0, 9).slice(1, 0, 9);
  const double mean = y.mean().item<double>(), scale = y.std(0, false).item<double>();
  const at::Tensor c = k + o.noise * at::eye(9, at::kDouble);
  const at::Tensor posterior_mean =
      at::matmul(k_star, at::linalg_solve(c, (y - mean) / scale)) * scale + mean;
  const at::Tensor posterior_var = (g.slice(0, 9).slice(1, 9).diagonal() -
                                    (k_star * at::linalg_solve(c, k_star.t()).t()).sum(1) + o.noise) *
                                   scale * scale;
  EXPECT_LT((p.mean.squeeze(1) - posterior_mean).abs().max().item<double>(), 1e-8);
  EXPECT_LT((p.variance.squeeze(1) - posterior_var).abs().max().item<double>(), 1e-8);
}

TEST(DkmTest, FitRaisesTheObjectiveAndSavesAndLoads) {
  kernel_testing::SingleThreaded single;
  const at::Tensor x = normal({24, 2}, 16);
  const at::Tensor y = at::sin(2 * x.select(1, 0)) + 0.1 * normal({24}, 17);
  for (const int64_t inducing : {0, 8}) {
    DkmOptions o;
    o.inducing = inducing;
    o.steps = 40;
    o.lr = 0.02;
    DkmOptions init = o;
    init.steps = 0;
    init.learn_noise = false;
    const DkmModel start = dkm_fit(x, y, init, 3), fitted = dkm_fit(x, y, o, 3);
    EXPECT_NEAR(start.objective, start.log_likelihood, 1e-9 * std::abs(start.log_likelihood));
    EXPECT_GT(fitted.objective, start.objective + 1) << "inducing " << inducing;
  }
  const auto estimator = create_estimator("dkm", Json{{"steps", 10}, {"inducing", 6}}, 4);
  estimator->fit(make_dataset(x, y, "test"));
  const auto dir = std::filesystem::temp_directory_path() / "lowrank_dkm_test_model";
  std::filesystem::remove_all(dir);
  estimator->save(dir);
  const auto back = load_estimator(dir);
  const at::Tensor x_test = normal({5, 2}, 18);
  EXPECT_TRUE(at::allclose(back->predict(x_test), estimator->predict(x_test), 0, 1e-12));
  EXPECT_EQ(back->predict(x_test).dim(), 1);
  std::filesystem::remove_all(dir);
}

TEST(DkmTest, BadOptionsNameTheOption) {
  kernel_testing::expect_error([] { create_estimator("dkm", Json{{"nu", 0.0}}, 0); }, "\"nu\"");
  kernel_testing::expect_error([] { create_estimator("dkm", Json{{"kernel", "tanh"}}, 0); }, "tanh");
  kernel_testing::expect_error([] { create_estimator("dkm", Json{{"layers", 0}}, 0); }, "\"layers\"");
  kernel_testing::expect_error([] { create_estimator("dkm", Json{{"noise", -1.0}}, 0); }, "\"noise\"");
  kernel_testing::expect_error([] { create_estimator("dkm", Json{{"inducing", -2}}, 0); }, "\"inducing\"");
  const auto estimator = create_estimator("dkm", Json::object(), 0);
  kernel_testing::expect_error(
      [&] {
        estimator->fit(make_dataset(normal({5, 2}, 1), at::Tensor(), "x"));
      },
      "targets");
}

}  // namespace
}  // namespace lowrank::kernel_methods
