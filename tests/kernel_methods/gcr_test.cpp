// gcr: the closed-form Euclidean gradient against autograd of the cross-entropy (fp64); the
// Riemannian gradient's orthogonality SᵀG_R = 0; one RSGD step against the geodesic written as
// S·V·cos(ηΣ)·Vᵀ − U·sin(ηΣ)·Vᵀ by hand (momentum buffer and QR schedule included); classification of
// classes that are unions of 3-D subspaces in R³²; the estimator's save/load and option errors.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <tuple>

#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/gcr.h"
#include "lowrank/linalg/grassmann.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;
using kernel_testing::SingleThreaded;

double max_abs(const at::Tensor& a) {
  return a.abs().max().item<double>();
}

at::Tensor random_bases(int64_t classes, int64_t d, int64_t k, uint64_t seed) {
  return std::get<0>(at::linalg_qr(normal({classes, d, k}, seed)));
}

// `classes` classes in R³², each the union of two random 3-D subspaces (drawn from `basis_seed`),
// plus noise 0.05; the points' coordinates and noise come from `seed`.
std::tuple<at::Tensor, at::Tensor> union_of_subspaces(int64_t per_class, int64_t classes, uint64_t basis_seed,
                                                      uint64_t seed) {
  const int64_t d = 32;
  const at::Tensor bases = random_bases(2 * classes, d, 3, basis_seed);
  const at::Tensor coords = normal({2 * classes, per_class, 3}, seed + 1);
  const at::Tensor points = at::matmul(coords, bases.transpose(1, 2)).reshape({2 * classes * per_class, d});
  const at::Tensor labels = at::arange(2 * classes, at::kLong).floor_divide(2).repeat_interleave(per_class);
  return {points + 0.05 * normal({2 * classes * per_class, d}, seed + 2), labels};
}

TEST(GcrTest, EuclideanGradientMatchesAutograd) {
  const at::Tensor x = normal({9, 6}, 1);
  const at::Tensor labels = at::tensor({0, 1, 2, 0, 1, 2, 2, 1, 0}, at::kLong);
  const at::Tensor bases = random_bases(3, 6, 2, 2);
  const at::Tensor leaf = bases.clone().set_requires_grad(true);
  gcr_loss(x, labels, leaf, 25.0).backward();
  EXPECT_LT(max_abs(gcr_euclidean_gradient(x, labels, bases, 25.0) - leaf.grad()), 1e-10);
}

TEST(GcrTest, RiemannianGradientIsOrthogonalToTheBases) {
  const at::Tensor x = normal({12, 8}, 3);
  const at::Tensor labels = at::arange(12, at::kLong).remainder(4);
  const at::Tensor bases = random_bases(4, 8, 3, 4);
  const at::Tensor riemannian =
      linalg::grassmann_tangent_projection(bases, gcr_euclidean_gradient(x, labels, bases, 25.0));
  EXPECT_GT(max_abs(riemannian), 1e-3);
  EXPECT_LT(max_abs(at::matmul(bases.transpose(1, 2), riemannian)), 1e-13);
}

TEST(GcrTest, RsgdStepFollowsTheGeodesicWithMomentum) {
  const at::Tensor bases = random_bases(2, 6, 2, 5);
  const at::Tensor g1 = normal({2, 6, 2}, 6), g2 = normal({2, 6, 2}, 7);
  GcrOptions options;
  options.learning_rate = 0.3;
  options.momentum = 0.9;
  options.reorth_every = 5;
  at::Tensor buffer;
  const at::Tensor first = gcr_rsgd_step(bases, g1, buffer, options, 1);  // step 1: no QR
  const at::Tensor second = gcr_rsgd_step(first, g2, buffer, options, 2);
  // By hand, class by class: M = μ g1 + g2, G_R = (I − SSᵀ)M = UΣVᵀ, S' = SVcos(ηΣ)Vᵀ − Usin(ηΣ)Vᵀ.
  for (int64_t c = 0; c < 2; ++c) {
    const at::Tensor s = first[c];
    const at::Tensor m = 0.9 * g1[c] + g2[c];
    const at::Tensor gr = m - at::matmul(s, at::matmul(s.t(), m));
    auto [u, sigma, vh] = at::linalg_svd(gr, false);
    const at::Tensor expected = at::matmul(at::matmul(at::matmul(s, vh.t()), at::diag(at::cos(0.3 * sigma))) -
                                               at::matmul(u, at::diag(at::sin(0.3 * sigma))),
                                           vh);
    EXPECT_LT(max_abs(second[c] - expected), 1e-12) << "class " << c;
  }
  EXPECT_LT(gcr_orthonormality_error(second), 1e-12);
  // Step 0 re-orthonormalises by QR: the columns' signs follow diag(R) > 0, the span is the geodesic's.
  at::Tensor fresh;
  const at::Tensor at_zero = gcr_rsgd_step(bases, g1, fresh, options, 0);
  at::Tensor fresh_again;
  const at::Tensor unretracted = gcr_rsgd_step(bases, g1, fresh_again, options, 1);
  EXPECT_LT(max_abs(at::matmul(at_zero, at_zero.transpose(1, 2)) -
                    at::matmul(unretracted, unretracted.transpose(1, 2))),
            1e-12);
}

TEST(GcrTest, ClassifiesUnionsOfSubspaces) {
  SingleThreaded single_threaded;
  const auto [x, labels] = union_of_subspaces(30, 3, 10, 100);
  const auto [x_test, labels_test] = union_of_subspaces(20, 3, 10, 200);  // the same subspaces, new points
  GcrOptions options;
  options.subspace_dim = 6;
  options.epochs = 30;
  options.batch_size = 30;
  at::Generator generator = at::detail::createCPUGenerator(0);
  const GcrFit fit = gcr_fit(x, labels, options, generator);
  EXPECT_LT(fit.loss.back(), 0.5 * fit.loss.front());
  EXPECT_LT(gcr_orthonormality_error(fit.bases), 1e-6);
  const at::Tensor predicted = gcr_logits(x_test, fit.bases, options.gamma).argmax(1);
  EXPECT_GE(predicted.eq(labels_test).to(at::kDouble).mean().item<double>(), 0.95);
}

TEST(GcrTest, EstimatorRoundTripsAndRefusesBadOptions) {
  SingleThreaded single_threaded;
  const auto [x, labels] = union_of_subspaces(10, 2, 20, 300);
  auto gcr = create_estimator("gcr", {{"subspace_dim", 2}, {"epochs", 3}}, 0);
  gcr->fit(make_dataset(x, labels.to(at::kDouble), "subspaces"));
  testing::TempDir dir;
  gcr->save(dir / "model");
  EXPECT_TRUE(at::equal(load_estimator(dir / "model")->predict(x), gcr->predict(x)));
  kernel_testing::expect_error(
      [] {
        create_estimator("gcr", {{"momentum", 1.0}}, 0);
      },
      "\"momentum\" must be in [0, 1)");
  kernel_testing::expect_error([] { create_estimator("gcr", {{"gamma", 0}}, 0); }, "\"gamma\" must be > 0");
  kernel_testing::expect_error(
      [&] {
        create_estimator("gcr", {{"subspace_dim", 40}}, 0)->fit(make_dataset(x, labels.to(at::kDouble), "s"));
      },
      "\"subspace_dim\" = 40 exceeds the input dimension 32");
  kernel_testing::expect_error(
      [&] {
        create_estimator("gcr", Json::object(), 0)->fit(make_dataset(x, 0.5 + labels.to(at::kDouble), "s"));
      },
      "labels y must be integers");
}

}  // namespace
}  // namespace lowrank::kernel_methods
