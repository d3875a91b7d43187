// A minimal SVG writer for the reports people read (spectra, ranks and errors per layer).
// Coordinates are in pixels, origin top-left; text is escaped.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lowrank {

class Svg {
 public:
  Svg(double width, double height);

  void rect(double x, double y, double w, double h, std::string_view fill, std::string_view stroke = "none");
  void line(double x1, double y1, double x2, double y2, std::string_view stroke, double width = 1,
            std::string_view dash = "");
  // `series` non-empty: the element is marked class="series" data-series="SERIES" (a plot's
  // curves can then be found in the document, by a reader or a test).
  void polyline(const std::vector<std::pair<double, double>>& points, std::string_view stroke,
                double width = 1.5, double opacity = 1.0, std::string_view series = "");
  // anchor: "start", "middle" or "end".
  void text(double x, double y, std::string_view content, double size = 12, std::string_view anchor = "start",
            std::string_view fill = "#222", bool bold = false);
  // A <title> tooltip attached to the next element is not needed; plain documents only.
  std::string str() const;

 private:
  double width_, height_;
  std::string body_;
};

// `text` with & < > " ' replaced by their entities: safe inside XML/HTML content and quoted
// attribute values.
std::string xml_escape(std::string_view text);

// A colour along a perceptually ordered ramp (viridis-like), t in [0, 1], as "#rrggbb".
std::string ramp_color(double t);
// A categorical colour for index i (10 distinct hues).
std::string category_color(int i);

}  // namespace lowrank
