#include "lowrank/kernel_methods/loki.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/methods.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "loki";

void check_metric(const at::Tensor& distances) {
  LR_CHECK(distances.dim() == 2 && distances.size(0) == distances.size(1) && distances.size(0) >= 1,
           InvalidArgument, "loki: the label distances must be a square [K, K] matrix, got ",
           distances.sizes());
  LR_CHECK(at::isfinite(distances).all().item<bool>() && distances.ge(0).all().item<bool>(), InvalidArgument,
           "loki: the label distances must be finite and >= 0");
}

// Labels stored as float64 in a Dataset, checked to be integers in [0, K).
at::Tensor integer_labels(const at::Tensor& y, int64_t num_labels) {
  LR_CHECK(y.defined() && y.dim() == 1, InvalidArgument, kName, ": fit needs integer labels y [n]");
  const at::Tensor rounded = at::round(y);
  LR_CHECK(rounded.eq(y).all().item<bool>(), InvalidArgument, kName, ": the labels y must be integers");
  LR_CHECK(y.ge(0).all().item<bool>() && y.lt(num_labels).all().item<bool>(), InvalidArgument, kName,
           ": the labels must lie in [0, ", num_labels, "), got values from ", y.min().item<double>(), " to ",
           y.max().item<double>());
  return rounded.to(at::kLong);
}

class Loki final : public Estimator {
 public:
  Loki(const Json& options, uint64_t seed) : Estimator(options, seed) {
    bandwidth_ = json_get_or<double>(options, "bandwidth", 1.0, kName);
    LR_CHECK(std::isfinite(bandwidth_) && bandwidth_ > 0, InvalidArgument, kName,
             ": option \"bandwidth\" must be > 0, got ", bandwidth_);
    distances_ = metric_from_options(options);
  }
  std::string_view method() const override { return kName; }

 protected:
  void fit_impl(const Dataset& data) override {
    labels_ = integer_labels(data.y, distances_.size(0));
    x_ = data.x;
    observed_ = std::get<0>(at::_unique(labels_, /*sorted=*/true));
    report_ = {{"labels", distances_.size(0)}, {"observed_labels", observed_.size(0)}};
  }
  at::Tensor predict_impl(const at::Tensor& x) const override {
    const at::Tensor probs = parzen_probabilities(x_, labels_, observed_, x, bandwidth_);
    return loki_predict(probs, observed_, distances_).to(at::kDouble);
  }
  std::vector<NamedTensor> state() const override {
    return {{"x", x_}, {"labels", labels_}, {"observed", observed_}, {"distances", distances_}};
  }
  void restore(const SafetensorsFile& file) override {
    x_ = expect_state(file, "x");
    labels_ = expect_state(file, "labels");
    observed_ = expect_state(file, "observed");
    distances_ = expect_state(file, "distances");
    LR_CHECK(
        x_.dim() == 2 && x_.size(1) == input_dim() && labels_.dim() == 1 && labels_.size(0) == x_.size(0),
        Corruption, file.path().string(), ": x ", x_.sizes(), " and labels ", labels_.sizes(),
        " do not fit together");
    check_metric(distances_);
  }

 private:
  static at::Tensor metric_from_options(const Json& options) {
    if (options.contains("distances")) {
      const auto rows = json_get<std::vector<std::vector<double>>>(options, "distances", kName);
      const int64_t k = static_cast<int64_t>(rows.size());
      LR_CHECK(k >= 1, InvalidArgument, kName, ": option \"distances\" is empty");
      at::Tensor d = at::empty({k, k}, at::kDouble);
      for (int64_t i = 0; i < k; ++i) {
        LR_CHECK(static_cast<int64_t>(rows[i].size()) == k, InvalidArgument, kName,
                 ": option \"distances\" row ", i, " has ", rows[i].size(), " entries, expected ", k);
        for (int64_t j = 0; j < k; ++j) d[i][j] = rows[i][j];
      }
      check_metric(d);
      return d;
    }
    const auto num_labels = json_get_or<int64_t>(options, "labels", 0, kName);
    LR_CHECK(num_labels >= 1, InvalidArgument, kName,
             ": option \"labels\" (the number of labels K) must be >= 1 unless \"distances\" is given, got ",
             num_labels);
    if (options.contains("edges")) {
      std::vector<LabelEdge> edges;
      for (const auto& e : json_get<std::vector<std::vector<double>>>(options, "edges", kName)) {
        LR_CHECK(e.size() == 2 || e.size() == 3, InvalidArgument, kName,
                 ": each entry of option \"edges\" must be [from, to] or [from, to, length]");
        edges.push_back({static_cast<int64_t>(e[0]), static_cast<int64_t>(e[1]), e.size() == 3 ? e[2] : 1.0});
      }
      return shortest_path_metric(num_labels, edges);
    }
    const auto metric = json_get_or<std::string>(options, "metric", "line", kName);
    if (metric == "line") return line_metric(num_labels);
    if (metric == "zero_one") return zero_one_metric(num_labels);
    throw InvalidArgument(
        str(kName, ": option \"metric\" must be \"line\" or \"zero_one\", got \"", metric, "\""));
  }

  double bandwidth_ = 1;
  at::Tensor distances_, x_, labels_, observed_;
};

}  // namespace

