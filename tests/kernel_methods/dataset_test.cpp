// Data reading (CSV with and without header, label column, safetensors, scikit-learn's bundled toy
// datasets), refusal of non-finite values, and the model directory format.
#include <gtest/gtest.h>

#include "lowrank/core/file.h"
#include "lowrank/kernel_methods/dataset.h"
#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/format.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

namespace fs = std::filesystem;

TEST(DatasetTest, ReadsCsvWithHeaderAndLabelColumn) {
  testing::TempDir dir;
  testing::write_text_file(dir / "a.csv", "f1,f2,label\n1,2,0\n3,4.5,1\n-1e-3,6,1\n");
  const Dataset d = read_dataset(dir / "a.csv");
  EXPECT_TRUE(d.x.equal(at::tensor({1.0, 2.0, 3.0, 4.5, -1e-3, 6.0}, at::kDouble).reshape({3, 2})));
  EXPECT_TRUE(d.y.equal(at::tensor({0.0, 1.0, 1.0}, at::kDouble)));
  const Dataset first = read_dataset(dir / "a.csv", 0);
  EXPECT_TRUE(first.y.equal(at::tensor({1.0, 3.0, -1e-3}, at::kDouble)));
  EXPECT_EQ(d.sha256, dataset_sha256(d.x, d.y));
  EXPECT_NE(d.sha256, first.sha256);
  kernel_testing::expect_error([&] { read_dataset(dir / "a.csv", 5); },
                               "--label-col 5 is outside the 3 columns");
}

TEST(DatasetTest, RefusesNonFiniteValuesNamingRowAndColumn) {
  testing::TempDir dir;
  testing::write_text_file(dir / "bad.csv", "1,2,0\n3,nan,1\n");
  kernel_testing::expect_error([&] { read_dataset(dir / "bad.csv"); },
                               "non-finite value (nan) at row 2, column 2");
  testing::write_text_file(dir / "ragged.csv", "1,2,0\n3,1\n");
  kernel_testing::expect_error([&] { read_dataset(dir / "ragged.csv"); }, "line 2 has 2 columns");
  testing::write_text_file(dir / "word.csv", "1,2,0\n3,x,1\n");
  kernel_testing::expect_error([&] { read_dataset(dir / "word.csv"); },
                               "line 2, column 2: \"x\" is not a number");
  kernel_testing::expect_error([&] { read_dataset(dir / "none.csv"); }, "no such file");
  kernel_testing::expect_error([&] { read_dataset(dir / "x.txt"); }, "unknown data format");
}

TEST(DatasetTest, ReadsSafetensors) {
  testing::TempDir dir;
  const at::Tensor x = kernel_testing::normal({4, 3}, 61), y = kernel_testing::normal({4, 2}, 62);
  save_safetensors(dir / "d.safetensors", std::vector<NamedTensor>{{"x", x.to(at::kFloat)}, {"y", y}});
  const Dataset d = read_dataset(dir / "d.safetensors");
  EXPECT_EQ(d.x.scalar_type(), at::kDouble);
  EXPECT_TRUE(d.x.equal(x.to(at::kFloat).to(at::kDouble)));
  EXPECT_TRUE(d.y.equal(y));
}

TEST(DatasetTest, ReadsTheBundledScikitLearnDatasets) {
  if (!fs::exists(default_sklearn_data_dir() / "iris.csv")) {
    GTEST_SKIP() << "python3-sklearn is not installed (scripts/setup installs it)";
  }
  struct Expected {
    const char* name;
    int64_t n, d;
    double first_label;
  };
  for (const Expected& e :
       {Expected{"iris", 150, 4, 0}, Expected{"wine", 178, 13, 0}, Expected{"breast_cancer", 569, 30, 0},
        Expected{"digits", 1797, 64, 0}, Expected{"diabetes", 442, 10, 151}}) {
    const Dataset d = read_builtin_dataset(e.name);
    EXPECT_EQ(d.x.sizes(), (at::IntArrayRef{e.n, e.d})) << e.name;
    EXPECT_EQ(d.y.sizes(), (at::IntArrayRef{e.n})) << e.name;
    EXPECT_EQ(d.y[0].item<double>(), e.first_label) << e.name;
  }
  // Iris' first row: 5.1, 3.5, 1.4, 0.2.
  EXPECT_TRUE(read_builtin_dataset("iris").x[0].equal(at::tensor({5.1, 3.5, 1.4, 0.2}, at::kDouble)));
}

TEST(DatasetTest, AMissingDatasetNamesThePathAndThePackage) {
  kernel_testing::expect_error(
      [] { read_builtin_dataset("iris", "/nonexistent/sklearn-data"); },
      "missing /nonexistent/sklearn-data/iris.csv (install Debian's python3-sklearn");
  kernel_testing::expect_error(
      [] { read_builtin_dataset("mnist"); },
      "unknown dataset \"mnist\" (known: breast_cancer, diabetes, digits, iris, wine)");
}

TEST(ModelFormatTest, RecordsTheHeaderAndRefusesAnotherVersion) {
  testing::TempDir dir;
  const Dataset data =
      make_dataset(kernel_testing::normal({6, 2}, 63), kernel_testing::normal({6}, 64), "draws");
  auto estimator = create_estimator("kde", {{"bandwidth", 0.5}}, 9);
  estimator->fit(data);
  estimator->save(dir / "m");
  const Json config = read_json_file(dir / "m" / kModelConfigFile);
  EXPECT_EQ(config["method"], "kde");
  EXPECT_EQ(config["format_version"], kModelFormatVersion);
  EXPECT_EQ(config["seed"], 9);
  EXPECT_EQ(config["input_dim"], 2);
  EXPECT_EQ(config["options"]["bandwidth"], 0.5);
  EXPECT_EQ(config["data_sha256"], dataset_sha256(data.x, data.y));
  EXPECT_EQ(config["data_sha256"].get<std::string>().size(), 64u);
  // Saving onto an existing model is refused; nothing partial is left by a failed save.
  EXPECT_THROW(estimator->save(dir / "m"), InvalidArgument);
  Json bumped = config;
  bumped["format_version"] = kModelFormatVersion + 1;
  write_json_file(dir / "m" / kModelConfigFile, bumped);
  kernel_testing::expect_error([&] { load_estimator(dir / "m"); },
                               "format version 2 (this build reads version 1)");
  kernel_testing::expect_error([&] { load_estimator(dir / "absent"); }, "no kernel model directory");
  // A width mismatch at predict names both.
  kernel_testing::expect_error(
      [&] {
        estimator->predict(kernel_testing::normal({2, 3}, 65));
      },
      "inputs must be [m, 2], got [2, 3]");
}

}  // namespace
}  // namespace lowrank::kernel_methods
