// `lowrank kernel fit|predict|gram` end to end, and the family in `lowrank methods`.
#include <gtest/gtest.h>

#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/quantum_kernel.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

std::string cli(const std::string& args) {
  return testing::lowrank_binary().string() + " " + args + " 2>&1";
}

TEST(KernelCliTest, FitPredictAndGram) {
  testing::TempDir dir;
  testing::write_text_file(dir / "train.csv", "x1,x2,y\n0,0,0\n1,0,1\n0,1,1\n1,1,2\n2,1,3\n");
  auto fit = testing::run_command(cli("kernel fit --method rf_ridge --data " + (dir / "train.csv").string() +
                                      " --options '{\"features\": 64, \"lambda\": 1e-6}' --seed 3 --out " +
                                      (dir / "model").string() + " --json"));
  ASSERT_EQ(fit.exit_code, 0) << fit.out;
  const Json report = parse_json(fit.out, "fit output");
  EXPECT_EQ(report["examples"], 5);
  auto predict = testing::run_command(cli("kernel predict --model " + (dir / "model").string() + " --data " +
                                          (dir / "train.csv").string() + " --json"));
  ASSERT_EQ(predict.exit_code, 0) << predict.out;
  const Json predicted = parse_json(predict.out, "predict output");
  EXPECT_LT(predicted["mse"].get<double>(), 1e-3);  // 64 features, 5 points, tiny ridge: interpolation
  auto gram_run =
      testing::run_command(cli("kernel gram --method matern --nu 1.5 --bandwidth 0.7 --data " +
                               (dir / "train.csv").string() + " --out " + (dir / "k.safetensors").string()));
  ASSERT_EQ(gram_run.exit_code, 0) << gram_run.out;
  const at::Tensor k = SafetensorsFile::open(dir / "k.safetensors").load("gram");
  const at::Tensor x =
      at::tensor(std::vector<double>{0, 0, 1, 0, 0, 1, 1, 1, 2, 1}, at::kDouble).reshape({5, 2});
  EXPECT_LE(testing::max_abs_diff(k, gram({"matern", 0.7, 1.5}, x, x)), 1e-15);
}

