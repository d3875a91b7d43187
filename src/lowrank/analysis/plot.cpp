// Axes, line plots and stacked bars on core/svg.h (see plot.h; ticks after Heckbert 1990).
#include "lowrank/analysis/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "lowrank/core/error.h"

namespace lowrank::analysis {
namespace {

// A tick label with `decimals` digits after the point; very large or small magnitudes in %g.
std::string format_tick(double v, int decimals) {
  char buf[32];
  const double a = std::fabs(v);
  if (a != 0 && (a >= 1e6 || a < 1e-4))
    std::snprintf(buf, sizeof buf, "%g", v);
  else
    std::snprintf(buf, sizeof buf, "%.*f", std::clamp(decimals, 0, 12), v);
  std::string s = buf;
  if (s == "-0" || (s.starts_with("-0.") && s.find_first_not_of("0.", 1) == std::string::npos)) s.erase(0, 1);
  return s;
}

bool usable(double v, bool log) {
  return std::isfinite(v) && (!log || v > 0);
}

// The data range of one coordinate over every series (lo > hi when there is none).
std::pair<double, double> data_range(const std::vector<Series>& series, bool use_x, bool log_x, bool log_y) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!usable(s.x[i], log_x) || !usable(s.y[i], log_y)) continue;
      const double v = use_x ? s.x[i] : s.y[i];
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  return {lo, hi};
}

AxisTicks axis_for(double lo, double hi, bool log) {
  if (lo > hi) return log ? log_ticks(1, 10) : linear_ticks(0, 1);  // no data
  return log ? log_ticks(lo, hi) : linear_ticks(lo, hi);
}

}  // namespace

double nice_number(double x, bool round) {
  LR_CHECK(std::isfinite(x) && x > 0, InvalidArgument, "nice_number: x must be finite and > 0, got ", x);
  const double exponent = std::floor(std::log10(x));
  const double power = std::pow(10.0, exponent);
  const double fraction = x / power;  // in [1, 10)
  double nice;
  if (round)
    nice = fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10;
  else
    nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return nice * power;
}

AxisTicks linear_ticks(double lo, double hi, int target) {
  LR_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, InvalidArgument,
           "linear_ticks: need finite lo <= hi, got [", lo, ", ", hi, "]");
  LR_CHECK(target >= 2, InvalidArgument, "linear_ticks: target must be >= 2, got ", target);
  if (hi == lo) {  // one value: a range around it
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.5;
    lo -= pad;
    hi += pad;
  }
  const double range = nice_number(hi - lo, false);
  const double step = nice_number(range / (target - 1), true);
  AxisTicks t;
  t.lo = std::floor(lo / step) * step;
  t.hi = std::ceil(hi / step) * step;
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step))));
  const auto count = static_cast<int64_t>(std::llround((t.hi - t.lo) / step));
  for (int64_t i = 0; i <= count; ++i) {
    // i * step from lo, not a running sum: no accumulated rounding error.
    double v = t.lo + static_cast<double>(i) * step;
    if (std::fabs(v) < step * 1e-9) v = 0;
    t.values.push_back(v);
    t.labels.push_back(format_tick(v, decimals));
  }
  return t;
}

AxisTicks log_ticks(double lo, double hi) {
  LR_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo > 0 && lo <= hi, InvalidArgument,
           "log_ticks: a log axis needs 0 < lo <= hi, got [", lo, ", ", hi, "]");
  if (hi == lo) {
    lo /= 2;
    hi *= 2;
  }
  AxisTicks t;
  t.lo = lo;
  t.hi = hi;
  t.log = true;
  const int first = static_cast<int>(std::floor(std::log10(lo)));
  const int last = static_cast<int>(std::ceil(std::log10(hi)));
  const std::vector<std::vector<int>> multiples = {{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}};
  // Relative slack so that a bound equal to a tick (1000 in [3, 1000]) keeps it.
  const double eps = 1e-9;
  for (const auto& m : multiples) {
    t.values.clear();
    for (int e = first; e <= last; ++e)
      for (int k : m) {
        const double v = k * std::pow(10.0, e);
        if (v >= lo * (1 - eps) && v <= hi * (1 + eps)) t.values.push_back(v);
      }
    if (t.values.size() >= 3) break;
  }
  // Narrower than a 1..9 decade step: linear nice ticks inside the range, finer if five ticks
  // over the extended axis leave fewer than three inside the data.
  for (int target = 5; t.values.size() < 3 && target <= 20; target *= 2) {
    const AxisTicks linear = linear_ticks(lo, hi, target);
    t.values.clear();
    for (double v : linear.values)
      if (v > 0 && v >= lo * (1 - eps) && v <= hi * (1 + eps)) t.values.push_back(v);
  }
  for (double v : t.values) {
    // As many decimals as the value needs (0.05 → "0.05", 2.5 → "2.5", 300 → "300").
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    t.labels.push_back(buf);
  }
  return t;
}

double PlotFrame::px(double value) const {
  const double f = x.log ? (std::log10(value) - std::log10(x.lo)) / (std::log10(x.hi) - std::log10(x.lo))
                         : (value - x.lo) / (x.hi - x.lo);
  return left + f * width;
}

double PlotFrame::py(double value) const {
  const double f = y.log ? (std::log10(value) - std::log10(y.lo)) / (std::log10(y.hi) - std::log10(y.lo))
                         : (value - y.lo) / (y.hi - y.lo);
  return top + (1 - f) * height;
}

