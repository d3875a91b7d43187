// Plots for the reports people read (`lowrank report`, `lowrank analyze`): axes with nice tick
// values, linear or logarithmic, line plots with one polyline per series, and a stacked bar.
// Everything is drawn through core/svg.h, so the output is one self-contained SVG fragment.
//
// Tick values follow Heckbert's "nice numbers" (P. Heckbert, "Nice numbers for graph labels",
// Graphics Gems, 1990): the step is 1, 2 or 5 times a power of ten, chosen so that about
// `target` ticks cover the data, and the axis is extended outwards to whole steps. A log axis
// puts its ticks at powers of ten, or at 1-2-5 multiples of them, or at 1..9 multiples, whichever
// first gives three ticks inside the data; a range narrower than that (a loss between 2.1 and
// 4.5) gets the linear nice ticks that fall inside it (for about 5 ticks, or 10 if that leaves
// fewer than three inside), still placed on the log scale.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "lowrank/core/svg.h"

namespace lowrank::analysis {

// Heckbert's nicenum: a number 1, 2, 5 or 10 times a power of ten close to x > 0; `round`
// picks the nearest, else the smallest one >= x.
double nice_number(double x, bool round);

struct AxisTicks {
  double lo = 0, hi = 1;            // the axis range (the data's, extended to whole steps if linear)
  std::vector<double> values;       // tick positions, ascending, inside [lo, hi]
  std::vector<std::string> labels;  // one per value
  bool log = false;
};

// About `target` (>= 2) ticks over [lo, hi] at a nice step. lo == hi is widened around it.
AxisTicks linear_ticks(double lo, double hi, int target = 5);
// Ticks for a log axis over [lo, hi], 0 < lo <= hi (see the file comment). Throws
// InvalidArgument for a non-positive bound.
AxisTicks log_ticks(double lo, double hi);

// A rectangle of the picture mapped to data coordinates by two axes.
struct PlotFrame {
  double left = 0, top = 0, width = 0, height = 0;  // pixels
  AxisTicks x, y;
  double px(double value) const;  // data → pixel (log axes map log10)
  double py(double value) const;
};

// Draws the frame's box, grid lines at the ticks, the tick labels and the axis titles.
void draw_axes(Svg& svg, const PlotFrame& frame, const std::string& x_label, const std::string& y_label);

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length
};

struct LinePlotOptions {
  std::string title, x_label, y_label;
  bool log_y = false;
  bool log_x = false;
  std::vector<std::string> colors;  // per series; empty: category_color(i)
};

// Draws a line plot in the rectangle (left, top, width, height) of `svg`, title and legend
// included. Each series is one <polyline class="series" data-series="NAME"> with one point per
// (x, y) pair; pairs with a non-finite value, or a non-positive one on a log axis, are left out.
// Throws InvalidArgument when a series' x and y differ in length.
void draw_line_plot(Svg& svg, double left, double top, double width, double height,
                    const std::vector<Series>& series, const LinePlotOptions& options);
// The same as a standalone SVG document.
std::string line_plot_svg(const std::vector<Series>& series, const LinePlotOptions& options,
                          double width = 520, double height = 320);

// One bar of a stacked bar chart: its label and its parts (name, value >= 0), bottom first.
struct StackedBar {
  std::string label;
  std::vector<std::pair<std::string, double>> parts;
};

// Horizontal stacked bars on a shared linear value axis (`unit` names it), parts coloured by
// name (the same name: the same colour in every bar), with a legend. Throws InvalidArgument
// for a negative part.
std::string stacked_bar_svg(const std::vector<StackedBar>& bars, const std::string& title,
                            const std::string& unit, double width = 520);

}  // namespace lowrank::analysis
