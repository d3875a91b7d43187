// Small helpers shared by the mixer reproduction programs.
#pragma once

#include <sstream>
#include <string>
#include <vector>

namespace lowrank::repro {

// "a,b,c" -> {"a", "b", "c"} (empty parts dropped).
inline std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, ',');)
    if (!part.empty()) out.push_back(part);
  return out;
}

// "1,0.5,2" -> {1, 0.5, 2}.
inline std::vector<double> numbers(const std::string& s) {
  std::vector<double> out;
  for (const std::string& p : split(s)) out.push_back(std::stod(p));
  return out;
}

}  // namespace lowrank::repro
