// k-means: k-means++ seeding (Arthur & Vassilvitskii, 2007, "k-means++: The Advantages of Careful
// Seeding", SODA) followed by Lloyd's iterations (Lloyd, 1982, "Least squares quantization in
// PCM"). Seeding picks the first centre uniformly and each next one with probability ∝ D(x)², the
// squared distance to the nearest centre chosen so far; Lloyd then alternates
//   assign:  c(i) = argmin_j ‖x_i − μ_j‖²,     update: μ_j = mean{x_i : c(i) = j}
// until no assignment changes. A cluster left empty keeps its centre (scikit-learn re-seeds it
// from the farthest point instead; that only matters for degenerate data).
// Shared by RKME's reduced sets and CRISP.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::linalg {

struct KMeansResult {
  at::Tensor centers;      // [k, d]
  at::Tensor assignments;  // [n] int64
  double inertia = 0;      // Σ_i ‖x_i − μ_{c(i)}‖²
  int64_t iterations = 0;  // Lloyd iterations run
};

// The k-means++ initial centres of x [n, d]: [k, d], rows of x.
at::Tensor kmeans_plus_plus(const at::Tensor& x, int64_t k, at::Generator& generator);

// Throws InvalidArgument for x not [n, d], k < 1 or k > n.
KMeansResult kmeans(const at::Tensor& x, int64_t k, at::Generator& generator, int64_t max_iterations = 300);

// ‖x_i − μ_j‖² for x [n, d], centres [k, d]: [n, k], clamped at 0 against cancellation.
at::Tensor squared_distances_to(const at::Tensor& x, const at::Tensor& centers);

}  // namespace lowrank::linalg
