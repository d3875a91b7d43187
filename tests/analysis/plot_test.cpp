#include "lowrank/analysis/plot.h"

#include <gtest/gtest.h>

#include <regex>

#include "lowrank/core/error.h"
#include "tests/analysis/svg_testing.h"

namespace lowrank::analysis {
namespace {

// The hand-worked values below follow Heckbert's procedure step by step (range = nicenum(hi - lo,
// false), step = nicenum(range / (n - 1), true), axis = [floor(lo / step), ceil(hi / step)] * step).

TEST(PlotTest, NiceNumberRoundsToOneTwoFiveTimesAPowerOfTen) {
  EXPECT_DOUBLE_EQ(nice_number(97, false), 100);
  EXPECT_DOUBLE_EQ(nice_number(25, true), 20);  // fraction 2.5 < 3 → 2
  EXPECT_DOUBLE_EQ(nice_number(0.074, false), 0.1);
  EXPECT_DOUBLE_EQ(nice_number(0.0035, true), 0.005);  // 3.5 in [3, 7) → 5
  EXPECT_DOUBLE_EQ(nice_number(1.4, true), 1);
  EXPECT_DOUBLE_EQ(nice_number(7.0, true), 10);
  EXPECT_DOUBLE_EQ(nice_number(4.9, false), 5);
  EXPECT_THROW(nice_number(0, true), InvalidArgument);
}

TEST(PlotTest, LinearTicksAreHeckbertsNiceSteps) {
  // [0, 97], 5 ticks: range 100, step nicenum(25, round) = 20 → 0, 20, ..., 100.
  const AxisTicks a = linear_ticks(0, 97);
  EXPECT_EQ(a.values, (std::vector<double>{0, 20, 40, 60, 80, 100}));
  EXPECT_EQ(a.labels, (std::vector<std::string>{"0", "20", "40", "60", "80", "100"}));
  EXPECT_DOUBLE_EQ(a.lo, 0);
  EXPECT_DOUBLE_EQ(a.hi, 100);
  // [0.013, 0.087]: range 0.1, step 0.02, axis [0, 0.1], two decimals.
  const AxisTicks b = linear_ticks(0.013, 0.087);
  ASSERT_EQ(b.values.size(), 6u);
  EXPECT_NEAR(b.values[3], 0.06, 1e-15);
  EXPECT_EQ(b.labels.front(), "0.00");
  EXPECT_EQ(b.labels.back(), "0.10");
  // [2.3, 7.9]: range nicenum(5.6) = 10, step nicenum(2.5, round) = 2, axis [2, 8].
  const AxisTicks c = linear_ticks(2.3, 7.9);
  EXPECT_EQ(c.values, (std::vector<double>{2, 4, 6, 8}));
  // Negative ranges cross zero exactly at a tick, labelled "0".
  const AxisTicks d = linear_ticks(-3.2, 4.1);
  EXPECT_NE(std::find(d.labels.begin(), d.labels.end(), "0"), d.labels.end());
  EXPECT_LE(d.lo, -3.2);
  EXPECT_GE(d.hi, 4.1);
  // A single value gets a range around it.
  const AxisTicks e = linear_ticks(5, 5);
  EXPECT_LT(e.lo, 5);
  EXPECT_GT(e.hi, 5);
  EXPECT_THROW(linear_ticks(1, 0), InvalidArgument);
}

TEST(PlotTest, LogTicksAtDecadesThenOneTwoFiveThenLinear) {
  const AxisTicks a = log_ticks(3, 4000);  // three decades inside: 10, 100, 1000
  EXPECT_EQ(a.values, (std::vector<double>{10, 100, 1000}));
  EXPECT_EQ(a.labels, (std::vector<std::string>{"10", "100", "1000"}));
  EXPECT_TRUE(a.log);
  const AxisTicks b = log_ticks(0.03, 0.6);  // one decade: 1-2-5 → 0.05, 0.1, 0.2, 0.5
  ASSERT_EQ(b.values.size(), 4u);
  EXPECT_EQ(b.labels, (std::vector<std::string>{"0.05", "0.1", "0.2", "0.5"}));
  // [2.1, 4.5]: 1..9 gives only 3 and 4, as do linear ticks for 5 (step nicenum(5 / 4, round) = 1);
  // for 10, the step is nicenum(nicenum(2.4) / 9 = 0.56, round) = 0.5: 2.5, 3, 3.5, 4, 4.5.
  const AxisTicks c = log_ticks(2.1, 4.5);
  EXPECT_EQ(c.values, (std::vector<double>{2.5, 3, 3.5, 4, 4.5}));
  EXPECT_EQ(c.labels, (std::vector<std::string>{"2.5", "3", "3.5", "4", "4.5"}));
  EXPECT_THROW(log_ticks(0, 10), InvalidArgument);
}

TEST(PlotTest, FrameMapsDataToPixelsLinearAndLog) {
  PlotFrame f;
  f.left = 10;
  f.top = 20;
  f.width = 200;
  f.height = 100;
  f.x = linear_ticks(0, 100);
  f.y = log_ticks(1, 1000);
  EXPECT_DOUBLE_EQ(f.px(50), 110);                 // halfway across
  EXPECT_DOUBLE_EQ(f.py(1000), 20);                // the top
  EXPECT_DOUBLE_EQ(f.py(1), 120);                  // the bottom
  EXPECT_NEAR(f.py(std::sqrt(1000.0)), 70, 1e-9);  // geometric middle → pixel middle
}

using testing_support::series_polylines;

TEST(PlotTest, LinePlotHasOnePolylinePerSeriesWithOnePointPerPair) {
  const std::vector<Series> series = {{"train <a&b>", {1, 2, 3, 4}, {4, 3, 2.5, 2}},
                                      {"other", {1, 2, 3}, {5, 0, 1}}};
  LinePlotOptions options;
  options.title = "loss";
  options.x_label = "step";
  const std::string svg = line_plot_svg(series, options);
  const auto lines = series_polylines(svg);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], std::make_pair(std::string("train &lt;a&amp;b&gt;"), size_t{4}));
  EXPECT_EQ(lines[1].second, 3u);
  // On a log axis the zero is left out.
  options.log_y = true;
  const auto log_lines = series_polylines(line_plot_svg(series, options));
  ASSERT_EQ(log_lines.size(), 2u);
  EXPECT_EQ(log_lines[1].second, 2u);
  EXPECT_THROW(line_plot_svg({{"bad", {1, 2}, {1}}}, {}), InvalidArgument);
}

TEST(PlotTest, StackedBarWidthsAreProportionalToTheParts) {
  // One bar, parts 1 and 3 on an axis [0, 4] (nice step 1): widths in ratio 1 : 3.
  const std::string svg = stacked_bar_svg({{"run", {{"weights", 1}, {"states", 3}}}}, "memory", "MiB", 520);
  const std::regex rect(
      R"re(<rect x="([0-9.]+)" y="[0-9.]+" width="([0-9.]+)" height="22.00" fill="(#[0-9a-f]+)")re");
  std::vector<double> widths;
  for (std::sregex_iterator it(svg.begin(), svg.end(), rect), end; it != end; ++it)
    widths.push_back(std::stod((*it)[2]));
  ASSERT_EQ(widths.size(), 2u);
  EXPECT_NEAR(widths[1] / widths[0], 3.0, 0.02);
  EXPECT_NEAR(widths[0] + widths[1], 520 - 150 - 20, 0.02);  // the whole axis: max total = 4 = axis end
  EXPECT_THROW(stacked_bar_svg({{"run", {{"weights", -1}}}}, "m", "MiB"), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::analysis
