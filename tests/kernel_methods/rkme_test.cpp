// rkme: the reduced-set objective against explicit double sums (0 when the reduced set is the
// data); the simplex QP against projected-gradient descent run to convergence; the z gradient
// against autograd of J written out independently; identification of the generating dataset;
// save/load.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/rkme.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

double gaussian(const at::Tensor& a, const at::Tensor& b, double gamma) {
  double sq = 0;
  for (int64_t k = 0; k < a.size(0); ++k) sq += std::pow(a[k].item<double>() - b[k].item<double>(), 2);
  return std::exp(-gamma * sq);
}

TEST(RkmeTest, ObjectiveMatchesExplicitSumsAndIsZeroForTheData) {
  const at::Tensor x = normal({9, 3}, 1), z = normal({4, 3}, 2);
  const at::Tensor beta = at::tensor({0.1, 0.5, 0.15, 0.25}, at::kDouble);
  const double gamma = 0.3;
  double explicit_j = 0;
  for (int64_t a = 0; a < 4; ++a)
    for (int64_t b = 0; b < 4; ++b)
      explicit_j += beta[a].item<double>() * beta[b].item<double>() * gaussian(z[a], z[b], gamma);
  for (int64_t a = 0; a < 4; ++a)
    for (int64_t i = 0; i < 9; ++i)
      explicit_j -= 2 * beta[a].item<double>() / 9 * gaussian(z[a], x[i], gamma);
  for (int64_t i = 0; i < 9; ++i)
    for (int64_t l = 0; l < 9; ++l) explicit_j += gaussian(x[i], x[l], gamma) / 81;
  EXPECT_NEAR(rkme_objective({z, beta, gamma}, x, at::Tensor()), explicit_j, 1e-13);
  // m = n, z = x, β = α: the embeddings coincide.
  const Rkme exact{x, at::full({9}, 1.0 / 9, at::kDouble), gamma};
  EXPECT_NEAR(rkme_objective(exact, x, at::Tensor()), 0.0, 1e-14);
  EXPECT_NEAR(rkme_mmd2_to_sample(exact, x), 0.0, 1e-14);
}

// Euclidean projection onto the simplex by sorting (Held, Wolfe & Crowder, 1974), in plain doubles.
std::vector<double> project_to_simplex(std::vector<double> v) {
  std::vector<double> sorted = v;
  std::sort(sorted.rbegin(), sorted.rend());
  double cumulative = 0, theta = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    cumulative += sorted[i];
    if (sorted[i] - (cumulative - 1) / static_cast<double>(i + 1) > 0)
      theta = (cumulative - 1) / static_cast<double>(i + 1);
  }
  for (double& e : v) e = std::max(0.0, e - theta);
  return v;
}

TEST(RkmeTest, SimplexQpMatchesProjectedGradient) {
  for (uint64_t seed = 31; seed < 43; ++seed) {
    const at::Tensor points = normal({10, 2}, seed);
    const at::Tensor k = at::exp(-0.5 * at::cdist(points, points).square());
    const at::Tensor c = 0.5 * normal({10}, seed + 100);
    const at::Tensor beta = simplex_qp(k, c);
    // Brute force: projected gradient with step 1/L (L the largest eigenvalue), run far past
    // convergence, in plain doubles.
    const double lipschitz = at::linalg_eigvalsh(k).max().item<double>();
    std::vector<double> kv(k.data_ptr<double>(), k.data_ptr<double>() + 100),
        cv(c.data_ptr<double>(), c.data_ptr<double>() + 10);
    std::vector<double> current(10, 0.1);
    for (int it = 0; it < 200000; ++it) {
      std::vector<double> next(10);
      for (int i = 0; i < 10; ++i) {
        double g = -cv[i];
        for (int j = 0; j < 10; ++j) g += kv[i * 10 + j] * current[j];
        next[i] = current[i] - g / lipschitz;
      }
      current = project_to_simplex(next);
    }
    const at::Tensor reference = at::tensor(current, at::kDouble);
    auto objective = [&](const at::Tensor& b) {
      return 0.5 * at::dot(b, at::mv(k, b)).item<double>() - at::dot(c, b).item<double>();
    };
    EXPECT_NEAR(objective(beta), objective(reference), 1e-12) << "seed " << seed;
    EXPECT_LE((beta - reference).abs().max().item<double>(), 1e-6) << "seed " << seed;
    EXPECT_NEAR(beta.sum().item<double>(), 1.0, 1e-12);
    EXPECT_GE(beta.min().item<double>(), 0.0);
    // Some bound is active, so the active-set logic is exercised.
    EXPECT_TRUE(beta.eq(0).any().item<bool>()) << "seed " << seed;
  }
}

