#include "lowrank/kernel_methods/kde.h"

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/methods.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "kde";

void check_inputs(const at::Tensor& data, const at::Tensor& queries, double bandwidth) {
  LR_CHECK(std::isfinite(bandwidth) && bandwidth > 0, InvalidArgument, "kde: bandwidth h must be > 0, got ",
           bandwidth);
  LR_CHECK(data.dim() == 2 && queries.dim() == 2 && data.size(1) == queries.size(1), InvalidArgument,
           "kde: data [n, d] and queries [m, d] must share d, got ", data.sizes(), " and ", queries.sizes());
  LR_CHECK(data.size(0) >= 1, InvalidArgument, "kde: no data points");
}

// The log-weights −‖x − y_i‖²/(2h²) for a block of queries, [rows, n]. Queries go in blocks so
// that a block's matrix stays near 16M entries whatever n is.
template <typename Visit>
void for_each_block(const at::Tensor& data, const at::Tensor& queries, double h, Visit visit) {
  const int64_t n = data.size(0), m = queries.size(0);
  const int64_t block = std::max<int64_t>(1, (int64_t{1} << 24) / n);
  for (int64_t start = 0; start < m; start += block) {
    const int64_t end = std::min(m, start + block);
    const at::Tensor logits = -squared_distances(queries.slice(0, start, end), data) / (2 * h * h);
    visit(start, end, logits);
  }
}

class Kde final : public Estimator {
 public:
  Kde(const Json& options, uint64_t seed) : Estimator(options, seed) {
    bandwidth_ = json_get_or<double>(options, "bandwidth", 1.0, kName);
    LR_CHECK(std::isfinite(bandwidth_) && bandwidth_ > 0, InvalidArgument, kName,
             ": option \"bandwidth\" must be > 0, got ", bandwidth_);
  }
  std::string_view method() const override { return kName; }

 protected:
  void fit_impl(const Dataset& data) override {
    data_ = data.x;
    report_ = {{"bandwidth", bandwidth_}, {"points", data_.size(0)}};
  }
  at::Tensor predict_impl(const at::Tensor& x) const override {
    return kde_log_density(data_, x, bandwidth_);
  }
  std::vector<NamedTensor> state() const override { return {{"data", data_}}; }
  void restore(const SafetensorsFile& file) override {
    data_ = expect_state(file, "data");
    LR_CHECK(data_.dim() == 2 && data_.size(1) == input_dim(), Corruption, file.path().string(),
             ": data has shape ", data_.sizes(), ", expected [n, ", input_dim(), "]");
  }

 private:
  double bandwidth_;
  at::Tensor data_;
};

}  // namespace

at::Tensor kde_log_density(const at::Tensor& data, const at::Tensor& queries, double bandwidth) {
  check_inputs(data, queries, bandwidth);
  const double n = static_cast<double>(data.size(0)), d = static_cast<double>(data.size(1));
  at::Tensor out = at::empty({queries.size(0)}, queries.options());
  for_each_block(data, queries, bandwidth, [&](int64_t start, int64_t end, const at::Tensor& logits) {
    out.slice(0, start, end).copy_(at::logsumexp(logits, 1));
  });
  return out - std::log(n) - d * std::log(bandwidth) - 0.5 * d * std::log(2 * std::numbers::pi);
}

KdeDiagnostics kde_diagnostics(const at::Tensor& data, const at::Tensor& queries, double bandwidth) {
  check_inputs(data, queries, bandwidth);
  KdeDiagnostics out{at::empty({queries.size(0)}, queries.options()),
                     at::empty({queries.size(0)}, queries.options())};
  for_each_block(data, queries, bandwidth, [&](int64_t start, int64_t end, const at::Tensor& logits) {
    const at::Tensor w = at::softmax(logits, 1);
    out.ipr.slice(0, start, end).copy_((w * w).sum(1));
    out.max_weight.slice(0, start, end).copy_(std::get<0>(w.max(1)));
  });
  return out;
}

double log_ratio_spread(const at::Tensor& log_estimate, const at::Tensor& log_true) {
  LR_CHECK(log_estimate.sizes() == log_true.sizes() && log_estimate.numel() >= 2, InvalidArgument,
           "kde: the spread needs two equal-length vectors of at least 2 values, got ", log_estimate.sizes(),
           " and ", log_true.sizes());
  return (log_estimate - log_true).std(/*unbiased=*/false).item<double>();
}

at::Tensor standard_normal_log_density(const at::Tensor& x) {
  const double d = static_cast<double>(x.size(1));
  return -0.5 * (x * x).sum(1) - 0.5 * d * std::log(2 * std::numbers::pi);
}

BandwidthSelection select_bandwidth(const at::Tensor& data, const at::Tensor& heldout,
                                    const std::vector<double>& grid) {
  LR_CHECK(!grid.empty(), InvalidArgument, "kde: the bandwidth grid is empty");
  BandwidthSelection out;
  double best = -std::numeric_limits<double>::infinity();
  for (double h : grid) {
    const double ll = kde_log_density(data, heldout, h).mean().item<double>();
    out.grid.push_back(h);
    out.mean_log_likelihood.push_back(ll);
    if (ll > best) {
      best = ll;
      out.best = h;
    }
  }
  return out;
}

GaussianThresholds gaussian_thresholds(double alpha) {
  LR_CHECK(std::isfinite(alpha) && alpha > 0, InvalidArgument, "kde: alpha = log n / d must be > 0, got ",
           alpha);
  // The right side falls monotonically from +∞ (h → 0) to 0 (h → ∞): bisection in log h.
  auto entropy = [](double h) {
    const double h2 = h * h;
    return 0.5 * std::log1p(1 / h2) - h2 / (2 * (1 + h2) * (1 + h2));
  };
  double lo = 1e-8, hi = 1e8;
  for (int i = 0; i < 200; ++i) {
    const double mid = std::sqrt(lo * hi);
    (entropy(mid) > alpha ? lo : hi) = mid;
  }
  GaussianThresholds out;
  out.alpha = alpha;
  out.h_g = std::sqrt(lo * hi);
  out.h_clt = std::sqrt(2.0) * out.h_g;
  return out;
}

void register_kde(Registry<EstimatorMethod>& registry) {
  registry.add({kName,
                "Gaussian kernel density estimate (log-sum-exp); predict gives log ρ̂",
                "Biroli & Mézard, 2024, arXiv:2408.05807",
                {{"bandwidth", "bandwidth h > 0 (default 1)"}}},
               {[](const Json& options, uint64_t seed) { return std::make_unique<Kde>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
