// `lowrank repro kernels all --quick` end to end (every row, tiny sizes): the verdicts the rows mark
// robust at quick sizes must hold, and `lowrank kernel kde` against a direct evaluation.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/kernel_methods/dataset.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

std::string cli(const std::string& args) {
  return testing::lowrank_binary().string() + " " + args + " 2>&1";
}

TEST(KernelReproTest, QuickRowsHoldTheirRobustClaims) {
  // The rkme and loki rows read the digits and diabetes datasets even at quick sizes.
  if (!std::filesystem::exists(default_sklearn_data_dir() / "digits.csv.gz"))
    GTEST_SKIP() << "python3-sklearn is not installed (scripts/setup installs it)";
  testing::TempDir dir;
  const auto r = testing::run_command(
      cli("--threads 1 --json repro kernels all --quick --out " + (dir / "out").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json rows = parse_json(r.out, "repro output");
  ASSERT_TRUE(rows.is_array());
  // The claims each row must report and expect to hold at quick sizes; a row may add more.
  const std::map<std::string, std::set<std::string>> robust = {
      {"rf_ridge",
       {"teacher_tuned_monotone_in_k", "teacher_tuned_monotone_in_n", "ridgeless_peak_at_k_near_n",
        "power_law_fitting_ratio"}},
      {"kde",
       {"ipr_small_above_h_clt", "ipr_order_one_below_h_g", "crossover_sharpens_with_d",
        "h_star_below_h_clt"}},
      {"quantum_kernel", {"quantum_svm_accuracy", "quantum_beats_tuned_rbf", "shots_5000_within_2_points"}},
      {"ntk", {"kernel_error_slope_half", "residual_modes_decay_at_eta_lambda"}},
      {"cnn_kernel", {"fully_connected_does_not_adapt"}},
      {"mcr2", {"subspaces_clustered"}},
      {"rkme", {"top4_three_times_chance"}},
      {"loki", {"predicts_unobserved_labels", "expected_squared_distance_30_percent_lower"}},
      {"gkcl", {"krr_heads_forget_at_most_2_points", "generated_memory_at_most_a_tenth"}},
      {"dp_similarity", {"error_slope_minus_one_in_epsilon", "error_slope_one_and_a_half_in_d"}},
      {"snnk", {"urf_slope_half_cos", "urf_slope_half_sin"}},
      {"gcr", {"bases_stay_orthonormal"}},
      {"hierarchical_poly", {"kernel_stays_above_0_3"}},
      {"singular_likelihood", {"error_falls_with_n"}},
      {"dkm", {"diabetes_tends_to_nngp"}},
  };
  std::set<std::string> seen;
  for (const Json& row : rows) {
    const std::string name = row["name"];
    seen.insert(name);
    EXPECT_TRUE(row["quick"].get<bool>());
    EXPECT_TRUE(std::filesystem::exists(dir / "out" / (name + ".json"))) << name;
    ASSERT_FALSE(row["claims"].empty()) << name;
    std::set<std::string> flagged;
    for (const Json& claim : row["claims"]) {
      EXPECT_FALSE(claim["reason"].get<std::string>().empty()) << name << " " << claim["id"];
      if (!claim["robust_at_quick"].get<bool>()) continue;
      flagged.insert(claim["id"]);
      EXPECT_TRUE(claim["holds"].get<bool>()) << name << ": " << claim["claim"] << " — " << claim["reason"];
    }
    if (robust.count(name)) {
      for (const auto& id : robust.at(name))
        EXPECT_TRUE(flagged.count(id)) << name << " no longer checks " << id;
    }
  }
  for (const auto& [name, ids] : robust) EXPECT_TRUE(seen.count(name)) << "row " << name << " did not run";
  for (const char* curve : {"rf_ridge.svg", "kde.svg"})
    EXPECT_TRUE(std::filesystem::exists(dir / "out" / curve));
}

TEST(KernelReproTest, UnknownRowIsRefusedListingTheKnownOnes) {
  testing::TempDir dir;
  const auto r = testing::run_command(cli("repro kernels nope --quick --out " + (dir / "o").string()));
  EXPECT_EQ(r.exit_code, 1);
  // Every row, in the order.
  EXPECT_NE(r.out.find("unknown kernel reproduction \"nope\" (known: ntk, rf_ridge, kde, dp_similarity, "
                       "dpp_sampling, snnk, dkm, gkcl, hierarchical_poly, cnn_kernel, singular_likelihood, "
                       "mcr2, rkme, molrg, quantum_kernel, loki, gcr, funbat, or all)"),
            std::string::npos)
      << r.out;
}

// log ρ̂_h(x) = log((1/(n h^d)) Σ_i (2π)^{-d/2} e^{−‖x−y_i‖²/2h²}), IPR and max weight, summed directly.
struct Direct {
  double log_density, ipr, max_weight;
};
Direct direct_kde(const std::vector<std::vector<double>>& data, const std::vector<double>& x, double h) {
  const double d = static_cast<double>(x.size());
  std::vector<double> terms;
  double sum = 0;
  for (const auto& y : data) {
    double r2 = 0;
    for (size_t j = 0; j < x.size(); ++j) r2 += (x[j] - y[j]) * (x[j] - y[j]);
    terms.push_back(std::exp(-r2 / (2 * h * h)));
    sum += terms.back();
  }
  Direct out{std::log(sum / (static_cast<double>(data.size()) * std::pow(h, d) * std::pow(2 * M_PI, d / 2))),
             0, 0};
  for (double t : terms) {
    out.ipr += (t / sum) * (t / sum);
    out.max_weight = std::max(out.max_weight, t / sum);
  }
  return out;
}

TEST(KernelReproTest, KdeVerbMatchesTheDirectSum) {
  testing::TempDir dir;
  const std::vector<std::vector<double>> data = {{0, 0}, {1, 0}, {0, 2}, {1.5, 1}, {-1, 0.5}};
  const std::vector<std::vector<double>> queries = {{0.2, 0.1}, {3, -1}};
  std::string csv = "a,b,label\n", query_csv = "a,b,label\n";
  for (const auto& y : data) csv += std::to_string(y[0]) + "," + std::to_string(y[1]) + ",0\n";
  for (const auto& q : queries) query_csv += std::to_string(q[0]) + "," + std::to_string(q[1]) + ",0\n";
  testing::write_text_file(dir / "data.csv", csv);
  testing::write_text_file(dir / "query.csv", query_csv);
  const auto r = testing::run_command(cli("--json kernel kde --data " + (dir / "data.csv").string() +
                                          " --bandwidth 0.7 --query " + (dir / "query.csv").string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json out = parse_json(r.out, "kde output");
  for (size_t i = 0; i < queries.size(); ++i) {
    const Direct expected = direct_kde(data, queries[i], 0.7);
    EXPECT_NEAR(out["log_density"][i].get<double>(), expected.log_density, 1e-12);
    EXPECT_NEAR(out["ipr"][i].get<double>(), expected.ipr, 1e-12);
    EXPECT_NEAR(out["max_weight"][i].get<double>(), expected.max_weight, 1e-12);
  }
  // The safetensors output carries the same numbers.
  const auto saved = testing::run_command(cli("kernel kde --data " + (dir / "data.csv").string() +
                                              " --bandwidth 0.7 --query " + (dir / "query.csv").string() +
                                              " --out " + (dir / "kde.safetensors").string()));
  ASSERT_EQ(saved.exit_code, 0) << saved.out;
  const at::Tensor ipr = SafetensorsFile::open(dir / "kde.safetensors").load("ipr");
  EXPECT_NEAR(ipr[1].item<double>(), direct_kde(data, queries[1], 0.7).ipr, 1e-12);
}

TEST(KernelReproTest, KdeVerbHoldoutPicksTheBestHeldOutBandwidth) {
  testing::TempDir dir;
  const at::Tensor x = kernel_testing::normal({60, 3}, 5);
  std::string csv;
  for (int64_t i = 0; i < 60; ++i)
    csv += std::to_string(x[i][0].item<double>()) + "," + std::to_string(x[i][1].item<double>()) + "," +
           std::to_string(x[i][2].item<double>()) + ",0\n";
  testing::write_text_file(dir / "data.csv", csv);
  const auto r = testing::run_command(
      cli("--json kernel kde --data " + (dir / "data.csv").string() + " --bandwidth holdout --seed 2"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json out = parse_json(r.out, "kde output");
  const auto grid = out["grid"].get<std::vector<double>>();
  const auto ll = out["heldout_mean_log_likelihood"].get<std::vector<double>>();
  ASSERT_EQ(grid.size(), 41u);
  const size_t best = std::max_element(ll.begin(), ll.end()) - ll.begin();
  EXPECT_EQ(out["bandwidth"].get<double>(), grid[best]);
  // N(0, I₃) data at n = 48: the held-out optimum is interior, between the grid's ends.
  EXPECT_GT(best, 0u);
  EXPECT_LT(best, grid.size() - 1);
  EXPECT_EQ(out["log_density"].size(), 60u);  // no --query: every data point
}

TEST(KernelReproTest, KdeVerbRefusesABadBandwidth) {
  testing::TempDir dir;
  testing::write_text_file(dir / "data.csv", "0,0,0\n1,1,0\n");
  for (const std::string bad : {"-1", "0", "wide", "1.5x"}) {
    const auto r =
        testing::run_command(cli("kernel kde --data " + (dir / "data.csv").string() + " --bandwidth " + bad));
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_NE(r.out.find("--bandwidth must be"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(bad), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace lowrank::kernel_methods
