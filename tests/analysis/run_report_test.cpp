#include "lowrank/analysis/run_report.h"

#include <gtest/gtest.h>

#include <regex>

#include "lowrank/core/error.h"
#include "tests/analysis/svg_testing.h"
#include "tests/testing.h"

namespace lowrank::analysis {
namespace {

// A pretraining run as train/pretrain.cpp leaves it: run/metrics.jsonl and pretrain.json.
void write_pretrain_run(const std::filesystem::path& dir, int rows) {
  std::string metrics;
  for (int i = 1; i <= rows; ++i)
    metrics += str("{\"step\":", i, ",\"loss\":", 5.0 / i, ",\"lr\":0.001,\"grad_norm\":", 1.0 / i,
                   ",\"tokens_per_s\":1000}\n");
  testing::write_text_file(dir / "run" / "metrics.jsonl", metrics);
  testing::write_text_file(dir / "pretrain.json",
                           R"({"steps": 3, "final_loss": 1.6667, "train_seconds": 2.5,
          "validation": {"nll": 1.9, "perplexity": 6.686},
          "memory": {"weights": 2097152, "grads": 2097152, "optimizer_states": 4194304, "projectors": 0,
                     "total": 8388608},
          "trainer": {"batch_size": 4, "grad_accum": 2, "seq_len": 16}})");
}

// (data-series, number of points) of each polyline inside the <figure id="ID">.
std::vector<std::pair<std::string, size_t>> curves(const std::string& html, const std::string& id) {
  const size_t begin = html.find("<figure id=\"" + id + "\">");
  if (begin == std::string::npos) return {};
  return testing_support::series_polylines(html.substr(begin, html.find("</figure>", begin) - begin));
}

TEST(RunReportTest, ReadsMetricsSummaryAndTokensPerStep) {
  testing::TempDir dir;
  write_pretrain_run(dir / "small", 3);
  const RunData r = read_run(dir / "small");
  EXPECT_EQ(r.name, "small");
  EXPECT_EQ(r.kind, "pretrain");
  EXPECT_EQ(r.metric_rows, 3);
  EXPECT_EQ(r.tokens_per_step, 4 * 2 * 16);
  ASSERT_EQ(r.columns.at("loss").size(), 3u);
  EXPECT_DOUBLE_EQ(r.columns.at("loss")[1].first, 2);
  EXPECT_DOUBLE_EQ(r.columns.at("loss")[1].second, 2.5);
  EXPECT_EQ(r.columns.count("step"), 0u);  // the x coordinate, not a column
}

TEST(RunReportTest, OnePolylinePerRunWithOnePointPerRow) {
  testing::TempDir dir;
  write_pretrain_run(dir / "x" / "a", 3);
  write_pretrain_run(dir / "b" / "a", 5);  // same name: told apart by their parents
  const std::string html = run_report_html(read_runs({dir / "x" / "a", dir / "b" / "a"}), "two runs");
  for (const char* id : {"plot-loss-step", "plot-loss-tokens", "plot-lr-step", "plot-grad_norm-step",
                         "plot-tokens_per_s-step"}) {
    const auto c = curves(html, id);
    ASSERT_EQ(c.size(), 2u) << id;
    EXPECT_EQ(c[0], std::make_pair(std::string("x/a"), size_t{3})) << id;
    EXPECT_EQ(c[1], std::make_pair(std::string("b/a"), size_t{5})) << id;
  }
  // The same directory twice: alike even with their parents, so numbered.
  const auto twice = read_runs({dir / "b" / "a", dir / "b" / "a"});
  EXPECT_EQ(twice[0].name, "b/a");
  EXPECT_EQ(twice[1].name, "b/a (2)");
  // Loss against tokens: the data reach 5 steps × 128 tokens = 640; Heckbert's step for [128, 640]
  // is nicenum(nicenum(512) / 4 = 250, round) = 200, so the axis ends at 800.
  const size_t at = html.find("<figure id=\"plot-loss-tokens\">");
  const std::string fig = html.substr(at, html.find("</figure>", at) - at);
  EXPECT_NE(fig.find(">800</text>"), std::string::npos);
  // The memory bar and the runs table (validation perplexity from the summary).
  EXPECT_NE(html.find("<figure id=\"memory\">"), std::string::npos);
  EXPECT_NE(html.find("<td>6.69</td>"), std::string::npos);
  // Self-contained: no script, no external reference.
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("href=\"http"), std::string::npos);
}

TEST(RunReportTest, CompressionTableAndEscaping) {
  testing::TempDir dir;
  testing::write_text_file(dir / "c" / "compress_report.json",
                           R"({"perplexity_before": 10.0, "perplexity_after": 12.5,
          "report": {"method": "svd<script>", "param_reduction": 0.25,
                     "slots": [{"name": "model.layers.0.mlp.up_proj", "kind": "low_rank", "shape": [64, 32],
                                "rank": 8, "params_before": 2048, "params_after": 768,
                                "weight_error": 0.125, "output_error": null}]}})");
  const std::string html = run_report_html(read_runs({dir / "c"}), "<b>title</b>");
  EXPECT_NE(html.find("svd&lt;script&gt;"), std::string::npos);
  EXPECT_EQ(html.find("<script>"), std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;title&lt;/b&gt;"), std::string::npos);
  EXPECT_NE(html.find("<td>64×32</td><td>8</td><td>0.375</td><td>0.12500</td><td>–</td>"), std::string::npos);
}

TEST(RunReportTest, RefusesADirectoryWithoutARunAndABadLine) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir / "empty");
  EXPECT_THROW(read_run(dir / "empty"), NotFound);
  EXPECT_THROW(read_run(dir / "missing"), NotFound);
  testing::write_text_file(dir / "bad" / "metrics.jsonl", "{\"step\": 1, \"loss\": 2}\n[1, 2]\n");
  try {
    read_run(dir / "bad");
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lowrank::analysis
