// funbat: the Matérn state space against the matrix exponential and Van Loan's block exponential;
// the Kalman/RTS chain (and its insertion of unseen coordinates) against the dense GP posterior;
// the core update against a brute-force least-squares solve; the factor messages against explicit
// sums; a rank-2 surface recovered on every seed; the estimator's predictions consistent with its fit
// and its saved model; bad options refused.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <numbers>
#include <vector>

#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/funbat.h"
#include "lowrank/kernel_methods/state_space_gp.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// The Matérn SDE written out by hand: F, and the white-noise spectral density q_c.
at::Tensor hand_feedback(double nu, double lam) {
  if (nu == 0.5) return at::full({1, 1}, -lam, at::kDouble);
  at::Tensor f = at::zeros({2, 2}, at::kDouble);
  f[0][1] = 1;
  f[1][0] = -lam * lam;
  f[1][1] = -2 * lam;
  return f;
}
double spectral_density(double nu, double lam, double variance) {
  return nu == 0.5 ? 2 * lam * variance : 4 * lam * lam * lam * variance;
}

// σ² k_ν(|t − t'| / ℓ), Rasmussen & Williams eq. 4.17.
double matern(double nu, double lengthscale, double variance, double distance) {
  const double r = std::abs(distance);
  if (nu == 0.5) return variance * std::exp(-r / lengthscale);
  const double z = std::sqrt(3.0) * r / lengthscale;
  return variance * (1 + z) * std::exp(-z);
}

TEST(FunbatTest, TransitionAndNoiseMatchMatrixExponential) {
  for (double nu : {0.5, 1.5})
    for (double lengthscale : {0.3, 2.0}) {
      const MaternPrior prior{nu, lengthscale, 1.7};
      const double lam = std::sqrt(2 * nu) / lengthscale;
      const at::Tensor f = hand_feedback(nu, lam);
      const int64_t s = f.size(0);
      EXPECT_LT(max_abs_diff(matern_feedback(prior), f), 1e-15);
      // P∞ solves the Lyapunov equation F P + P Fᵀ + L q_c Lᵀ = 0, L the last unit vector.
      const at::Tensor p = matern_stationary_covariance(prior);
      at::Tensor noise = at::zeros({s, s}, at::kDouble);
      noise[s - 1][s - 1] = spectral_density(nu, lam, prior.variance);
      EXPECT_LT(max_abs_diff(at::matmul(f, p) + at::matmul(p, f.t()) + noise, at::zeros_like(p)), 1e-12);
      for (double delta : {0.0, 0.01, 0.4, 3.0}) {
        const at::Tensor a = matern_transition(prior, delta);
        EXPECT_LT(max_abs_diff(a, at::linalg_matrix_exp(f * delta)), 1e-12) << nu << " " << delta;
        // Van Loan (1978): expm([[−F, L q_c Lᵀ], [0, Fᵀ]] Δ) = [[·, Φ⁻¹Q], [0, Φᵀ]], Φ = expm(FΔ).
        at::Tensor block = at::zeros({2 * s, 2 * s}, at::kDouble);
        block.slice(0, 0, s).slice(1, 0, s).copy_(-f);
        block.slice(0, 0, s).slice(1, s, 2 * s).copy_(noise);
        block.slice(0, s, 2 * s).slice(1, s, 2 * s).copy_(f.t());
        const at::Tensor e = at::linalg_matrix_exp(block * delta);
        const at::Tensor phi = e.slice(0, s, 2 * s).slice(1, s, 2 * s).t();
        const at::Tensor q = at::matmul(phi, e.slice(0, 0, s).slice(1, s, 2 * s));
        // The block exponential holds entries of size e^{λΔ} that cancel in Φ·(Φ⁻¹Q): its own
        // accuracy is about 1e-10 relative to P∞ at λΔ ≈ 17.
        EXPECT_LT(max_abs_diff(matern_process_noise(prior, delta), q), 1e-9 * p.abs().max().item<double>())
            << nu << " " << delta;
      }
    }
}

