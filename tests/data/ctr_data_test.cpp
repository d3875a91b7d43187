// CTR data (data/ctr_data.h, data/ctr_synthetic.h): the generator's law (vocabulary sizes, Zipf
// frequencies against the closed form 1/H_{V,s}, base CTR, determinism), the directory round trip,
// and the table reader's errors and OOV bucket.
#include <gtest/gtest.h>

#include <cmath>

#include <ATen/ATen.h>

#include "lowrank/core/error.h"
#include "lowrank/data/ctr_data.h"
#include "lowrank/data/ctr_synthetic.h"
#include "tests/testing.h"

namespace lowrank::data {
namespace {

CtrSyntheticOptions small_options() {
  CtrSyntheticOptions o;
  o.train_rows = 20000;
  o.test_rows = 4000;
  o.sparse_fields = 6;
  o.dense_fields = 3;
  o.max_vocab = 1000;
  return o;
}

TEST(CtrSynthetic, FollowsItsLaw) {
  const CtrSyntheticOptions o = small_options();
  const CtrSynthetic d = generate_ctr_synthetic(o);
  ASSERT_EQ(d.schema.sparse_count(), 6);
  EXPECT_EQ(d.schema.sparse.front().vocab_size, 10);
  EXPECT_EQ(d.schema.sparse.back().vocab_size, 1000);
  EXPECT_EQ(d.train.rows(), 20000);
  EXPECT_EQ(d.test.rows(), 4000);
  EXPECT_EQ(d.train.oov, 0);
  // Base CTR: the mean click probability is 0.05 over all rows; the labels' mean within 4 sigma.
  const double ctr = (d.train.labels.sum().item<double>() + d.test.labels.sum().item<double>()) / 24000.0;
  EXPECT_NEAR(ctr, 0.05, 4 * std::sqrt(0.05 * 0.95 / 24000.0));
  // Zipf(1.1): P(id 0) = 1 / H_{V,1.1} in the largest field.
  double h = 0;
  for (int k = 1; k <= 1000; ++k) h += std::pow(k, -1.1);
  const double p0 = 1 / h;
  const double f0 = d.train.sparse.select(1, 5).eq(0).to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(f0, p0, 4 * std::sqrt(p0 * (1 - p0) / 20000.0));
  EXPECT_TRUE(d.train.sparse.select(1, 5).lt(1000).all().item<bool>());
  EXPECT_TRUE(d.train.dense.ge(0).logical_and(d.train.dense.le(1)).all().item<bool>());
  // The teacher's probabilities rank the test labels well above chance.
  EXPECT_GT(at::corrcoef(at::stack({d.test_probability, d.test.labels.to(at::kDouble)}))[0][1].item<double>(),
            0.1);
}

TEST(CtrSynthetic, IsDeterministicAndSeeded) {
  CtrSyntheticOptions o = small_options();
  o.train_rows = 3000;
  const CtrSynthetic a = generate_ctr_synthetic(o), b = generate_ctr_synthetic(o);
  EXPECT_TRUE(at::equal(a.train.sparse, b.train.sparse));
  EXPECT_TRUE(at::equal(a.train.labels, b.train.labels));
  EXPECT_TRUE(at::equal(a.test.dense, b.test.dense));
  o.seed = 1;
  EXPECT_FALSE(at::equal(a.train.sparse, generate_ctr_synthetic(o).train.sparse));
  o.base_ctr = 1.5;
  EXPECT_THROW(generate_ctr_synthetic(o), InvalidArgument);
}

TEST(CtrData, DirectoryRoundTrips) {
  testing::TempDir dir;
  CtrSyntheticOptions o = small_options();
  o.train_rows = 500;
  o.test_rows = 100;
  const CtrSynthetic d = generate_ctr_synthetic(o);
  save_ctr_dataset(dir / "data", d.schema, d.train, d.test, Json{{"kind", "synthetic"}});
  const CtrSchema schema = load_ctr_schema(dir / "data");
  EXPECT_EQ(schema.to_json(), d.schema.to_json());
  const CtrData train = load_ctr_split(dir / "data", schema, "train");
  EXPECT_TRUE(at::equal(train.sparse, d.train.sparse));
  EXPECT_TRUE(at::equal(train.dense, d.train.dense));
  EXPECT_TRUE(at::equal(train.labels, d.train.labels));
  EXPECT_THROW(load_ctr_split(dir / "data", schema, "valid"), NotFound);
  EXPECT_THROW(load_ctr_schema(dir.path()), NotFound);
}

CtrSchema table_schema() {
  CtrSchema s;
  s.sparse = {{"C1", 5}, {"C2", 3}};
  s.dense = {"I1"};
  return s;
}

std::string error_of(const std::filesystem::path& path) {
  try {
    read_ctr_table(path, table_schema());
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

TEST(CtrData, TableSendsUnknownIdsToTheOovBucketAndNamesBadRows) {
  testing::TempDir dir;
  // Columns in another order, an extra column ignored; ids 7 and "x" unknown.
  testing::write_text_file(dir / "ok.tsv",
                           "C2\tlabel\textra\tI1\tC1\n1\t0\tq\t0.5\t4\n2\t1\tq\t1e-3\t7\nx\t0\tq\t-2\t0\n");
  const CtrData d = read_ctr_table(dir / "ok.tsv", table_schema());
  EXPECT_EQ(d.rows(), 3);
  EXPECT_EQ(d.oov, 2);
  EXPECT_EQ(d.sparse[1][0].item<int64_t>(), 5);  // C1 = 7 -> bucket V = 5
  EXPECT_EQ(d.sparse[2][1].item<int64_t>(), 3);  // C2 = "x" -> bucket V = 3
  EXPECT_FLOAT_EQ(d.dense[1][0].item<float>(), 1e-3f);
  EXPECT_EQ(d.labels[1].item<float>(), 1.0f);

  testing::write_text_file(dir / "short.csv", "label,I1,C1,C2\n0,1,2,1\n1,0.5,3\n");
  EXPECT_NE(error_of(dir / "short.csv").find("short.csv:3: 3 fields"), std::string::npos)
      << error_of(dir / "short.csv");
  testing::write_text_file(dir / "empty.csv", "label,I1,C1,C2\n0,,2,1\n");
  EXPECT_NE(error_of(dir / "empty.csv").find("field I1 is missing"), std::string::npos);
  testing::write_text_file(dir / "label.csv", "label,I1,C1,C2\n2,1,2,1\n");
  EXPECT_NE(error_of(dir / "label.csv").find("label \"2\""), std::string::npos);
  testing::write_text_file(dir / "number.csv", "label,I1,C1,C2\n1,abc,2,1\n");
  EXPECT_NE(error_of(dir / "number.csv").find("I1 = \"abc\""), std::string::npos);
  testing::write_text_file(dir / "header.csv", "label,C1,C2\n1,2,1\n");
  EXPECT_NE(error_of(dir / "header.csv").find("no column \"I1\""), std::string::npos);
}

}  // namespace
}  // namespace lowrank::data
