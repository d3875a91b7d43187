// Shared by the plot and report tests: the curves a document holds.
#pragma once

#include <algorithm>
#include <regex>
#include <string>
#include <utility>
#include <vector>

namespace lowrank::analysis::testing_support {

// (data-series, number of points) of every <polyline class="series"> in `svg`, in order.
inline std::vector<std::pair<std::string, size_t>> series_polylines(const std::string& svg) {
  std::vector<std::pair<std::string, size_t>> out;
  const std::regex element(R"re(<polyline class="series" data-series="([^"]*)"[^>]* points="([^"]*)")re");
  for (std::sregex_iterator it(svg.begin(), svg.end(), element), end; it != end; ++it) {
    const std::string points = (*it)[2];
    out.emplace_back((*it)[1], static_cast<size_t>(std::count(points.begin(), points.end(), ',')));
  }
  return out;
}

}  // namespace lowrank::analysis::testing_support
