// The kernel-methods reproductions, run by `lowrank repro kernels NAME|all` (apps/lowrank/repro.cpp).
// Unlike the other pillars' repro programs these are linked into the `lowrank` binary: each row is
// one file repro/kernels/<name>.cpp defining `KernelRepro <name>_repro()`, listed once in
// repro/kernels/registry.cpp. A row runs its experiment through the library's kernel_methods/ API,
// and returns its numbers as tables plus each claim beside the paper's with a verdict and the reason;
// the verb prints them and writes <out>/<name>.json (and <name>.svg when the row draws a curve), from
// which repro/kernels/table.py builds results.md.
//
// A claim's verdict is computed from the numbers, never asserted: a claim that does not hold is
// reported as such with the measured values. `robust_at_quick` marks the claims whose verdict the
// row expects to hold at --quick sizes too (a wide margin at tiny sizes); the ctest
// (tests/kernel_methods/kernel_repro_test.cpp) asserts exactly those.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/core/json.h"

namespace lowrank::repro_kernels {

struct ReproOptions {
  bool quick = false;  // tiny sizes (seconds): robust orderings only
  int64_t seeds = 3;   // independent draws averaged
};

struct Claim {
  std::string id;     // short stable key, e.g. "tuned_monotone_in_k"
  std::string claim;  // what is checked here, with its threshold
  std::string paper;  // the paper's claim it stands for
  bool holds = false;
  std::string reason;  // the measured numbers behind the verdict
  bool robust_at_quick = false;
};

// A table of numbers for results.md: rows of cells (numbers or strings), one per row of `columns`.
struct Table {
  std::string title;
  std::vector<std::string> columns;
  std::vector<std::vector<OrderedJson>> rows;
};

struct ReproResult {
  std::string setup;  // data, sizes, seeds as run
  std::vector<Table> tables;
  std::vector<Claim> claims;
  std::string svg;  // a standalone SVG document, or empty
};

struct KernelRepro {
  std::string name;         // the method's registry name
  std::string title;        // the paper
  std::string paper_claim;  // the paper's headline, in a line
  ReproResult (*run)(const ReproOptions&) = nullptr;
};

// Every row, in the order of the table.
const std::vector<KernelRepro>& kernel_repros();

// ---- helpers shared by the rows

// `count` values from lo to hi, evenly spaced in log (count >= 2).
std::vector<double> log_grid(double lo, double hi, int count);
// The mean of each column of per-seed rows: values[seed][i] -> mean_i.
std::vector<double> mean_over_seeds(const std::vector<std::vector<double>>& values);
// The mean of a non-empty vector.
double mean(const std::vector<double>& values);
// "a, b, c" with `digits` significant digits.
std::string join_numbers(const std::vector<double>& values, int digits = 3);
// A number with `digits` significant digits.
std::string format_number(double value, int digits = 3);
// i where values[i + 1] > values[i] * (1 + tolerance), or -1 when the sequence never rises by more.
int64_t first_rise(const std::vector<double>& values, double tolerance);
// Index of the smallest value.
int64_t argmin(const std::vector<double>& values);
// The least-squares slope of log y against log x (both positive, at least two points).
double loglog_slope(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace lowrank::repro_kernels
