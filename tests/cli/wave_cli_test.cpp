// End-to-end tests of `lowrank wave`: simulate, train (dense, a-priori CP, from an --init model),
// eval, post-hoc compress, and the errors a user sees.
#include <gtest/gtest.h>

#include <filesystem>

#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

using testing::run_command;

std::string wave(const std::string& args) {
  return testing::lowrank_binary().string() + " wave " + args;
}

TEST(WaveCliTest, SimulatesADataSet) {
  testing::TempDir tmp;
  const std::string out = (tmp / "d.safetensors").string();
  const auto r =
      run_command(wave("simulate --samples 5 --grid 16 --ahead 3 --per-simulation 2 --seed 4 --out " + out));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const SafetensorsFile f = SafetensorsFile::open(out);
  EXPECT_EQ(f.load("inputs").sizes(), (std::vector<int64_t>{5, 3, 16, 16}));
  EXPECT_EQ(f.load("targets").sizes(), (std::vector<int64_t>{5, 1, 16, 16}));
  EXPECT_EQ(f.metadata().at("ahead"), "3");
  EXPECT_GT(f.load("targets").abs().max().item<double>(), 0);
}

TEST(WaveCliTest, BadOptionsFailBeforeAnyWork) {
  testing::TempDir tmp;
  const std::string out = (tmp / "d.safetensors").string();
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    const auto r = run_command(wave("simulate " + args + " --out " + out));
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
    EXPECT_FALSE(std::filesystem::exists(out)) << args;
  };
  expect_error("--cfl 1.2", "CFL number 1.2");
  expect_error("--boundary reflecting", "\"reflecting\"");
  expect_error("--grid 2", "wave grid n = 2");
  expect_error("--samples 0", "must be positive");
  const auto r = run_command(wave("simulate --out " + (tmp / "d.csv").string()));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("written as .safetensors"), std::string::npos) << r.out;
}

TEST(WaveCliTest, TrainsEvaluatesAndCompresses) {
  testing::TempDir tmp;
  const std::string train = (tmp / "train.safetensors").string(), test = (tmp / "test.safetensors").string();
  ASSERT_EQ(run_command(wave("simulate --samples 12 --grid 16 --ahead 2 --seed 1 --out " + train)).exit_code,
            0);
  ASSERT_EQ(run_command(wave("simulate --samples 4 --grid 16 --ahead 2 --seed 2 --out " + test)).exit_code,
            0);
  const std::string shape = " --width 3 --levels 1 --kernel-size 3 --steps 4 --batch-size 4 --quiet";
  const auto dense = run_command(
      wave("train --data " + train + " --test " + test + " --out " + (tmp / "dense").string() + shape));
  ASSERT_EQ(dense.exit_code, 0) << dense.out;
  const Json report = read_json_file(tmp / "dense" / "train.json");
  EXPECT_EQ(report.at("conv"), "dense");
  EXPECT_EQ(report.at("steps"), 4);
  // eval of the saved model reproduces the test error measured at the end of training.
  const auto ev =
      run_command(wave("eval --json --model " + (tmp / "dense" / "model").string() + " --data " + test));
  ASSERT_EQ(ev.exit_code, 0) << ev.out;
  const Json evj = Json::parse(ev.out);
  EXPECT_NEAR(evj.at("relative_l2").get<double>(), report.at("test").at("relative_l2").get<double>(), 1e-6);
  // A-priori CP: fewer inner parameters.
  const auto cp =
      run_command(wave("train --conv cp:2 --data " + train + " --out " + (tmp / "cp").string() + shape));
  ASSERT_EQ(cp.exit_code, 0) << cp.out;
  EXPECT_LT(read_json_file(tmp / "cp" / "train.json").at("inner_conv_parameters").get<int64_t>(),
            report.at("inner_conv_parameters").get<int64_t>());
  // Post-hoc CP of the dense model, then fine-tuned from it.
  const auto comp =
      run_command(wave("compress --json --rank 2 --model " + (tmp / "dense" / "model").string() + " --out " +
                       (tmp / "post").string()));
  ASSERT_EQ(comp.exit_code, 0) << comp.out;
  EXPECT_EQ(Json::parse(comp.out).at("kernel_errors").size(), 2u);
  const auto ft = run_command(wave("train --init " + (tmp / "post").string() + " --data " + train +
                                   " --out " + (tmp / "ft").string() + " --steps 2 --batch-size 4 --quiet"));
  ASSERT_EQ(ft.exit_code, 0) << ft.out;
  EXPECT_EQ(read_json_file(tmp / "ft" / "train.json").at("conv"), "cp");
  // --init keeps the model's convolutions; a bad --conv; a CP model cannot be compressed again.
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    const auto r = run_command(wave(args));
    EXPECT_NE(r.exit_code, 0) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  };
  expect_error("train --conv cp:2 --init " + (tmp / "post").string() + " --data " + train + " --out " +
                   (tmp / "x").string(),
               "keeps its own convolutions");
  expect_error("train --conv svd:3 --data " + train + " --out " + (tmp / "x").string(),
               "expected dense or cp:R");
  expect_error("compress --rank 2 --model " + (tmp / "post").string() + " --out " + (tmp / "y").string(),
               "needs a dense wave_cnn");
  expect_error(
      "eval --model " + (tmp / "dense" / "model").string() + " --data " + (tmp / "none.safetensors").string(),
      "none.safetensors");
}

}  // namespace
}  // namespace lowrank
