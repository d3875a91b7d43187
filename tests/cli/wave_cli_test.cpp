// End-to-end tests of `lowrank wave simulate`: the data set it writes and the errors a user sees.
#include <gtest/gtest.h>

#include <filesystem>

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

}  // namespace
}  // namespace lowrank
