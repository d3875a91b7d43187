// SpGEMM against an independent library: Eigen 3.4's sparse product (conservative: no pruning, so
// its pattern is structural like ours). Built only when CMake finds Eigen 3.4 (Debian's
// libeigen3-dev, installed by scripts/setup); compiled without the shared precompiled header, whose
// flags the Eigen include would change.
#include <gtest/gtest.h>

#include "lowrank/data/graphs.h"
#include "lowrank/ops/spgemm.h"

#ifdef LOWRANK_HAVE_EIGEN
#include <Eigen/SparseCore>
#endif

namespace lowrank::ops {
namespace {

#ifdef LOWRANK_HAVE_EIGEN
using EigenCsr = Eigen::SparseMatrix<double, Eigen::RowMajor, int64_t>;

EigenCsr to_eigen(const Csr& m) {
  std::vector<Eigen::Triplet<double, int64_t>> t;
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t p = m.indptr[i]; p < m.indptr[i + 1]; ++p) t.emplace_back(i, m.indices[p], m.values[p]);
  EigenCsr e(m.rows, m.cols);
  e.setFromTriplets(t.begin(), t.end());
  return e;
}

// Random shapes and densities, and one R-MAT graph; every algorithm must give Eigen's pattern and
// values (to 1e-12 relative).
TEST(SpgemmEigenTest, EveryAlgorithmMatchesEigen) {
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  };
  std::vector<std::pair<Csr, Csr>> cases;
  for (int trial = 0; trial < 6; ++trial) {
    const int64_t m = 1 + next() % 150, k = 1 + next() % 150, n = 1 + next() % 150;
    const double density = 0.01 + static_cast<double>(next() % 100) / 500.0;
    auto random = [&](int64_t rows, int64_t cols) {
      std::vector<int64_t> r, c;
      std::vector<double> v;
      const auto count = static_cast<int64_t>(density * static_cast<double>(rows * cols));
      for (int64_t e = 0; e < count; ++e) {
        r.push_back(static_cast<int64_t>(next() % rows));
        c.push_back(static_cast<int64_t>(next() % cols));
        v.push_back(static_cast<double>(next() % 2001) / 1000.0 - 1.0);
      }
      return csr_from_coo(rows, cols, r, c, v);
    };
    Csr a = random(m, k);
    Csr b = random(k, n);
    cases.emplace_back(std::move(a), std::move(b));
  }
  const Csr g = data::graph_from_spec("rmat:9", 2);
  cases.emplace_back(g, g);
  for (const auto& [a, b] : cases) {
    const EigenCsr expected = EigenCsr(to_eigen(a) * to_eigen(b));
    for (SpgemmAlgorithm alg : kSpgemmAlgorithms) {
      SpgemmOptions o;
      o.algorithm = alg;
      const Csr c = spgemm(a, b, o);
      const std::string what = std::string(spgemm_algorithm_name(alg)) + " " + std::to_string(a.rows) + "x" +
                               std::to_string(a.cols) + "x" + std::to_string(b.cols);
      ASSERT_EQ(c.nnz(), expected.nonZeros()) << what;
      for (int64_t i = 0; i < c.rows; ++i) {
        int64_t p = c.indptr[i];
        for (EigenCsr::InnerIterator it(expected, i); it; ++it, ++p) {
          ASSERT_LT(p, c.indptr[i + 1]) << what << " row " << i;
          ASSERT_EQ(c.indices[p], it.col()) << what << " row " << i;
          ASSERT_LE(std::abs(c.values[p] - it.value()), 1e-12 * (1 + std::abs(it.value()))) << what;
        }
        ASSERT_EQ(p, c.indptr[i + 1]) << what << " row " << i;
      }
    }
  }
}
#else
TEST(SpgemmEigenTest, EveryAlgorithmMatchesEigen) {
  GTEST_SKIP() << "built without Eigen 3.4 (libeigen3-dev)";
}
#endif

}  // namespace
}  // namespace lowrank::ops
