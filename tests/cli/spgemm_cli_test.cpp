// End-to-end tests of `lowrank spgemm`: generate, multiply in every format, and the errors a user
// sees for bad input (exit code 1 before any work, nothing half-written).
#include <gtest/gtest.h>

#include <filesystem>

#include "lowrank/core/json.h"
#include "lowrank/data/sparse_matrix_file.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

using testing::run_command;

std::string spgemm(const std::string& args) {
  return testing::lowrank_binary().string() + " spgemm " + args;
}

TEST(SpgemmCliTest, GeneratesMultipliesAndAgreesAcrossAlgorithms) {
  testing::TempDir tmp;
  const std::string a = (tmp / "a.mtx").string();
  auto r = run_command(spgemm("--generate rmat:8 --seed 4 --out " + a));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_command(spgemm("--json " + a + " --out " + (tmp / "c.safetensors").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json report = parse_json(r.out.substr(r.out.find('{')), "stdout");
  EXPECT_EQ(report["algorithm"], "hash");
  EXPECT_GT(report["flops"].get<int64_t>(), 0);
  const ops::Csr hash = data::read_sparse_matrix(tmp / "c.safetensors");
  EXPECT_EQ(report["c"][2].get<int64_t>(), hash.nnz());
  // A·B with B given, in Matrix Market, by the ESC kernel: the same C.
  r = run_command(spgemm(a + " " + a + " --algorithm esc --out " + (tmp / "c.mtx").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const ops::Csr esc = data::read_sparse_matrix(tmp / "c.mtx");
  EXPECT_EQ(esc.indptr, hash.indptr);
  EXPECT_EQ(esc.indices, hash.indices);
  for (size_t p = 0; p < esc.values.size(); ++p) EXPECT_NEAR(esc.values[p], hash.values[p], 1e-12);
}

TEST(SpgemmCliTest, BadInputFailsBeforeAnyWork) {
  testing::TempDir tmp;
  testing::write_text_file(tmp / "a.mtx", "%%MatrixMarket matrix coordinate real general\n2 3 1\n1 1 1\n");
  testing::write_text_file(tmp / "b.mtx", "%%MatrixMarket matrix coordinate real general\n4 2 1\n1 1 1\n");
  testing::write_text_file(tmp / "bad.mtx",
                           "%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 1\n9 1 1\n");
  testing::write_text_file(tmp / "z.mtx",
                           "%%MatrixMarket matrix coordinate complex general\n1 1 1\n1 1 1 0\n");
  const std::string out = (tmp / "c.mtx").string();
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    const auto r = run_command(spgemm(args));
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
    EXPECT_FALSE(std::filesystem::exists(out)) << args;
  };
  const std::string a = (tmp / "a.mtx").string(), b = (tmp / "b.mtx").string();
  expect_error(a + " " + b + " --out " + out, "a.mtx is 2x3, " + b + " is 4x2");
  expect_error(a + " --out " + out, "is 2x3");  // A·A needs a square A
  expect_error((tmp / "bad.mtx").string() + " --out " + out,
               "bad.mtx:4: entry (9, 1) lies outside the 2x2 matrix");
  expect_error((tmp / "z.mtx").string() + " --out " + out, "complex matrices are not supported");
  expect_error(a + " --algorithm gustavson --out " + out, "unknown SpGEMM algorithm \"gustavson\"");
  expect_error(a + " --out " + (tmp / "c.csv").string(), "unknown sparse matrix format \".csv\"");
  const std::string g = (tmp / "g.mtx").string();
  ASSERT_EQ(run_command(spgemm("--generate rmat:9 --out " + g)).exit_code, 0);
  expect_error(g + " --max-memory 1K --out " + out, "above --max-memory 1K");
  expect_error(g + " --max-memory lots --out " + out, "--max-memory \"lots\" is not a size");
}

}  // namespace
}  // namespace lowrank
