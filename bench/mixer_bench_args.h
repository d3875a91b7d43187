// The command-line flags that bench_mixers and bench_mixer_layers share: the workload's shape
// (--lengths, --heads, --head-dim, --batch), which mixers with which options (--mixers,
// --options NAME=JSON, repeatable), and --repeats, --threads, --json.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "lowrank/core/json.h"

namespace lowrank::bench {

struct MixerBenchArgs {
  std::vector<int64_t> lengths;
  int64_t heads = 4, head_dim = 64, batch = 1;
  std::vector<std::string> mixers;  // empty: every registered mixer
  std::map<std::string, Json> options;
  int repeats = 3;
  int threads = 0;
  bool json = false;
  int64_t hidden() const { return heads * head_dim; }
};

// The non-empty pieces of `s` between `sep`s.
inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, sep);)
    if (!part.empty()) out.push_back(part);
  return out;
}

// Consumes argv[i] (and its value, advancing i) when it is one of the shared flags and returns
// true; returns false for any other argument. Throws std::invalid_argument naming the flag for an
// --options that is not NAME=JSON.
inline bool parse_mixer_bench_flag(int argc, char** argv, int& i, MixerBenchArgs& a) {
  const bool has_value = i + 1 < argc;
  auto is = [&](const char* flag) { return !std::strcmp(argv[i], flag) && has_value; };
  if (is("--lengths")) {
    a.lengths.clear();
    for (const std::string& v : split(argv[++i], ',')) a.lengths.push_back(std::atoll(v.c_str()));
  } else if (is("--heads")) {
    a.heads = std::atoll(argv[++i]);
  } else if (is("--head-dim")) {
    a.head_dim = std::atoll(argv[++i]);
  } else if (is("--batch")) {
    a.batch = std::atoll(argv[++i]);
  } else if (is("--mixers")) {
    a.mixers = split(argv[++i], ',');
  } else if (is("--options")) {
    const std::string arg = argv[++i];
    const size_t eq = arg.find('=');
    if (eq == std::string::npos) throw std::invalid_argument("--options wants NAME=JSON, got " + arg);
    try {
      a.options[arg.substr(0, eq)] = Json::parse(arg.substr(eq + 1));
    } catch (const std::exception& e) {
      throw std::invalid_argument("--options " + arg + ": " + e.what());
    }
  } else if (is("--repeats")) {
    a.repeats = std::atoi(argv[++i]);
  } else if (is("--threads")) {
    a.threads = std::atoi(argv[++i]);
  } else if (!std::strcmp(argv[i], "--json")) {
    a.json = true;
  } else {
    return false;
  }
  return true;
}

// An empty string, or what is wrong with the shared values.
inline std::string check_mixer_bench_args(const MixerBenchArgs& a) {
  if (a.heads < 1 || a.head_dim < 1 || a.batch < 1 || a.repeats < 1 || a.lengths.empty())
    return "need --heads, --head-dim, --batch, --repeats >= 1 and some --lengths";
  for (const int64_t n : a.lengths)
    if (n < 1) return "--lengths must be positive, got " + std::to_string(n);
  return "";
}

}  // namespace lowrank::bench
