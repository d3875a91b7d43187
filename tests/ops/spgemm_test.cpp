// SpGEMM (ops/spgemm.h): every kernel against a dense float64 matmul, against each other, on edge
// cases, and for any thread count. (The Eigen 3.4 oracle is spgemm_eigen_test.cpp.)
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "lowrank/data/graphs.h"
#include "lowrank/ops/spgemm.h"
#include "tests/testing.h"

namespace lowrank::ops {
namespace {

// A random rows × cols matrix with about `density` of its entries stored, 5% of them explicit zeros.
Csr random_sparse(int64_t rows, int64_t cols, double density, uint64_t seed) {
  at::manual_seed(static_cast<int64_t>(seed));
  const at::Tensor mask = at::rand({rows, cols}, at::kDouble) < density;
  const at::Tensor idx = at::nonzero(mask).t().contiguous();
  at::Tensor val = at::randn({idx.size(1)}, at::kDouble);
  val.masked_fill_(at::rand({idx.size(1)}, at::kDouble) < 0.05, 0.0);
  const auto n = static_cast<size_t>(idx.size(1));
  return csr_from_coo(rows, cols, {idx[0].data_ptr<int64_t>(), n}, {idx[1].data_ptr<int64_t>(), n},
                      {val.data_ptr<double>(), n});
}

// 1 where an entry is stored (explicit zeros included), 0 elsewhere.
at::Tensor stored(const Csr& m) {
  at::Tensor d = at::zeros({m.rows, m.cols}, at::kDouble);
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t p = m.indptr[i]; p < m.indptr[i + 1]; ++p) d[i][m.indices[p]] = 1.0;
  return d;
}

SpgemmOptions with(SpgemmAlgorithm algorithm) {
  SpgemmOptions o;
  o.algorithm = algorithm;
  return o;
}

std::string name(SpgemmAlgorithm a) {
  return std::string(spgemm_algorithm_name(a));
}

// Every algorithm, and the hash kernels with every row on the dense accumulator (an L2 budget of
// one slot).
std::vector<std::pair<std::string, SpgemmOptions>> variants() {
  std::vector<std::pair<std::string, SpgemmOptions>> out;
  for (SpgemmAlgorithm alg : kSpgemmAlgorithms) {
    out.emplace_back(name(alg), with(alg));
    if (alg == SpgemmAlgorithm::kHash || alg == SpgemmAlgorithm::kHashAtomic) {
      SpgemmOptions o = with(alg);
      o.l2_bytes = 1;
      out.emplace_back(name(alg) + " (dense accumulator)", o);
    }
  }
  return out;
}

// Same shape and pattern; values within `tolerance` relative (0: bitwise).
void expect_same(const Csr& x, const Csr& y, double tolerance, const std::string& what) {
  ASSERT_EQ(x.rows, y.rows) << what;
  ASSERT_EQ(x.cols, y.cols) << what;
  ASSERT_EQ(x.indptr, y.indptr) << what;
  ASSERT_EQ(x.indices, y.indices) << what;
  ASSERT_EQ(x.values.size(), y.values.size()) << what;
  for (size_t p = 0; p < x.values.size(); ++p) {
    if (tolerance == 0.0)
      ASSERT_EQ(x.values[p], y.values[p]) << what << ": entry " << p;
    else
      ASSERT_LE(std::abs(x.values[p] - y.values[p]), tolerance * (1.0 + std::abs(y.values[p])))
          << what << ": entry " << p;
  }
}

struct ThreadCount {
  explicit ThreadCount(int n) : saved(at::get_num_threads()) { at::set_num_threads(n); }
  ~ThreadCount() { at::set_num_threads(saved); }
  int saved;
};

TEST(SpgemmTest, EveryAlgorithmMatchesDenseFloat64Matmul) {
  struct Case {
    int64_t m, k, n;
    double density;
  };
  const Case cases[] = {
      {1, 1, 1, 1.0}, {7, 13, 5, 0.3}, {50, 40, 60, 0.1}, {120, 300, 90, 0.02}, {300, 200, 300, 0.05}};
  uint64_t seed = 1;
  for (const Case& c : cases) {
    const Csr a = random_sparse(c.m, c.k, c.density, seed++);
    const Csr b = random_sparse(c.k, c.n, c.density, seed++);
    const at::Tensor expected = at::matmul(csr_to_dense(a), csr_to_dense(b));
    const at::Tensor pattern = at::matmul(stored(a), stored(b)) > 0;  // the structural pattern
    for (const auto& [variant, options] : variants()) {
      const Csr product = spgemm(a, b, options);
      const std::string what =
          variant + " " + std::to_string(c.m) + "x" + std::to_string(c.k) + "x" + std::to_string(c.n);
      product.check(what);
      EXPECT_LE(testing::max_abs_diff(csr_to_dense(product), expected), 1e-12) << what;
      EXPECT_TRUE(at::equal(stored(product) > 0, pattern)) << what;
    }
  }
}

TEST(SpgemmTest, RowFlopsAreTheSymbolicBound) {
  const Csr a = random_sparse(40, 30, 0.2, 11), b = random_sparse(30, 50, 0.2, 12);
  // flops_i = Σ_k [A_ik stored] · nnz(B_k), computed densely.
  const at::Tensor expected = at::matmul(stored(a), stored(b).sum(1));
  const std::vector<int64_t> flops = spgemm_row_flops(a, b);
  for (int64_t i = 0; i < a.rows; ++i) EXPECT_EQ(flops[i], expected[i].item<double>()) << "row " << i;
  SpgemmStats stats;
  const Csr c = spgemm(a, b, {}, &stats);
  EXPECT_EQ(stats.flops, expected.sum().item<double>());
  EXPECT_EQ(stats.nnz, c.nnz());
  for (int64_t i = 0; i < a.rows; ++i) EXPECT_LE(c.indptr[i + 1] - c.indptr[i], flops[i]);
}

TEST(SpgemmTest, AllAlgorithmsAgreeOnGraphs) {
  ThreadCount threads(2);
  for (const char* spec : {"rmat:9", "er:400:6", "stencil2d:20", "stencil3d:7"}) {
    const Csr a = data::graph_from_spec(spec, 3);
    const Csr reference = spgemm(a, a, with(SpgemmAlgorithm::kDense));
    for (auto [variant, o] : variants()) {
      o.heavy_row_flops = 16;  // hash-atomic: split most rows across the two threads
      SpgemmStats stats;
      const Csr c = spgemm(a, a, o, &stats);
      expect_same(c, reference, 1e-13, std::string(spec) + " " + variant);
      if (o.algorithm == SpgemmAlgorithm::kHashAtomic) {
        EXPECT_GT(stats.atomic_rows, a.rows / 2) << spec;
      }
    }
  }
}

TEST(SpgemmTest, DenseAccumulatorTakesRowsBeyondTheL2Budget) {
  const Csr a = data::graph_from_spec("rmat:8", 5);
  SpgemmOptions o;
  o.l2_bytes = 16 * 64;  // tables of more than 64 slots go dense
  SpgemmStats stats;
  const Csr c = spgemm(a, a, o, &stats);
  EXPECT_GT(stats.dense_rows, 0);
  EXPECT_GT(stats.hash_rows, 0);
  expect_same(c, spgemm(a, a, with(SpgemmAlgorithm::kDense)), 0.0, "dense accumulator rows");
}

TEST(SpgemmTest, ResultsDoNotDependOnTheThreadCount) {
  const Csr a = data::graph_from_spec("rmat:10", 7);
  for (auto [variant, o] : variants()) {
    o.heavy_row_flops = 256;
    Csr one;
    {
      ThreadCount t(1);
      one = spgemm(a, a, o);
    }
    for (int n : {2, 3}) {
      ThreadCount t(n);
      // hash-atomic's split rows sum in schedule order: equal to rounding, not bitwise.
      expect_same(spgemm(a, a, o), one, o.algorithm == SpgemmAlgorithm::kHashAtomic ? 1e-13 : 0.0,
                  variant + " with " + std::to_string(n) + " threads");
    }
  }
}

TEST(SpgemmTest, UnsortedRowsHoldTheSameEntries) {
  const Csr a = data::graph_from_spec("rmat:8", 9);
  SpgemmOptions o;
  o.sort_columns = false;
  Csr c = spgemm(a, a, o);
  c.check("unsorted product", /*require_sorted=*/false);
  bool any_unsorted = false;
  for (int64_t i = 0; i < c.rows; ++i) {
    std::vector<std::pair<int32_t, double>> row;
    for (int64_t p = c.indptr[i]; p < c.indptr[i + 1]; ++p) row.emplace_back(c.indices[p], c.values[p]);
    any_unsorted |= !std::is_sorted(row.begin(), row.end());
    std::sort(row.begin(), row.end());
    for (size_t t = 0; t < row.size(); ++t) {
      c.indices[c.indptr[i] + t] = row[t].first;
      c.values[c.indptr[i] + t] = row[t].second;
    }
  }
  EXPECT_TRUE(any_unsorted);  // else the flag did nothing and this test would prove nothing
  expect_same(c, spgemm(a, a), 0.0, "sorted afterwards");
}

TEST(SpgemmTest, EdgeCases) {
  for (const auto& [what, options] : variants()) {
    // 0×n times n×m, and n×0 times 0×m.
    Csr c = spgemm(csr_zeros(0, 4), csr_zeros(4, 3), options);
    EXPECT_EQ(c.rows, 0) << what;
    EXPECT_EQ(c.cols, 3) << what;
    EXPECT_EQ(c.nnz(), 0) << what;
    c = spgemm(csr_zeros(5, 0), csr_zeros(0, 6), options);
    EXPECT_EQ(c.rows, 5) << what;
    EXPECT_EQ(c.cols, 6) << what;
    EXPECT_EQ(c.nnz(), 0) << what;
    c.check(what);
    // Empty rows and columns: row 1 of A and column 2 of B are empty; so are row 1 and column 2 of C.
    const std::vector<int64_t> ar = {0, 0, 2}, ac = {0, 2, 1};
    const std::vector<double> av = {1.0, 2.0, 3.0};
    const Csr a = csr_from_coo(3, 3, ar, ac, av);
    const std::vector<int64_t> br = {0, 1, 2, 2}, bc = {0, 1, 0, 3};
    const std::vector<double> bv = {4.0, 5.0, 6.0, 7.0};
    const Csr b = csr_from_coo(3, 4, br, bc, bv);
    c = spgemm(a, b, options);
    // Row 0: 1·B_0 + 2·B_2 = (4 + 12, 0, 0, 14); row 2: 3·B_1 = (0, 15, 0, 0).
    EXPECT_EQ(c.indptr, (CsrArray<int64_t>{0, 2, 2, 3})) << what;
    EXPECT_EQ(c.indices, (CsrArray<int32_t>{0, 3, 1})) << what;
    EXPECT_EQ(c.values, (CsrArray<double>{16.0, 14.0, 15.0})) << what;
    // Explicit zeros and cancellation stay structural; drop_zeros removes them.
    const std::vector<int64_t> zr = {0, 0, 1}, zc = {0, 1, 1};
    const std::vector<double> zv = {1.0, -1.0, 0.0};  // A = [1 −1; 0 0(explicit)]
    const Csr z = csr_from_coo(2, 2, zr, zc, zv);
    const std::vector<int64_t> orr = {0, 1}, oc = {0, 0};
    const std::vector<double> ov = {1.0, 1.0};  // B = [1 0; 1 0]
    const Csr ones = csr_from_coo(2, 2, orr, oc, ov);
    c = spgemm(z, ones, options);
    EXPECT_EQ(c.indptr, (CsrArray<int64_t>{0, 1, 2})) << what;  // (0,0) = 1 − 1, (1,0) = 0·1
    EXPECT_EQ(c.values, (CsrArray<double>{0.0, 0.0})) << what;
    SpgemmOptions dropping = options;
    dropping.drop_zeros = true;
    EXPECT_EQ(spgemm(z, ones, dropping).nnz(), 0) << what;
  }
}

TEST(SpgemmTest, CooDuplicatesAreSummedAndExplicitZerosKept) {
  const std::vector<int64_t> r = {1, 0, 1, 1}, c = {2, 0, 2, 0};
  const std::vector<double> v = {1.5, 0.0, 2.0, -1.0};
  const Csr m = csr_from_coo(2, 3, r, c, v);
  EXPECT_EQ(m.indptr, (CsrArray<int64_t>{0, 1, 3}));
  EXPECT_EQ(m.indices, (CsrArray<int32_t>{0, 0, 2}));
  EXPECT_EQ(m.values, (CsrArray<double>{0.0, -1.0, 3.5}));
  const std::vector<int64_t> bad_r = {0, 2}, bad_c = {0, 0};
  const std::vector<double> bad_v = {1.0, 1.0};
  EXPECT_NE(testing::error_of([&] { csr_from_coo(2, 3, bad_r, bad_c, bad_v); }).find("COO entry 1 at (2, 0)"),
            std::string::npos);
}

TEST(SpgemmTest, ShapeMismatchNamesBothShapes) {
  const std::string message = testing::error_of([] { spgemm(csr_zeros(2, 3), csr_zeros(4, 5)); });
  EXPECT_NE(message.find("A is 2x3, B is 4x5"), std::string::npos) << message;
  EXPECT_NE(testing::error_of([] { parse_spgemm_algorithm("gustavson"); }).find("hash-atomic"),
            std::string::npos);
  Csr broken = csr_zeros(2, 2);
  broken.indptr = {0, 2, 1};
  broken.indices = {1};
  broken.values = {1};
  EXPECT_NE(testing::error_of([&] { spgemm(broken, broken); }).find("indptr decreases at row 1"),
            std::string::npos);
}

TEST(SpgemmTest, AtenConversionsRoundTrip) {
  const Csr a = random_sparse(9, 11, 0.3, 21);
  const at::Tensor sparse = csr_to_tensor(a);
  EXPECT_EQ(sparse.layout(), at::kSparseCsr);
  EXPECT_TRUE(at::equal(sparse.to_dense(), csr_to_dense(a)));
  expect_same(csr_from_tensor(sparse), a, 0.0, "from sparse CSR");
  expect_same(csr_from_tensor(sparse.to_dense().to_sparse()), csr_drop_zeros(a), 0.0, "from COO");
  expect_same(csr_from_tensor(csr_to_dense(a)), csr_drop_zeros(a), 0.0, "from strided");
  const Csr t = csr_transpose(a);
  EXPECT_TRUE(at::equal(csr_to_dense(t), csr_to_dense(a).t()));
  t.check("transpose");
}

}  // namespace
}  // namespace lowrank::ops
