#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "lowrank/core/error.h"
#include "repro/kernels/repro.h"

namespace lowrank::repro_kernels {

// One line per reproduction, in the order: X(name) needs repro/kernels/<name>.cpp to define
// KernelRepro <name>_repro().
#define LOWRANK_KERNEL_REPROS(X) \
  X(ntk)                         \
  X(rf_ridge)                    \
  X(kde)                         \
  X(dp_similarity)               \
  X(dpp_sampling)                \
  X(snnk)                        \
  X(dkm)                         \
  X(gkcl)                        \
  X(hierarchical_poly)           \
  X(cnn_kernel)                  \
  X(singular_likelihood)         \
  X(mcr2)                        \
  X(rkme)                        \
  X(molrg)                       \
  X(quantum_kernel)              \
  X(loki)                        \
  X(gcr)                         \
  X(funbat)

#define LOWRANK_DECLARE_REPRO(name) KernelRepro name##_repro();
LOWRANK_KERNEL_REPROS(LOWRANK_DECLARE_REPRO)
#undef LOWRANK_DECLARE_REPRO

const std::vector<KernelRepro>& kernel_repros() {
#define LOWRANK_LIST_REPRO(name) name##_repro(),
  static const std::vector<KernelRepro> all = {LOWRANK_KERNEL_REPROS(LOWRANK_LIST_REPRO)};
#undef LOWRANK_LIST_REPRO
  return all;
}

std::vector<double> log_grid(double lo, double hi, int count) {
  LR_CHECK(lo > 0 && hi >= lo && count >= 2, InvalidArgument,
           "log_grid: need 0 < lo <= hi and count >= 2, got ", lo, ", ", hi, ", ", count);
  std::vector<double> out;
  for (int i = 0; i < count; ++i)
    out.push_back(std::exp(std::log(lo) + (std::log(hi) - std::log(lo)) * i / (count - 1)));
  return out;
}

std::vector<double> mean_over_seeds(const std::vector<std::vector<double>>& values) {
  LR_CHECK(!values.empty(), InvalidArgument, "mean_over_seeds: no seeds");
  std::vector<double> out(values.front().size(), 0.0);
  for (const auto& row : values) {
    LR_CHECK(row.size() == out.size(), InvalidArgument, "mean_over_seeds: rows of different lengths");
    for (size_t i = 0; i < row.size(); ++i) out[i] += row[i] / static_cast<double>(values.size());
  }
  return out;
}

double mean(const std::vector<double>& values) {
  LR_CHECK(!values.empty(), InvalidArgument, "mean: no values");
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

std::string format_number(double value, int digits) {
  std::ostringstream s;
  s << std::setprecision(digits) << value;
  return s.str();
}

std::string join_numbers(const std::vector<double>& values, int digits) {
  std::string out;
  for (double v : values) out += (out.empty() ? "" : ", ") + format_number(v, digits);
  return out;
}

int64_t first_rise(const std::vector<double>& values, double tolerance) {
  for (size_t i = 0; i + 1 < values.size(); ++i)
    if (values[i + 1] > values[i] * (1 + tolerance)) return static_cast<int64_t>(i);
  return -1;
}

int64_t argmin(const std::vector<double>& values) {
  return std::min_element(values.begin(), values.end()) - values.begin();
}

double loglog_slope(const std::vector<double>& x, const std::vector<double>& y) {
  LR_CHECK(x.size() == y.size() && x.size() >= 2, InvalidArgument,
           "loglog_slope: need two or more (x, y) pairs, got ", x.size(), " and ", y.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    LR_CHECK(x[i] > 0 && y[i] > 0, InvalidArgument, "loglog_slope: values must be > 0, got (", x[i], ", ",
             y[i], ")");
    mx += std::log(x[i]) / static_cast<double>(x.size());
    my += std::log(y[i]) / static_cast<double>(y.size());
  }
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (std::log(x[i]) - mx) * (std::log(y[i]) - my);
    sxx += (std::log(x[i]) - mx) * (std::log(x[i]) - mx);
  }
  LR_CHECK(sxx > 0, InvalidArgument, "loglog_slope: all x are equal");
  return sxy / sxx;
}

}  // namespace lowrank::repro_kernels