// The quantum Gram from the CLI is the library's (whose circuit the quantum_kernel tests check
// against a Kronecker product and qiskit); shots give multiples of 1/shots; bad shots are refused.
TEST(KernelCliTest, QuantumGramExactAndFromShots) {
  testing::TempDir dir;
  testing::write_text_file(dir / "x.csv", "0.1,0.5,0\n1.2,-0.3,1\n2.0,0.7,0\n");
  const at::Tensor x =
      at::tensor(std::vector<double>{0.1, 0.5, 1.2, -0.3, 2.0, 0.7}, at::kDouble).reshape({3, 2});
  auto r = testing::run_command(cli("kernel gram --method quantum --data " + (dir / "x.csv").string() +
                                    " --out " + (dir / "exact.safetensors").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const at::Tensor exact = SafetensorsFile::open(dir / "exact.safetensors").load("gram");
  EXPECT_LE(testing::max_abs_diff(exact, quantum_gram(x, x)), 1e-15);
  EXPECT_LE(testing::max_abs_diff(exact.diagonal(), at::ones({3}, at::kDouble)), 1e-12);
  r = testing::run_command(cli("kernel gram --method quantum --shots 40 --seed 5 --data " +
                               (dir / "x.csv").string() + " --out " + (dir / "shots.safetensors").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const at::Tensor counts = SafetensorsFile::open(dir / "shots.safetensors").load("gram") * 40;
  EXPECT_LE(testing::max_abs_diff(counts, at::round(counts)), 1e-9);
  EXPECT_LE(testing::max_abs_diff(counts / 40, exact), 0.5);
  r = testing::run_command(cli("kernel gram --method quantum --shots 0 --data " + (dir / "x.csv").string() +
                               " --out " + (dir / "bad.safetensors").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--shots must be > 0"), std::string::npos) << r.out;
  r = testing::run_command(cli("kernel gram --method rbf --shots 10 --data " + (dir / "x.csv").string() +
                               " --out " + (dir / "bad.safetensors").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--shots is for --method quantum"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir / "bad.safetensors"));
}

TEST(KernelCliTest, BadInputFailsWithExitCodeOneNamingTheCulprit) {
  testing::TempDir dir;
  testing::write_text_file(dir / "nan.csv", "1,2,0\n3,inf,1\n");
  auto r = testing::run_command(
      cli("kernel fit --method kde --data " + (dir / "nan.csv").string() + " --out " + (dir / "m").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("row 2, column 2"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir / "m"));
  r = testing::run_command(cli("kernel fit --method nope --data " + (dir / "nan.csv").string() + " --out " +
                               (dir / "m").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(
      r.out.find("unknown kernel method \"nope\" (known: cnn_kernel, dkm, dp_similarity, dpp_sampling, "
                 "funbat, gcr, gkcl, hierarchical_poly, "
                 "kde, loki, mcr2, molrg, ntk, quantum_kernel, rf_ridge, rkme, singular_likelihood, snnk)"),
      std::string::npos)
      << r.out;
  r = testing::run_command(cli("kernel gram --method cosine --data " + (dir / "nan.csv").string() +
                               " --out " + (dir / "k.safetensors").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("unknown kernel \"cosine\""), std::string::npos) << r.out;
}

TEST(KernelCliTest, SampleWritesAWeightedDesignAndRefusesBadInput) {
  testing::TempDir dir;
  auto r = testing::run_command(cli("kernel sample --method volume --basis legendre:5 --n 8 --seed 2 --out " +
                                    (dir / "design.safetensors").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const SafetensorsFile design = SafetensorsFile::open(dir / "design.safetensors");
  const at::Tensor x = design.load("x"), weight = design.load("weight");
  ASSERT_EQ(x.sizes(), (at::IntArrayRef{8, 1}));
  // w = m/k_m with k_m = Σ_j (2j+1) P_j(x)², here from the closed forms of P_0..P_4.
  const at::Tensor t = x.reshape({-1});
  const at::Tensor p2 = (3 * t.pow(2) - 1) / 2, p3 = (5 * t.pow(3) - 3 * t) / 2,
                   p4 = (35 * t.pow(4) - 30 * t.pow(2) + 3) / 8;
  const at::Tensor k = 1 + 3 * t.pow(2) + 5 * p2.pow(2) + 7 * p3.pow(2) + 9 * p4.pow(2);
  EXPECT_LE(testing::max_abs_diff(weight, 5 / k), 1e-12);
  testing::write_text_file(dir / "three.csv", "0,1\n0.5,2\n1,3\n");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"kernel sample --method dpp --basis legendre:5 --n 0", "--n must be >= 1, got 0"},
      {"kernel sample --method dpp --basis chebyshev:5 --n 5", "unknown basis \"chebyshev:5\""},
      {"kernel sample --method halton --basis legendre:5 --n 5", "unknown sampling method \"halton\""},
      {"kernel fit --method dpp_sampling --options '{\"basis\": \"legendre:5\"}' --data " +
           (dir / "three.csv").string() + " --out " + (dir / "m").string(),
       "m = 5 > n = 3"}};
  for (const auto& [args, message] : bad) {
    r = testing::run_command(cli(args));
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_NE(r.out.find(message), std::string::npos) << args << "\n" << r.out;
  }
}

TEST(KernelCliTest, MethodsListsTheKernelFamily) {
  auto r = testing::run_command(cli("methods --family kernel --json"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json listing = parse_json(r.out, "methods output");
  std::vector<std::string> names;
  for (const auto& m : listing["kernel"]["methods"]) names.push_back(m["name"]);
  EXPECT_EQ(names,
            (std::vector<std::string>{"cnn_kernel", "dkm", "dp_similarity", "dpp_sampling", "funbat", "gcr",
                                      "gkcl", "hierarchical_poly", "kde", "loki", "mcr2", "molrg", "ntk",
                                      "quantum_kernel", "rf_ridge", "rkme", "singular_likelihood", "snnk"}));
}

}  // namespace
}  // namespace lowrank::kernel_methods