TEST(FunbatTest, SmootherEqualsDenseGpPosterior) {
  const int64_t steps = 8, outputs = 2;
  const at::Tensor coords = std::get<0>(at::sort(normal({steps}, 21)));
  // Information-form data: a full-rank term, a rank-one term and no data at all among them.
  at::Tensor b = normal({steps, outputs, outputs}, 22);
  b[3][1].zero_();
  b[5].zero_();
  const at::Tensor precision = at::matmul(b, b.transpose(1, 2)) * 4;
  const at::Tensor shift = normal({steps, outputs}, 23) * 3;
  shift[5].zero_();
  const double c = coords[3].item<double>(), c4 = coords[4].item<double>();
  const at::Tensor queries =
      at::tensor(std::vector<double>{coords[0].item<double>() - 0.7, 0.5 * (c + c4), 0.9 * c + 0.1 * c4,
                                     coords[steps - 1].item<double>() + 0.4, coords[2].item<double>()},
                 at::kDouble);
  for (double nu : {0.5, 1.5}) {
    const MaternPrior prior{nu, 0.8, 1.3};
    const MarkovGpPosterior post = smooth_markov_gp(prior, coords, precision, shift);
    const auto [train_mean, train_cov] = smoothed_marginals(post);
    const auto [query_mean, query_cov] = markov_gp_marginals(post, queries);

    // Dense: all points (coordinates then queries), joint index (point, output); prior
    // C = K ⊗ I_R, data Λ on the coordinates' blocks. Posterior Σ = (I + C Λ)⁻¹ C, μ = Σ η.
    const at::Tensor points = at::cat({coords, queries});
    const int64_t m = points.size(0), dim = m * outputs;
    at::Tensor cov = at::zeros({dim, dim}, at::kDouble), lam = at::zeros({dim, dim}, at::kDouble);
    at::Tensor eta = at::zeros({dim}, at::kDouble);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) {
        const double kij = matern(nu, prior.lengthscale, prior.variance,
                                  points[i].item<double>() - points[j].item<double>());
        for (int64_t r = 0; r < outputs; ++r) cov[i * outputs + r][j * outputs + r] = kij;
      }
    for (int64_t i = 0; i < steps; ++i)
      for (int64_t r = 0; r < outputs; ++r) {
        eta[i * outputs + r] = shift[i][r];
        for (int64_t q = 0; q < outputs; ++q) lam[i * outputs + r][i * outputs + q] = precision[i][r][q];
      }
    const at::Tensor sigma = at::linalg_solve(at::eye(dim, at::kDouble) + at::matmul(cov, lam), cov);
    const at::Tensor mu = at::mv(sigma, eta).reshape({m, outputs});
    at::Tensor blocks = at::empty({m, outputs, outputs}, at::kDouble);
    for (int64_t i = 0; i < m; ++i)
      blocks[i] = sigma.slice(0, i * outputs, (i + 1) * outputs).slice(1, i * outputs, (i + 1) * outputs);

    EXPECT_LT(max_abs_diff(train_mean, mu.slice(0, 0, steps)), 1e-9) << nu;
    EXPECT_LT(max_abs_diff(train_cov, blocks.slice(0, 0, steps)), 1e-9) << nu;
    EXPECT_LT(max_abs_diff(query_mean, mu.slice(0, steps)), 1e-9) << nu;
    EXPECT_LT(max_abs_diff(query_cov, blocks.slice(0, steps)), 1e-9) << nu;
    // The data moved the posterior: the comparison is not prior against prior.
    EXPECT_GT(mu.abs().max().item<double>(), 0.1);
  }
  kernel_testing::expect_error(
      [&] {
        smooth_markov_gp({1.5, 1, 1}, coords.flip(0), precision, shift);
      },
      "strictly increasing");
  kernel_testing::expect_error([&] { smooth_markov_gp({2.5, 1, 1}, coords, precision, shift); }, "\"nu\"");
}

// Two or three modes with random factor moments at n entries: means [n, R_k], PSD covariances.
struct Moments {
  std::vector<at::Tensor> means, covs;
};
Moments random_moments(int64_t n, const std::vector<int64_t>& ranks, uint64_t seed) {
  Moments out;
  for (size_t k = 0; k < ranks.size(); ++k) {
    out.means.push_back(normal({n, ranks[k]}, seed + 10 * k));
    const at::Tensor b = normal({n, ranks[k], ranks[k]}, seed + 10 * k + 1) * 0.4;
    out.covs.push_back(at::matmul(b, b.transpose(1, 2)));
  }
  return out;
}