void draw_axes(Svg& svg, const PlotFrame& f, const std::string& x_label, const std::string& y_label) {
  svg.rect(f.left, f.top, f.width, f.height, "#fafafa", "#999");
  for (size_t i = 0; i < f.x.values.size(); ++i) {
    const double x = f.px(f.x.values[i]);
    svg.line(x, f.top, x, f.top + f.height, "#e3e3e3");
    svg.text(x, f.top + f.height + 14, f.x.labels[i], 10, "middle", "#555");
  }
  for (size_t i = 0; i < f.y.values.size(); ++i) {
    const double y = f.py(f.y.values[i]);
    svg.line(f.left, y, f.left + f.width, y, "#e3e3e3");
    svg.text(f.left - 6, y + 4, f.y.labels[i], 10, "end", "#555");
  }
  if (!x_label.empty()) svg.text(f.left + f.width / 2, f.top + f.height + 30, x_label, 11, "middle", "#333");
  if (!y_label.empty()) svg.text(f.left, f.top - 6, y_label, 11, "start", "#333");
}

void draw_line_plot(Svg& svg, double left, double top, double width, double height,
                    const std::vector<Series>& series, const LinePlotOptions& options) {
  for (const Series& s : series)
    LR_CHECK(s.x.size() == s.y.size(), InvalidArgument, "line plot: series '", s.name, "' has ", s.x.size(),
             " x values and ", s.y.size(), " y values");
  // Room for the title and y label above, the tick labels on the left, the x label below and
  // the legend on the right.
  const double legend_w = series.size() > 1 ? 130 : 0;
  PlotFrame frame;
  frame.left = left + 56;
  frame.top = top + 40;
  frame.width = std::max(40.0, width - 56 - 12 - legend_w);
  frame.height = std::max(40.0, height - 40 - 40);
  const auto [x_lo, x_hi] = data_range(series, true, options.log_x, options.log_y);
  const auto [y_lo, y_hi] = data_range(series, false, options.log_x, options.log_y);
  frame.x = axis_for(x_lo, x_hi, options.log_x);
  frame.y = axis_for(y_lo, y_hi, options.log_y);
  if (!options.title.empty()) svg.text(left + 56, top + 16, options.title, 13, "start", "#111", true);
  draw_axes(svg, frame, options.x_label, options.y_label + (options.log_y ? " (log)" : ""));
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    const std::string color =
        i < options.colors.size() ? options.colors[i] : category_color(static_cast<int>(i));
    std::vector<std::pair<double, double>> points;
    for (size_t k = 0; k < s.x.size(); ++k)
      if (usable(s.x[k], options.log_x) && usable(s.y[k], options.log_y))
        points.emplace_back(frame.px(s.x[k]), frame.py(s.y[k]));
    svg.polyline(points, color, 1.6, 0.9, s.name.empty() ? "series" : s.name);
    if (legend_w > 0) {
      const double ly = frame.top + 8 + 16 * static_cast<double>(i);
      const double lx = frame.left + frame.width + 12;
      svg.line(lx, ly, lx + 18, ly, color, 2.5);
      svg.text(lx + 24, ly + 4, s.name, 10.5, "start", "#333");
    }
  }
}

std::string line_plot_svg(const std::vector<Series>& series, const LinePlotOptions& options, double width,
                          double height) {
  Svg svg(width, height);
  draw_line_plot(svg, 0, 0, width, height, series, options);
  return svg.str();
}

std::string stacked_bar_svg(const std::vector<StackedBar>& bars, const std::string& title,
                            const std::string& unit, double width) {
  std::vector<std::string> names;  // part names in first-seen order: one colour each
  double max_total = 0;
  for (const StackedBar& b : bars) {
    double total = 0;
    for (const auto& [name, value] : b.parts) {
      LR_CHECK(std::isfinite(value) && value >= 0, InvalidArgument, "stacked bar '", b.label, "': part '",
               name, "' must be finite and >= 0, got ", value);
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
      total += value;
    }
    max_total = std::max(max_total, total);
  }
  const double bar_h = 22, gap = 10, label_w = 150;
  const double legend_h = 18 * std::ceil(static_cast<double>(names.size()) / 4.0);
  const double height = 40 + static_cast<double>(bars.size()) * (bar_h + gap) + 36 + legend_h + 8;
  Svg svg(width, height);
  svg.text(8, 18, title, 13, "start", "#111", true);
  PlotFrame frame;
  frame.left = label_w;
  frame.top = 30;
  frame.width = width - label_w - 20;
  frame.height = static_cast<double>(bars.size()) * (bar_h + gap) + gap;
  frame.x = linear_ticks(0, max_total > 0 ? max_total : 1);
  // frame.y keeps AxisTicks's defaults ([0, 1], no tick): the bars place themselves.
  draw_axes(svg, frame, unit, "");
  const auto color_of = [&](const std::string& name) {
    return category_color(static_cast<int>(std::find(names.begin(), names.end(), name) - names.begin()));
  };
  for (size_t i = 0; i < bars.size(); ++i) {
    const double y = frame.top + gap + static_cast<double>(i) * (bar_h + gap);
    svg.text(label_w - 8, y + bar_h / 2 + 4, bars[i].label, 10.5, "end", "#333");
    double at = 0;
    for (const auto& [name, value] : bars[i].parts) {
      const double x0 = frame.px(at), x1 = frame.px(at + value);
      if (x1 > x0) svg.rect(x0, y, x1 - x0, bar_h, color_of(name), "white");
      at += value;
    }
  }
  for (size_t k = 0; k < names.size(); ++k) {
    const double lx = 8 + static_cast<double>(k % 4) * (width - 16) / 4;
    const double ly = frame.top + frame.height + 36 + 18 * static_cast<double>(k / 4);
    svg.rect(lx, ly - 9, 12, 12, color_of(names[k]));
    svg.text(lx + 16, ly + 1, names[k], 10.5, "start", "#333");
  }
  return svg.str();
}

}  // namespace lowrank::analysis
