// Sparse matrix files (data/matrix_market.h, data/sparse_matrix_file.h) and the synthetic graphs of
// the SpGEMM benchmarks (data/graphs.h).
#include <gtest/gtest.h>

#include <filesystem>

#include "lowrank/data/graphs.h"
#include "lowrank/data/matrix_market.h"
#include "lowrank/data/sparse_matrix_file.h"
#include "tests/testing.h"

namespace lowrank::data {
namespace {

using testing::error_of;

TEST(MatrixMarketTest, GeneralSymmetricSkewPatternAndArray) {
  // General, 1-based, a comment and a repeated coordinate (summed).
  ops::Csr m = parse_matrix_market(
      "%%MatrixMarket matrix coordinate real general\n% a comment\n\n2 3 4\n1 1 1.5\n2 3 -2e-1\n1 1 0.5\n2 1 "
      "0\n",
      "g");
  EXPECT_EQ(m.indptr, (ops::CsrArray<int64_t>{0, 1, 3}));
  EXPECT_EQ(m.indices, (ops::CsrArray<int32_t>{0, 0, 2}));
  EXPECT_EQ(m.values, (ops::CsrArray<double>{2.0, 0.0, -0.2}));  // the explicit zero is kept
  // Symmetric: the lower triangle mirrors; skew-symmetric mirrors negated.
  m = parse_matrix_market("%%MatrixMarket matrix coordinate real symmetric\n3 3 2\n2 1 4\n3 3 5\n", "s");
  EXPECT_TRUE(at::equal(ops::csr_to_dense(m),
                        at::tensor({0.0, 4.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 5.0}, at::kDouble).view({3, 3})));
  m = parse_matrix_market("%%MatrixMarket matrix coordinate integer skew-symmetric\n2 2 1\n2 1 3\n", "k");
  EXPECT_TRUE(at::equal(ops::csr_to_dense(m), at::tensor({0.0, -3.0, 3.0, 0.0}, at::kDouble).view({2, 2})));
  m = parse_matrix_market("%%MatrixMarket matrix coordinate pattern general\n2 2 2\n1 2\n2 2\n", "p");
  EXPECT_EQ(m.values, (ops::CsrArray<double>{1.0, 1.0}));
  // Array: column-major, zeros not stored; symmetric arrays hold the lower triangle.
  m = parse_matrix_market("%%MatrixMarket matrix array real general\n2 2\n1\n0\n3\n4\n", "a");
  EXPECT_TRUE(at::equal(ops::csr_to_dense(m), at::tensor({1.0, 3.0, 0.0, 4.0}, at::kDouble).view({2, 2})));
  m = parse_matrix_market("%%MatrixMarket matrix array real symmetric\n2 2\n1\n2\n3\n", "as");
  EXPECT_TRUE(at::equal(ops::csr_to_dense(m), at::tensor({1.0, 2.0, 2.0, 3.0}, at::kDouble).view({2, 2})));
  m = parse_matrix_market("%%MatrixMarket matrix array real skew-symmetric\n3 3\n1\n2\n3\n", "ak");
  EXPECT_TRUE(
      at::equal(ops::csr_to_dense(m),
                at::tensor({0.0, -1.0, -2.0, 1.0, 0.0, -3.0, 2.0, 3.0, 0.0}, at::kDouble).view({3, 3})));
}

TEST(MatrixMarketTest, BadInputNamesTheFileAndLine) {
  auto error = [](const std::string& text) { return error_of([&] { parse_matrix_market(text, "A.mtx"); }); };
  EXPECT_NE(error("2 2 1\n1 1 1\n").find("A.mtx:1: not a Matrix Market header"), std::string::npos);
  EXPECT_NE(error("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 1\n1 x 2\n")
                .find("A.mtx:4: malformed entry \"1 x 2\""),
            std::string::npos);
  EXPECT_NE(error("%%MatrixMarket matrix coordinate real general\n2 2 1\n3 1 1\n")
                .find("A.mtx:3: entry (3, 1) lies outside the 2x2 matrix"),
            std::string::npos);
  EXPECT_NE(
      error("%%MatrixMarket matrix coordinate real general\n2 2 1\n0 1 1\n").find("A.mtx:3: entry (0, 1)"),
      std::string::npos);
  EXPECT_NE(error("%%MatrixMarket matrix coordinate real general\n2 2 3\n1 1 1\n")
                .find("declares 3 entries, but the file has 1"),
            std::string::npos);
  EXPECT_NE(error("%%MatrixMarket matrix coordinate real general\n2 2 1\n1 1 1\n2 2 2\n")
                .find("A.mtx:4: more entries than the 1"),
            std::string::npos);
  EXPECT_NE(
      error("%%MatrixMarket matrix coordinate real general\n2 two 1\n").find("A.mtx:2: malformed size line"),
      std::string::npos);
  EXPECT_NE(error("%%MatrixMarket matrix coordinate real symmetric\n2 3 0\n").find("must be square, got 2x3"),
            std::string::npos);
  // complex and hermitian are Unsupported, not InvalidArgument.
  try {
    parse_matrix_market("%%MatrixMarket matrix coordinate complex general\n1 1 1\n1 1 1 0\n", "A.mtx");
    FAIL() << "complex accepted";
  } catch (const Unsupported& e) {
    EXPECT_NE(std::string(e.what()).find("complex"), std::string::npos);
  }
  EXPECT_THROW(parse_matrix_market("%%MatrixMarket matrix coordinate real hermitian\n1 1 0\n", "A.mtx"),
               Unsupported);
  EXPECT_NE(error_of([] { read_matrix_market("/nonexistent/A.mtx"); }).find("/nonexistent/A.mtx"),
            std::string::npos);
}

TEST(SparseMatrixFileTest, MtxAndSafetensorsRoundTripBitExactly) {
  testing::TempDir tmp;
  ops::Csr m = rmat_graph({.scale = 6, .edge_factor = 4, .seed = 3});
  m.values[0] = 1.0 / 3.0;  // needs all 17 digits
  m.values[1] = -0.0;
  for (const char* name : {"m.mtx", "m.safetensors"}) {
    write_sparse_matrix(tmp / name, m);
    const ops::Csr back = read_sparse_matrix(tmp / name);
    EXPECT_EQ(back.rows, m.rows) << name;
    EXPECT_EQ(back.indptr, m.indptr) << name;
    EXPECT_EQ(back.indices, m.indices) << name;
    EXPECT_EQ(back.values, m.values) << name;
  }
  // No temp file is left behind, and an unknown extension is refused before anything is written.
  for (const auto& entry : std::filesystem::directory_iterator(tmp.path()))
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
  EXPECT_NE(
      error_of([&] { write_sparse_matrix(tmp / "m.csv", m); }).find("unknown sparse matrix format \".csv\""),
      std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(tmp / "m.csv"));
}

TEST(GraphsTest, RmatIsSkewedAndSeeded) {
  const ops::Csr g = rmat_graph({.scale = 10, .edge_factor = 16, .seed = 1});
  EXPECT_EQ(g.rows, 1024);
  EXPECT_GT(g.nnz(), 1024 * 16 * 6 / 10);  // duplicates merged (about a quarter at a = 0.57)
  EXPECT_LE(g.nnz(), 1024 * 16);
  int64_t max_degree = 0;
  for (int64_t i = 0; i < g.rows; ++i) max_degree = std::max(max_degree, g.indptr[i + 1] - g.indptr[i]);
  EXPECT_GT(max_degree, 10 * 16);  // power-law: the heaviest row holds > 10× the mean degree
  const ops::Csr again = rmat_graph({.scale = 10, .edge_factor = 16, .seed = 1});
  EXPECT_EQ(again.indices, g.indices);
  EXPECT_EQ(again.values, g.values);
  EXPECT_NE(rmat_graph({.scale = 10, .edge_factor = 16, .seed = 2}).indices, g.indices);
  const ops::Csr er = erdos_renyi_graph(1000, 8, 1);
  int64_t er_max = 0;
  for (int64_t i = 0; i < er.rows; ++i) er_max = std::max(er_max, er.indptr[i + 1] - er.indptr[i]);
  EXPECT_LT(er_max, 30);  // Poisson(8): no heavy rows
}

TEST(GraphsTest, StencilsAreTheFiniteDifferenceLaplacians) {
  // 2-D, n = 3: the Kronecker sum T ⊗ I + I ⊗ T of the 1-D second difference T = tridiag(−1, 2, −1).
  const at::Tensor t =
      at::tensor({2.0, -1.0, 0.0, -1.0, 2.0, -1.0, 0.0, -1.0, 2.0}, at::kDouble).view({3, 3});
  const at::Tensor eye = at::eye(3, at::kDouble);
  const at::Tensor l2 = at::kron(t, eye) + at::kron(eye, t);
  EXPECT_TRUE(at::equal(ops::csr_to_dense(laplacian_2d(3)), l2));
  const at::Tensor l3 = at::kron(l2, eye) + at::kron(at::kron(eye, eye), t);
  EXPECT_TRUE(at::equal(ops::csr_to_dense(laplacian_3d(3)), l3));
  laplacian_3d(4).check("stencil3d:4");
  EXPECT_EQ(graph_from_spec("stencil2d:5").nnz(), 5 * 25 - 4 * 5);
  EXPECT_NE(error_of([] { graph_from_spec("rmat:x"); }).find("\"x\" is not an integer"), std::string::npos);
  EXPECT_NE(error_of([] { graph_from_spec("mesh:3"); }).find("unknown graph \"mesh:3\""), std::string::npos);
}

}  // namespace
}  // namespace lowrank::data