TEST(FunbatTest, CoreUpdateMatchesBruteForceLeastSquares) {
  const int64_t n = 15, r0 = 2, r1 = 3, p = r0 * r1;
  const Moments mo = random_moments(n, {r0, r1}, 31);
  const at::Tensor y = normal({n}, 32);
  const double tau = 2.5, v = 0.7;
  const auto [mean, cov] = funbat_core_posterior(mo.means, mo.covs, y, tau, v);

  // The core mean minimises τ Σ_n E(y_n − wᵀz_n)² + ‖w‖²/v = τ‖y − Z w‖² + τ Σ_n wᵀCov(z_n)w + ‖w‖²/v:
  // stack √τ Z, √τ Cov(z_n)^{1/2} (target 0) and I/√v (target 0) and solve by least squares.
  std::vector<at::Tensor> rows, targets, plain;
  for (int64_t i = 0; i < n; ++i) {
    at::Tensor z = at::empty({p}, at::kDouble), second = at::empty({p, p}, at::kDouble);
    for (int64_t a = 0; a < r0; ++a)
      for (int64_t b = 0; b < r1; ++b) {
        z[a * r1 + b] = mo.means[0][i][a] * mo.means[1][i][b];
        for (int64_t c = 0; c < r0; ++c)
          for (int64_t d = 0; d < r1; ++d)
            second[a * r1 + b][c * r1 + d] = (mo.covs[0][i][a][c] + mo.means[0][i][a] * mo.means[0][i][c]) *
                                             (mo.covs[1][i][b][d] + mo.means[1][i][b] * mo.means[1][i][d]);
      }
    plain.push_back(z.unsqueeze(0));
    rows.push_back(std::sqrt(tau) * z.unsqueeze(0));
    targets.push_back(std::sqrt(tau) * y[i].unsqueeze(0));
    const auto [evals, evecs] = at::linalg_eigh(second - at::outer(z, z));
    rows.push_back(std::sqrt(tau) * (evecs * evals.clamp_min(0).sqrt().unsqueeze(0)).t());
    targets.push_back(at::zeros({p}, at::kDouble));
  }
  rows.push_back(at::eye(p, at::kDouble) / std::sqrt(v));
  targets.push_back(at::zeros({p}, at::kDouble));
  const at::Tensor design = at::cat(rows), target = at::cat(targets);
  const at::Tensor solution = std::get<0>(at::linalg_lstsq(design, target.unsqueeze(1))).squeeze(1);
  EXPECT_LT(max_abs_diff(mean, solution), 1e-9);
  EXPECT_LT(max_abs_diff(cov, at::linalg_inv(at::matmul(design.t(), design))), 1e-9);

  // Point-mass factors and a flat prior: the ordinary least squares of y on the explicit z_n.
  std::vector<at::Tensor> zero_covs = {at::zeros_like(mo.covs[0]), at::zeros_like(mo.covs[1])};
  const auto [ols_mean, ols_cov] = funbat_core_posterior(mo.means, zero_covs, y, 1.0, 1e12);
  const at::Tensor ols = std::get<0>(at::linalg_lstsq(at::cat(plain), y.unsqueeze(1))).squeeze(1);
  EXPECT_LT(max_abs_diff(ols_mean, ols), 1e-6);
}

TEST(FunbatTest, FactorMessagesMatchExplicitSums) {
  // Three modes with ranks (2, 3, 2); the message to mode 1 contracts the core's modes 0 and 2.
  const int64_t n = 6;
  const Moments mo = random_moments(n, {2, 3, 2}, 41);
  const at::Tensor core = normal({2, 3, 2}, 42), y = normal({n}, 43);
  const double tau = 1.8;
  const auto [lam, eta] = funbat_factor_messages(mo.means, mo.covs, core, y, tau, 1);
  auto second = [&](int64_t k, int64_t i, int64_t a, int64_t b) {
    return (mo.covs[k][i][a][b] + mo.means[k][i][a] * mo.means[k][i][b]).item<double>();
  };
  double largest = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < 3; ++s) {
      double ea = 0;
      for (int64_t r = 0; r < 2; ++r)
        for (int64_t t = 0; t < 2; ++t)
          ea += core[r][s][t].item<double>() * mo.means[0][i][r].item<double>() *
                mo.means[2][i][t].item<double>();
      EXPECT_NEAR(eta[i][s].item<double>(), tau * y[i].item<double>() * ea, 1e-12);
      for (int64_t s2 = 0; s2 < 3; ++s2) {
        double eaa = 0;
        for (int64_t r = 0; r < 2; ++r)
          for (int64_t t = 0; t < 2; ++t)
            for (int64_t r2 = 0; r2 < 2; ++r2)
              for (int64_t t2 = 0; t2 < 2; ++t2)
                eaa += core[r][s][t].item<double>() * core[r2][s2][t2].item<double>() * second(0, i, r, r2) *
                       second(2, i, t, t2);
        EXPECT_NEAR(lam[i][s][s2].item<double>(), tau * eaa, 1e-10);
        largest = std::max(largest, std::abs(eaa));
      }
    }
  EXPECT_GT(largest, 0.1);
}

// A smooth rank-2 function on [0, 1]²: Σ_rs W_rs g_r(x₁) h_s(x₂).
at::Tensor smooth_tensor(const at::Tensor& x) {
  const at::Tensor x1 = x.select(1, 0), x2 = x.select(1, 1);
  const at::Tensor g0 = at::sin(2 * std::numbers::pi * x1), g1 = at::cos(std::numbers::pi * x1);
  const at::Tensor h0 = at::cos(2 * std::numbers::pi * x2), h1 = x2 * 2 - 1;
  return 1.0 * g0 * h0 + 0.5 * g0 * h1 - 0.7 * g1 * h0 + 0.8 * g1 * h1;
}

