// End-to-end `lowrank ctr`: generate, train, compress by AFM and SVD, evaluate, fine-tune an AFM
// model with a ReLU; and the errors a user sees for bad input (exit code 1, nothing written).
#include <gtest/gtest.h>

#include <filesystem>

#include "lowrank/core/json.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

using testing::run_command;

std::string ctr(const std::string& args) {
  return testing::lowrank_binary().string() + " --json ctr " + args;
}

Json json_of(const testing::CommandResult& r) {
  return parse_json(r.out.substr(r.out.find('{')), "stdout");
}

TEST(CtrCliTest, GeneratesTrainsCompressesAndEvaluates) {
  testing::TempDir tmp;
  const std::string data = (tmp / "data").string();
  auto r = run_command(
      ctr("generate --out " + data +
          " --train-rows 3000 --test-rows 1000 --sparse-fields 5 --dense-fields 2 --max-vocab 200 "
          "--base-ctr 0.3"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_GT(json_of(r)["teacher_test_auc"].get<double>(), 0.6);
  r = run_command(ctr("train --data " + data + " --out " + (tmp / "dnn").string() +
                      " --model dnn --hidden 16,8 --embedding-dim 4 --epochs 2 --batch-size 128"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json trained = json_of(r);
  const double auc = trained["test"]["auc"].get<double>();
  EXPECT_GT(auc, 0.55);
  const std::string model = (tmp / "dnn/model").string();
  for (const std::string method : {"afm", "svd"}) {
    const std::string out = (tmp / method).string();
    r = run_command(ctr("compress --model " + model + " --data " + data + " --out " + out + " --method " +
                        method + " --factor 1.5"));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const Json c = json_of(r);
    EXPECT_GE(c["factor"].get<double>(), 1.3) << method;
    EXPECT_TRUE(std::filesystem::exists(out + "/lowrank_config.json"));
    r = run_command(ctr("eval --model " + out + " --data " + data));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_GT(json_of(r)["auc"].get<double>(), 0.5) << method;
    EXPECT_EQ(json_of(r)["parameters"].get<int64_t>(), c["model_params_after"].get<int64_t>());
  }
  // AFM with a ReLU between the factors, then fine-tuned from it.
  r = run_command(ctr("compress --model " + model + " --data " + data + " --out " + (tmp / "relu").string() +
                      " --method afm --relu --ratio 0.5 --layers dnn"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = run_command(ctr("train --data " + data + " --init " + (tmp / "relu").string() + " --out " +
                      (tmp / "tuned").string() + " --epochs 1 --batch-size 128"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(std::filesystem::exists(tmp / "tuned/model/lowrank_config.json"));
}

TEST(CtrCliTest, BadInputFailsBeforeAnyWork) {
  testing::TempDir tmp;
  const std::string data = (tmp / "data").string();
  ASSERT_EQ(run_command(ctr("generate --out " + data +
                            " --train-rows 200 --test-rows 50 --sparse-fields 3 "
                            "--max-vocab 50 --base-ctr 0.3"))
                .exit_code,
            0);
  auto expect_error = [&](const std::string& args, const std::string& needle, const std::string& out) {
    const auto r = run_command(ctr(args));
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
    if (!out.empty()) EXPECT_FALSE(std::filesystem::exists(out)) << args;
  };
  const std::string out = (tmp / "out").string();
  expect_error("generate --out " + out + " --base-ctr 1.5", "base_ctr 1.5", out);
  expect_error("train --data " + (tmp / "none").string() + " --out " + out, "not a CTR data directory", "");
  expect_error("train --data " + data + " --out " + out + " --model wide", "model_type \"wide\"", "");
  ASSERT_EQ(run_command(ctr("train --data " + data + " --out " + (tmp / "m").string() +
                            " --model dnn --hidden 4 --embedding-dim 2"))
                .exit_code,
            0);
  const std::string model = (tmp / "m/model").string();
  expect_error("compress --model " + model + " --data " + data + " --out " + out + " --ratio 1.5",
               "ratio 1.5", out);
  expect_error(
      "compress --model " + model + " --data " + data + " --out " + out + " --ratio 0.5 --layers heads",
      "\"heads\"", out);
  expect_error("compress --model " + model + " --data " + data + " --out " + out + " --factor 50",
               "out of reach", out);
}

}  // namespace
}  // namespace lowrank