at::Tensor loki_scores(const at::Tensor& probs, const at::Tensor& observed, const at::Tensor& distances) {
  check_metric(distances);
  LR_CHECK(observed.dim() == 1 && observed.size(0) >= 1, InvalidArgument,
           "loki: the observed labels must be a non-empty [k] vector, got ", observed.sizes());
  LR_CHECK(probs.dim() == 2 && probs.size(1) == observed.size(0), InvalidArgument,
           "loki: the probabilities must be [m, k] with k = ", observed.size(0), " observed labels, got ",
           probs.sizes());
  const at::Tensor index = observed.to(at::kLong);
  LR_CHECK(index.ge(0).all().item<bool>() && index.lt(distances.size(0)).all().item<bool>(), InvalidArgument,
           "loki: an observed label lies outside [0, ", distances.size(0), ")");
  const at::Tensor squared = distances.index_select(0, index).to(at::kDouble).square();  // D²_Λ [k, K]
  return -at::matmul(probs.to(at::kDouble), squared);
}

at::Tensor loki_predict(const at::Tensor& probs, const at::Tensor& observed, const at::Tensor& distances) {
  return loki_scores(probs, observed, distances).argmax(1);
}

at::Tensor line_metric(int64_t num_labels) {
  LR_CHECK(num_labels >= 1, InvalidArgument, "loki: the number of labels must be >= 1, got ", num_labels);
  const at::Tensor i = at::arange(num_labels, at::kDouble);
  return (i.unsqueeze(1) - i.unsqueeze(0)).abs();
}

at::Tensor zero_one_metric(int64_t num_labels) {
  LR_CHECK(num_labels >= 1, InvalidArgument, "loki: the number of labels must be >= 1, got ", num_labels);
  return 1 - at::eye(num_labels, at::kDouble);
}

at::Tensor shortest_path_metric(int64_t num_labels, const std::vector<LabelEdge>& edges) {
  LR_CHECK(num_labels >= 1, InvalidArgument, "loki: the number of labels must be >= 1, got ", num_labels);
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> d(num_labels * num_labels, inf);
  for (int64_t i = 0; i < num_labels; ++i) d[i * num_labels + i] = 0;
  for (const LabelEdge& e : edges) {
    LR_CHECK(e.from >= 0 && e.from < num_labels && e.to >= 0 && e.to < num_labels, InvalidArgument,
             "loki: edge (", e.from, ", ", e.to, ") names a label outside [0, ", num_labels, ")");
    LR_CHECK(std::isfinite(e.length) && e.length > 0, InvalidArgument, "loki: edge (", e.from, ", ", e.to,
             ") has length ", e.length, ", expected > 0");
    double& forward = d[e.from * num_labels + e.to];
    forward = std::min(forward, e.length);
    d[e.to * num_labels + e.from] = forward;
  }
  for (int64_t via = 0; via < num_labels; ++via)
    for (int64_t i = 0; i < num_labels; ++i)
      for (int64_t j = 0; j < num_labels; ++j)
        d[i * num_labels + j] =
            std::min(d[i * num_labels + j], d[i * num_labels + via] + d[via * num_labels + j]);
  for (int64_t i = 0; i < num_labels; ++i)
    for (int64_t j = 0; j < num_labels; ++j)
      LR_CHECK(std::isfinite(d[i * num_labels + j]), InvalidArgument,
               "loki: the label graph is disconnected (no path from ", i, " to ", j, ")");
  return at::tensor(d, at::kDouble).reshape({num_labels, num_labels});
}

at::Tensor parzen_probabilities(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& classes,
                                const at::Tensor& queries, double bandwidth) {
  LR_CHECK(std::isfinite(bandwidth) && bandwidth > 0, InvalidArgument, "loki: bandwidth must be > 0, got ",
           bandwidth);
  LR_CHECK(x.dim() == 2 && queries.dim() == 2 && x.size(1) == queries.size(1), InvalidArgument,
           "loki: train x [n, d] and queries [m, d] must share d, got ", x.sizes(), " and ", queries.sizes());
  const at::Tensor logits = -squared_distances(queries, x) / (2 * bandwidth * bandwidth);  // [m, n]
  // One-hot [n, k] of each training label among the classes; the class log-mass is an LSE over
  // its members, normalised by the LSE over all points.
  const at::Tensor member = labels.unsqueeze(1).eq(classes.unsqueeze(0));
  const at::Tensor masked = logits.unsqueeze(2)
                                .expand({logits.size(0), logits.size(1), classes.size(0)})
                                .masked_fill(~member.unsqueeze(0), -std::numeric_limits<double>::infinity());
  const at::Tensor class_log_mass = at::logsumexp(masked, 1);  // [m, k]
  return at::exp(class_log_mass - at::logsumexp(logits, 1, /*keepdim=*/true));
}

void register_loki(Registry<EstimatorMethod>& registry) {
  registry.add(
      {kName,
       "Loki: Fréchet-mean prediction over a label metric from Parzen class probabilities; can predict "
       "labels never seen in training",
       "Roberts et al., 2023, NeurIPS, arXiv:2307.12226",
       {{"labels", "number of labels K of the metric space (labels 0..K-1; needed unless \"distances\")"},
        {"metric", "\"line\" (d = |i − j|, default) or \"zero_one\" (Loki = argmax)"},
        {"edges", "graph [[from, to, length], ...] on the K labels; d = shortest-path length"},
        {"distances", "explicit K×K label distance matrix (overrides the others)"},
        {"bandwidth", "RBF bandwidth h > 0 of the Parzen class probabilities (default 1)"}}},
      {[](const Json& options, uint64_t seed) { return std::make_unique<Loki>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
