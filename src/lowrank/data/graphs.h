// Synthetic sparse matrices for the SpGEMM benchmarks and tests (R-MAT graphs, as in SMASH's evaluation,
// Shivdikar 2021, plus the uniform and mesh-like structures SpGEMM studies add):
//   rmat        R-MAT (Chakrabarti, Zhan & Faloutsos, 2004): 2^scale vertices, edge_factor·2^scale
//               directed edges, each placed by descending `scale` levels of the 2×2 quadrant
//               probabilities (a, b, c, 1−a−b−c), Graph500's 0.57/0.19/0.19/0.05 by default; the
//               vertex labels are then permuted at random, as Graph500's generator does, so heavy
//               rows are not all at the top;
//   erdos_renyi n×n with n·mean_degree entries at uniformly random positions (G(n, m));
//   laplacian_2d / laplacian_3d  the 5- and 7-point finite-difference Laplacians on an n² / n³
//               grid with Dirichlet boundaries (diagonal 4 / 6, neighbours −1).
// Values of the random graphs are uniform in [0.5, 1.5); repeated positions are summed. Every draw
// is splitmix64(seed, counter): the same seed gives the same matrix on every machine.
#pragma once

#include <cstdint>
#include <string_view>

#include "lowrank/ops/spgemm.h"

namespace lowrank::data {

struct RmatOptions {
  int scale = 10;
  int64_t edge_factor = 16;
  double a = 0.57, b = 0.19, c = 0.19;
  uint64_t seed = 1;
};

ops::Csr rmat_graph(const RmatOptions& options);
ops::Csr erdos_renyi_graph(int64_t n, double mean_degree, uint64_t seed);
ops::Csr laplacian_2d(int64_t n);
ops::Csr laplacian_3d(int64_t n);

// From a short spec, for the CLI and the benchmarks: "rmat:SCALE[:EDGE_FACTOR]", "er:N:MEAN_DEGREE",
// "stencil2d:N", "stencil3d:N". InvalidArgument names the spec and what is wrong with it.
ops::Csr graph_from_spec(std::string_view spec, uint64_t seed = 1);

}  // namespace lowrank::data