TEST(FunbatTest, RecoversARankTwoSurfaceOnEverySeed) {
  // f = Σ W_rs g_r(x₁) h_s(x₂) with two components of clearly different size (the repro's function):
  // a fit that loses one of them stalls at a test RMSE ≈ 0.26 against the noise-free f; a fit of
  // both reaches about the noise-free error of an exact GP (≈ 0.05 at n = 200, σ = 0.1).
  kernel_testing::SingleThreaded single;
  const double pi = std::numbers::pi;
  auto truth = [pi](const at::Tensor& x) {
    const at::Tensor x1 = x.select(1, 0), x2 = x.select(1, 1);
    const at::Tensor g0 = at::sin(2 * pi * x1), g1 = at::exp(-2 * x1);
    const at::Tensor h0 = at::cos(pi * x2), h1 = x2 * at::sin(3 * pi * x2);
    return 1.0 * g0 * h0 + 0.6 * g0 * h1 - 0.8 * g1 * h0 + 0.9 * g1 * h1;
  };
  for (uint64_t seed = 0; seed < 4; ++seed) {
    at::Generator gen = at::detail::createCPUGenerator(300 + seed);
    const at::Tensor x = at::rand({200, 2}, gen, at::kDouble);
    const at::Tensor y = truth(x) + 0.1 * at::empty({200}, at::kDouble).normal_(0, 1, gen);
    const at::Tensor x_test = at::rand({300, 2}, gen, at::kDouble);
    auto est = create_estimator("funbat",
                                {{"rank", 2}, {"nu", 1.5}, {"lengthscale", 0.3}, {"iterations", 25}}, seed);
    est->fit(make_dataset(x, y, "rank-2 surface"));
    const double rmse = (est->predict(x_test) - truth(x_test)).square().mean().sqrt().item<double>();
    EXPECT_LT(rmse, 0.1) << "seed " << seed;
  }
}

TEST(FunbatTest, FitPredictsConsistentlyAndRoundTrips) {
  // Prediction at the training coordinates reads the smoothed chain and reproduces the reported
  // training RMSE; save/load keeps predictions.
  kernel_testing::SingleThreaded single;
  at::Generator gen = at::detail::createCPUGenerator(51);
  const at::Tensor x = at::rand({120, 2}, gen, at::kDouble);
  const at::Tensor y = smooth_tensor(x) + 0.05 * normal({120}, 52);
  const at::Tensor x_test = at::rand({50, 2}, gen, at::kDouble);
  auto est = create_estimator("funbat", {{"rank", 2}, {"lengthscale", 0.3}, {"iterations", 10}}, 7);
  est->fit(make_dataset(x, y, "synthetic"));
  const double train_rmse = (est->predict(x) - y).square().mean().sqrt().item<double>();
  EXPECT_NEAR(train_rmse, est->report()["train_rmse"].get<double>(), 1e-9);
  EXPECT_LT(train_rmse, y.std().item<double>());
  const at::Tensor predicted = est->predict(x_test);
  testing::TempDir dir;
  est->save(dir.path());
  const auto back = load_estimator(dir.path());
  EXPECT_LT(max_abs_diff(back->predict(x_test), predicted), 1e-12);
}

TEST(FunbatTest, BadOptionsAndDataAreRefused) {
  kernel_testing::expect_error([] { create_estimator("funbat", {{"nu", 2.5}}, 0); }, "\"nu\"");
  kernel_testing::expect_error(
      [] {
        create_estimator("funbat", {{"lengthscale", 0.0}}, 0);
      },
      "\"lengthscale\"");
  kernel_testing::expect_error([] { create_estimator("funbat", {{"rank", 0}}, 0); }, "\"rank\"");
  kernel_testing::expect_error([] { create_estimator("funbat", {{"damping", 1.0}}, 0); }, "\"damping\"");
  kernel_testing::expect_error(
      [] {
        create_estimator("funbat", {{"core_variance", -1.0}}, 0);
      },
      "\"core_variance\"");
  kernel_testing::expect_error(
      [] {
        create_estimator("funbat", {{"initial_noise_fraction", 0.0}}, 0);
      },
      "\"initial_noise_fraction\"");
  auto est = create_estimator("funbat", Json::object(), 0);
  kernel_testing::expect_error(
      [&] {
        est->fit(make_dataset(at::rand({5, 2}, at::kDouble), at::Tensor(), "no targets"));
      },
      "values y");
}

}  // namespace
}  // namespace lowrank::kernel_methods
