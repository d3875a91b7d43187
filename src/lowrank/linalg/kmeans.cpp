#include "lowrank/linalg/kmeans.h"

#include "lowrank/core/error.h"

namespace lowrank::linalg {
namespace {

void check_input(const at::Tensor& x, int64_t k) {
  LR_CHECK(x.dim() == 2, InvalidArgument, "kmeans: the data must be [n, d], got ", x.sizes());
  LR_CHECK(k >= 1 && k <= x.size(0), InvalidArgument, "kmeans: k must be in [1, n = ", x.size(0), "], got ",
           k);
}

}  // namespace

at::Tensor squared_distances_to(const at::Tensor& x, const at::Tensor& centers) {
  const at::Tensor d2 = (x * x).sum(1, true) - 2 * at::matmul(x, centers.t()) + (centers * centers).sum(1);
  return d2.clamp_min(0);
}

at::Tensor kmeans_plus_plus(const at::Tensor& x, int64_t k, at::Generator& generator) {
  check_input(x, k);
  const int64_t n = x.size(0);
  std::vector<int64_t> chosen;
  chosen.push_back(at::randint(n, {1}, generator, at::kLong).item<int64_t>());
  at::Tensor nearest = squared_distances_to(x, x.index({at::tensor(chosen)})).squeeze(1);
  while (static_cast<int64_t>(chosen.size()) < k) {
    const double total = nearest.sum().item<double>();
    int64_t next;
    if (total <= 0) {
      // Every point coincides with a centre: D² sampling is undefined, any point will do.
      next = at::randint(n, {1}, generator, at::kLong).item<int64_t>();
    } else {
      next = at::multinomial(nearest.to(at::kDouble) / total, 1, false, generator).item<int64_t>();
    }
    chosen.push_back(next);
    nearest = at::minimum(nearest, squared_distances_to(x, x[next].unsqueeze(0)).squeeze(1));
  }
  return x.index({at::tensor(chosen)}).clone();
}

KMeansResult kmeans(const at::Tensor& x, int64_t k, at::Generator& generator, int64_t max_iterations) {
  check_input(x, k);
  LR_CHECK(max_iterations >= 1, InvalidArgument, "kmeans: max_iterations must be >= 1, got ", max_iterations);
  KMeansResult result;
  result.centers = kmeans_plus_plus(x, k, generator);
  at::Tensor assignments;
  for (int64_t it = 1; it <= max_iterations; ++it) {
    const at::Tensor next = squared_distances_to(x, result.centers).argmin(1);
    result.iterations = it;
    if (assignments.defined() && next.equal(assignments)) break;
    assignments = next;
    at::Tensor sums = at::zeros_like(result.centers).index_add_(0, assignments, x);
    at::Tensor counts =
        at::zeros({k}, x.options()).index_add_(0, assignments, at::ones({x.size(0)}, x.options()));
    const at::Tensor occupied = counts.gt(0);
    result.centers =
        at::where(occupied.unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1), result.centers);
  }
  result.assignments = assignments;
  result.inertia =
      squared_distances_to(x, result.centers).gather(1, assignments.unsqueeze(1)).sum().item<double>();
  return result;
}

}  // namespace lowrank::linalg