TEST(RkmeTest, ZGradientMatchesAutograd) {
  const at::Tensor x = normal({11, 3}, 41);
  const at::Tensor weights = at::softmax(normal({11}, 42), 0);
  const at::Tensor z = normal({5, 3}, 43), beta = at::tensor({0.3, -0.1, 0.4, 0.2, 0.2}, at::kDouble);
  const double gamma = 0.7;
  // J written out with its own kernel evaluations, differentiated by autograd.
  const at::Tensor leaf = z.clone().set_requires_grad(true);
  auto k = [&](const at::Tensor& a, const at::Tensor& b) {
    return at::exp(-gamma * (a.unsqueeze(1) - b.unsqueeze(0)).square().sum(2));
  };
  const at::Tensor j =
      at::dot(beta, at::mv(k(leaf, leaf), beta)) - 2 * at::dot(beta, at::mv(k(leaf, x), weights));
  j.backward();
  EXPECT_LE(testing::rel_max_error(rkme_z_gradient({z, beta, gamma}, x, weights), leaf.grad()), 1e-12);
}

TEST(RkmeTest, BuildReducesTheObjectiveAndIdentifiesTheSource) {
  at::Generator generator = at::detail::createCPUGenerator(5);
  const at::Tensor a = normal({60, 2}, 51), b = normal({60, 2}, 52) + at::tensor({3.0, 0.0}, at::kDouble);
  RkmeOptions options;
  options.size = 8;
  options.gamma = 0.5;
  options.steps = 0;
  const Rkme start = rkme_build(a, at::Tensor(), options, generator);
  generator = at::detail::createCPUGenerator(5);
  options.steps = 5;
  const Rkme stepped = rkme_build(a, at::Tensor(), options, generator);
  EXPECT_LT(rkme_objective(stepped, a, at::Tensor()), rkme_objective(start, a, at::Tensor()));
  EXPECT_NEAR(stepped.beta.sum().item<double>(), 1.0, 1e-12);
  const Rkme rb = rkme_build(b, at::Tensor(), options, generator);
  const Identification found =
      identify(normal({20, 2}, 53) + at::tensor({3.0, 0.0}, at::kDouble), {stepped, rb});
  EXPECT_EQ(found.ranking.front(), 1);
  EXPECT_LT(found.mmd2[1], found.mmd2[0]);
}

TEST(RkmeTest, EstimatorRoundTrips) {
  const at::Tensor x = normal({40, 3}, 61);
  auto rkme = create_estimator("rkme", {{"size", 6}, {"gamma", 0.4}, {"steps", 2}}, 3);
  rkme->fit(make_dataset(x, at::Tensor(), "gauss"));
  const at::Tensor queries = normal({5, 3}, 62);
  testing::TempDir dir;
  rkme->save(dir / "model");
  EXPECT_TRUE(at::equal(load_estimator(dir / "model")->predict(queries), rkme->predict(queries)));
  const Rkme loaded = load_rkme(dir / "model");
  EXPECT_EQ(loaded.z.size(0), 6);
  EXPECT_DOUBLE_EQ(loaded.gamma, 0.4);
  EXPECT_NEAR(rkme_mmd2_to_sample(loaded, x), rkme->report().at("objective").get<double>(), 1e-12);
}

TEST(RkmeTest, RefusesBadInput) {
  kernel_testing::expect_error([] { create_estimator("rkme", {{"gamma", -1}}, 0); }, "\"gamma\" must be > 0");
  kernel_testing::expect_error([] { create_estimator("rkme", {{"size", 0}}, 0); }, "\"size\" must be >= 1");
  kernel_testing::expect_error([] { simplex_qp(at::eye(3, at::kDouble), at::ones({2}, at::kDouble)); },
                               "QP vector must be [3]");
}

}  // namespace
}  // namespace lowrank::kernel_methods
