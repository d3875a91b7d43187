#include "lowrank/kernel_methods/dp_similarity.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/methods.h"
#include "lowrank/linalg/random_features.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "dp_similarity";
constexpr double kInf = std::numeric_limits<double>::infinity();

// b·(E₁ − E₂) with E ~ Exp(1) is Laplace(0, b).
at::Tensor laplace(at::IntArrayRef shape, double scale, at::Generator& generator) {
  at::Tensor a = at::empty(shape, at::kDouble).exponential_(1, generator);
  at::Tensor b = at::empty(shape, at::kDouble).exponential_(1, generator);
  return (a - b) * scale;
}

double standard_normal_cdf(double t) {
  return 0.5 * std::erfc(-t / std::sqrt(2.0));
}

// The data-independent random maps of a structure, drawn before any noise.
struct Maps {
  at::Tensor projections, frequencies, phases;
};

int64_t tree_nodes(int64_t levels) {
  return (int64_t{2} << levels) - 1;
}

// The tree coordinates' clip range of the l2 structure: [−s, s].
double projection_half_range(const DpOptions& o, int64_t dim) {
  return o.projection_radius > 0 ? o.projection_radius : 1.5 * o.radius * std::sqrt(static_cast<double>(dim));
}

Maps draw_maps(int64_t dim, const DpOptions& o, at::Generator& generator) {
  Maps maps;
  if (o.metric == "l2") {
    maps.projections = at::empty({o.projections, dim}, at::kDouble).normal_(0, 1, generator);
  } else if (o.metric == "gaussian") {
    int64_t width = dim;
    if (o.projections < dim) {
      maps.projections = at::empty({o.projections, dim}, at::kDouble)
                             .normal_(0, 1 / std::sqrt(static_cast<double>(o.projections)), generator);
      width = o.projections;
    }
    maps.frequencies = at::empty({o.features, width}, at::kDouble).normal_(0, 1 / o.bandwidth, generator);
    maps.phases = at::empty({o.features}, at::kDouble).uniform_(0, 2 * M_PI, generator);
  }
  return maps;
}

at::Tensor box_centre(const DpOptions& o, int64_t dim) {
  return at::full({dim}, o.lower + o.radius / 2, at::kDouble);
}

at::Tensor gaussian_features(const DpStructure& s, const at::Tensor& x) {
  const at::Tensor reduced = s.projections.defined() ? at::linear(x, s.projections) : x;
  return linalg::fourier_features(reduced, s.frequencies, s.phases);
}

DpStructure build_with(const at::Tensor& x, const DpOptions& o, const Maps& maps, at::Generator& noise) {
  LR_CHECK(x.dim() == 2, InvalidArgument, kName, ": the data must be [n, d], got ", x.sizes());
  const at::Tensor xd = x.to(at::kDouble);
  DpStructure s;
  s.metric = o.metric;
  s.projections = maps.projections;
  if (o.metric == "l1") {
    const auto [count_scale, sum_scale] = laplace_scales(o, xd.size(1), o.radius);
    s.trees = dyadic_build(xd, o.levels, o.lower, o.radius, count_scale, sum_scale, noise);
  } else if (o.metric == "l2") {
    s.centre = box_centre(o, xd.size(1));
    const double half = projection_half_range(o, xd.size(1));
    const auto [count_scale, sum_scale] = laplace_scales(o, o.projections, 2 * half);
    s.trees = dyadic_build(at::linear(xd - s.centre, s.projections), o.levels, -half, 2 * half, count_scale,
                           sum_scale, noise);
  } else {
    s.frequencies = maps.frequencies;
    s.phases = maps.phases;
    const double eps1 = o.count_fraction * o.epsilon, eps2 = (1 - o.count_fraction) * o.epsilon;
    s.feature_sum = gaussian_features(s, xd).sum(0);
    s.count = static_cast<double>(xd.size(0));
    if (std::isfinite(o.epsilon)) {
      const double sigma = gaussian_mechanism_sigma(std::sqrt(2.0), eps2, o.delta);
      s.feature_sum = s.feature_sum + at::empty({o.features}, at::kDouble).normal_(0, sigma, noise);
      s.count += laplace({1}, 1 / eps1, noise).item<double>();
    }
  }
  return s;
}

// Integer class labels ≥ 0 of a Dataset's y [n].
at::Tensor class_labels(const at::Tensor& y) {
  LR_CHECK(y.defined() && y.dim() == 1, InvalidArgument, kName, ": fit needs class labels y [n]");
  LR_CHECK(at::round(y).eq(y).all().item<bool>() && y.ge(0).all().item<bool>(), InvalidArgument, kName,
           ": the class labels must be integers >= 0");
  return y.to(at::kLong);
}

class DpSimilarity final : public Estimator {
 public:
  DpSimilarity(const Json& options, uint64_t seed) : Estimator(options, seed) {
    // Refused first: no other option can make a structure that keeps its rows acceptable.
    LR_CHECK(!options.contains("keep_data") || options["keep_data"] == false, InvalidArgument, kName,
             ": option \"keep_data\" is refused: a DP structure keeps only noisy aggregates, never the raw "
             "data");
    dp_options_ = dp_options_from_json(options);
    classes_option_ = json_get_or<int64_t>(options, "classes", 0, kName);
    LR_CHECK(classes_option_ >= 0, InvalidArgument, kName, ": option \"classes\" must be >= 1, got ",
             classes_option_);
  }
  std::string_view method() const override { return kName; }

  // [m, C] mean distances (l1, l2) or kernel means (gaussian).
  at::Tensor scores(const at::Tensor& x) const {
    std::vector<at::Tensor> columns;
    for (const DpStructure& s : structures_)
      columns.push_back(dp_similarity_sums(s, x) / std::max(1.0, dp_count(s)));
    return at::stack(columns, 1);
  }
  const at::Tensor& classes() const { return classes_; }

 protected:
  bool records_data_hash() const override { return false; }
  void fit_impl(const Dataset& data) override {
    const at::Tensor labels = class_labels(data.y);
    const int64_t count = classes_option_ > 0 ? classes_option_ : labels.max().item<int64_t>() + 1;
    LR_CHECK(labels.lt(count).all().item<bool>(), InvalidArgument, kName,
             ": a label is >= option \"classes\" (", count, ")");
    at::Generator generator = at::detail::createCPUGenerator(seed());
    const Maps maps = draw_maps(data.x.size(1), dp_options_, generator);
    structures_.clear();
    std::vector<double> noisy_counts;
    for (int64_t c = 0; c < count; ++c) {
      // Classes are disjoint: each structure spends the full ε (parallel composition).
      structures_.push_back(build_with(data.x.index_select(0, labels.eq(c).nonzero().squeeze(1)), dp_options_,
                                       maps, generator));
      noisy_counts.push_back(dp_count(structures_.back()));
    }
    classes_ = at::arange(count, at::kDouble);
    report_ = {{"metric", dp_options_.metric}, {"classes", count}, {"noisy_counts", noisy_counts}};
  }
  at::Tensor predict_impl(const at::Tensor& x) const override {
    const at::Tensor s = scores(x);
    return classes_.index_select(0, dp_options_.metric == "gaussian" ? s.argmax(1) : s.argmin(1));
  }
  std::vector<NamedTensor> state() const override {
    std::vector<NamedTensor> out = {{"classes", classes_}};
    auto stacked = [&](auto member) {
      std::vector<at::Tensor> parts;
      for (const DpStructure& s : structures_) parts.push_back(member(s));
      return at::stack(parts).contiguous();
    };
    if (dp_options_.metric == "gaussian") {
      out.push_back({"feature_sums", stacked([](const DpStructure& s) { return s.feature_sum; })});
      out.push_back({"class_counts",
                     stacked([](const DpStructure& s) { return at::scalar_tensor(s.count, at::kDouble); })});
      out.push_back({"frequencies", structures_.front().frequencies});
      out.push_back({"phases", structures_.front().phases});
    } else {
      out.push_back({"counts", stacked([](const DpStructure& s) { return s.trees.counts; })});
      out.push_back({"sums", stacked([](const DpStructure& s) { return s.trees.sums; })});
    }
    if (structures_.front().projections.defined())
      out.push_back({"projections", structures_.front().projections});
    return out;
  }
  void restore(const SafetensorsFile& file) override {
    classes_ = expect_state(file, "classes");
    const int64_t count = classes_.size(0);
    LR_CHECK(classes_.dim() == 1 && count >= 1, Corruption, file.path().string(), ": no classes");
    Maps maps;
    if (file.contains("projections")) maps.projections = expect_state(file, "projections");
    structures_.assign(count, DpStructure{});
    const int64_t dim = input_dim();
    for (int64_t c = 0; c < count; ++c) {
      DpStructure& s = structures_[c];
      s.metric = dp_options_.metric;
      s.projections = maps.projections;
      if (dp_options_.metric == "gaussian") {
        s.frequencies = expect_state(file, "frequencies");
        s.phases = expect_state(file, "phases");
        s.feature_sum = expect_state(file, "feature_sums")[c];
        s.count = expect_state(file, "class_counts")[c].item<double>();
        continue;
      }
      const bool l2 = dp_options_.metric == "l2";
      const int64_t tree_dims = l2 ? dp_options_.projections : dim;
      const at::Tensor counts = expect_state(file, "counts"), sums = expect_state(file, "sums");
      LR_CHECK(counts.dim() == 3 && counts.size(0) == count && counts.size(1) == tree_dims &&
                   counts.size(2) == tree_nodes(dp_options_.levels) && sums.sizes() == counts.sizes(),
               Corruption, file.path().string(), ": counts ", counts.sizes(), " and sums ", sums.sizes(),
               " do not fit ", count, " classes, ", tree_dims, " coordinates, ", dp_options_.levels,
               " levels");
      const double half = projection_half_range(dp_options_, dim);
      s.trees = {counts[c], sums[c], dp_options_.levels, l2 ? -half : dp_options_.lower,
                 l2 ? 2 * half : dp_options_.radius};
      if (l2) s.centre = box_centre(dp_options_, dim);
    }
  }

 private:
  DpOptions dp_options_;
  int64_t classes_option_ = 0;
  std::vector<DpStructure> structures_;
  at::Tensor classes_;
};

}  // namespace

DpOptions dp_options_from_json(const Json& options) {
  DpOptions o;
  if (options.contains("epsilon")) {
    const Json& e = options["epsilon"];
    if (e.is_string()) {
      LR_CHECK(e.get<std::string>() == "inf", InvalidArgument, kName,
               ": option \"epsilon\" must be a number > 0 or \"inf\", got ", e.dump());
      o.epsilon = kInf;
    } else {
      LR_CHECK(e.is_number(), InvalidArgument, kName,
               ": option \"epsilon\" must be a number > 0 or \"inf\", got ", e.dump());
      o.epsilon = e.get<double>();
    }
  }
  o.metric = json_get_or<std::string>(options, "metric", o.metric, kName);
  o.levels = json_get_or<int64_t>(options, "levels", o.levels, kName);
  o.lower = json_get_or<double>(options, "lower", o.lower, kName);
  o.radius = json_get_or<double>(options, "radius", o.radius, kName);
  o.count_fraction = json_get_or<double>(options, "count_fraction", o.count_fraction, kName);
  o.projections = json_get_or<int64_t>(options, "projections", o.projections, kName);
  o.projection_radius = json_get_or<double>(options, "projection_radius", o.projection_radius, kName);
  o.bandwidth = json_get_or<double>(options, "bandwidth", o.bandwidth, kName);
  o.features = json_get_or<int64_t>(options, "features", o.features, kName);
  o.delta = json_get_or<double>(options, "delta", o.delta, kName);
  validate(o);
  return o;
}

void validate(const DpOptions& o) {
  LR_CHECK(!std::isnan(o.epsilon) && o.epsilon > 0, InvalidArgument, kName,
           ": option \"epsilon\" must be > 0 (or \"inf\"), got ", o.epsilon);
  LR_CHECK(o.metric == "l1" || o.metric == "l2" || o.metric == "gaussian", InvalidArgument, kName,
           ": option \"metric\" must be l1, l2 or gaussian, got \"", o.metric, "\"");
  LR_CHECK(o.levels >= 1 && o.levels <= 24, InvalidArgument, kName,
           ": option \"levels\" must be in [1, 24], got ", o.levels);
  LR_CHECK(std::isfinite(o.lower), InvalidArgument, kName, ": option \"lower\" must be finite, got ",
           o.lower);
  LR_CHECK(std::isfinite(o.radius) && o.radius > 0, InvalidArgument, kName,
           ": option \"radius\" must be > 0, got ", o.radius);
  LR_CHECK(o.count_fraction > 0 && o.count_fraction < 1, InvalidArgument, kName,
           ": option \"count_fraction\" must be in (0, 1), got ", o.count_fraction);
  LR_CHECK(o.projections >= 1, InvalidArgument, kName, ": option \"projections\" must be >= 1, got ",
           o.projections);
  LR_CHECK(std::isfinite(o.projection_radius) && o.projection_radius >= 0, InvalidArgument, kName,
           ": option \"projection_radius\" must be >= 0 (0: 1.5 R √d), got ", o.projection_radius);
  LR_CHECK(std::isfinite(o.bandwidth) && o.bandwidth > 0, InvalidArgument, kName,
           ": option \"bandwidth\" must be > 0, got ", o.bandwidth);
  LR_CHECK(o.features >= 1, InvalidArgument, kName, ": option \"features\" must be >= 1, got ", o.features);
  LR_CHECK(o.delta > 0 && o.delta < 1, InvalidArgument, kName, ": option \"delta\" must be in (0, 1), got ",
           o.delta);
}

DyadicSums dyadic_build(const at::Tensor& x, int64_t levels, double lower, double radius, double count_scale,
                        double sum_scale, at::Generator& generator) {
  LR_CHECK(x.dim() == 2, InvalidArgument, kName, ": the tree data must be [n, d], got ", x.sizes());
  LR_CHECK(levels >= 1 && levels <= 24 && radius > 0, InvalidArgument, kName, ": bad tree shape (levels ",
           levels, ", radius ", radius, ")");
  const int64_t d = x.size(1), bins = int64_t{1} << levels, nodes = tree_nodes(levels);
  const at::Tensor shifted = (x.to(at::kDouble) - lower).clamp(0, radius);
  // x' = R falls into the last bin.
  const at::Tensor bin =
      (shifted * (static_cast<double>(bins) / radius)).floor().clamp(0, bins - 1).to(at::kLong);
  const at::Tensor coordinate = at::arange(d, at::kLong).mul(nodes).unsqueeze(0);
  at::Tensor counts = at::zeros({d * nodes}, at::kDouble), sums = at::zeros({d * nodes}, at::kDouble);
  const at::Tensor ones = at::ones({x.size(0) * d}, at::kDouble), values = shifted.reshape({-1});
  for (int64_t level = 0; level <= levels; ++level) {
    // One node per level and coordinate: the d(L+1) nodes a point touches.
    const at::Tensor index =
        (coordinate + ((int64_t{1} << level) - 1) + bin.div(int64_t{1} << (levels - level), "floor"))
            .reshape({-1});
    counts.index_add_(0, index, ones);
    sums.index_add_(0, index, values);
  }
  if (count_scale > 0) counts += laplace({d * nodes}, count_scale, generator);
  if (sum_scale > 0) sums += laplace({d * nodes}, sum_scale, generator);
  return {counts.reshape({d, nodes}), sums.reshape({d, nodes}), levels, lower, radius};
}

at::Tensor dyadic_distance_sums(const DyadicSums& trees, const at::Tensor& y) {
  const int64_t d = trees.counts.size(0), levels = trees.levels, bins = int64_t{1} << levels,
                nodes = trees.counts.size(1);
  LR_CHECK(y.dim() == 2 && y.size(1) == d, InvalidArgument, kName, ": queries must be [m, ", d, "], got ",
           y.sizes());
  const at::Tensor shifted = y.to(at::kDouble) - trees.lower;  // y', not clipped: exact outside the box too
  const at::Tensor bin =
      (shifted * (static_cast<double>(bins) / trees.radius)).floor().clamp(0, bins).to(at::kLong);  // [m, d]
  const at::Tensor coordinate = at::arange(d, at::kLong).mul(nodes).unsqueeze(0);
  const at::Tensor counts = trees.counts.reshape({-1}), sums = trees.sums.reshape({-1});
  // The prefix [0, b): the whole root when b = 2^L, else node idx − 1 of each level whose idx = b >> (L − ℓ)
  // is odd (one node per set bit of b).
  const at::Tensor full = bin.eq(bins);
  at::Tensor count_below = at::where(full, at::take(counts, coordinate.expand_as(bin)), 0.0);
  at::Tensor sum_below = at::where(full, at::take(sums, coordinate.expand_as(bin)), 0.0);
  for (int64_t level = 1; level <= levels; ++level) {
    const at::Tensor index = bin.div(int64_t{1} << (levels - level), "floor");
    const at::Tensor used = index.bitwise_and(1).eq(1).logical_and(full.logical_not());
    const at::Tensor node = coordinate + ((int64_t{1} << level) - 1) + (index - 1).clamp_min(0);
    count_below = count_below + at::where(used, at::take(counts, node), 0.0);
    sum_below = sum_below + at::where(used, at::take(sums, node), 0.0);
  }
  const at::Tensor total_count = trees.counts.select(1, 0).unsqueeze(0),
                   total_sum = trees.sums.select(1, 0).unsqueeze(0);
  return (shifted * (2 * count_below - total_count) - 2 * sum_below + total_sum).sum(1);
}

double dyadic_count(const DyadicSums& trees) {
  return trees.counts.select(1, 0).mean().item<double>();
}

std::pair<double, double> laplace_scales(const DpOptions& options, int64_t dims, double radius) {
  if (!std::isfinite(options.epsilon)) return {0.0, 0.0};
  const double touched = static_cast<double>(dims * (options.levels + 1));
  return {touched / (options.count_fraction * options.epsilon),
          radius * touched / ((1 - options.count_fraction) * options.epsilon)};
}

double gaussian_mechanism_sigma(double sensitivity, double epsilon, double delta) {
  LR_CHECK(sensitivity > 0 && epsilon > 0 && delta > 0 && delta < 1, InvalidArgument, kName,
           ": the Gaussian mechanism needs Δ > 0, ε > 0 and δ in (0, 1), got ", sensitivity, ", ", epsilon,
           ", ", delta);
  if (!std::isfinite(epsilon)) return 0;
  auto achieved = [&](double sigma) {
    const double a = sensitivity / (2 * sigma), b = epsilon * sigma / sensitivity;
    return standard_normal_cdf(a - b) - std::exp(epsilon) * standard_normal_cdf(-a - b);
  };
  double lo = 0, hi = sensitivity;
  while (achieved(hi) > delta) lo = hi, hi *= 2;
  while (hi - lo > 1e-12 * hi) {
    const double mid = (lo + hi) / 2;
    (achieved(mid) > delta ? lo : hi) = mid;
  }
  return hi;
}

DpStructure dp_build(const at::Tensor& x, const DpOptions& options, at::Generator& generator) {
  validate(options);
  LR_CHECK(x.dim() == 2, InvalidArgument, kName, ": the data must be [n, d], got ", x.sizes());
  return build_with(x, options, draw_maps(x.size(1), options, generator), generator);
}

at::Tensor dp_similarity_sums(const DpStructure& s, const at::Tensor& y) {
  const at::Tensor yd = y.to(at::kDouble);
  if (s.metric == "l1") return dyadic_distance_sums(s.trees, yd);
  if (s.metric == "l2") {
    LR_CHECK(yd.dim() == 2 && yd.size(1) == s.centre.size(0), InvalidArgument, kName,
             ": queries must be [m, ", s.centre.size(0), "], got ", yd.sizes());
    // ‖z‖₂ = √(π/2) E|gᵀz|, averaged over the k projections.
    return dyadic_distance_sums(s.trees, at::linear(yd - s.centre, s.projections)) *
           (std::sqrt(M_PI / 2) / static_cast<double>(s.projections.size(0)));
  }
  return at::mv(gaussian_features(s, yd), s.feature_sum);
}

double dp_count(const DpStructure& s) {
  return s.metric == "gaussian" ? s.count : dyadic_count(s.trees);
}

std::unique_ptr<Estimator> dp_fit(const Dataset& data, const Json& options, uint64_t seed) {
  auto model = create_estimator(kName, options, seed);
  model->fit(data);  // records no data hash (DpSimilarity::records_data_hash)
  return model;
}

at::Tensor dp_class_scores(const Estimator& model, const at::Tensor& x, at::Tensor* classes) {
  const auto* dp = dynamic_cast<const DpSimilarity*>(&model);
  LR_CHECK(dp != nullptr, InvalidArgument, "the model is a \"", model.method(), "\" one, not a ", kName,
           " one");
  LR_CHECK(model.fitted(), InvalidArgument, kName, ": scores before fit");
  LR_CHECK(x.dim() == 2 && x.size(1) == model.input_dim(), InvalidArgument, kName, ": queries must be [m, ",
           model.input_dim(), "], got ", x.sizes());
  if (classes != nullptr) *classes = dp->classes();
  return dp->scores(x.to(at::kDouble));
}

void register_dp_similarity(Registry<EstimatorMethod>& registry) {
  registry.add(
      {kName,
       "ε-DP class-mean classifier from per-class structures of noisy aggregates: ℓ1 by dyadic trees of "
       "Laplace-noised counts/sums, ℓ2 by Gaussian projections, Gaussian kernel by JL + noisy RFF mean",
       "Backurs, Lin, Mahabadi, Silwal & Tarnawski, 2024, ICLR, arXiv:2403.08917",
       {{"epsilon", "privacy budget ε > 0 per class (parallel composition), or \"inf\" (exact; default 1)"},
        {"metric", "l1 (default), l2 or gaussian"},
        {"levels", "L: 2^L bins per coordinate (default 10)"},
        {"lower", "the data box's lower corner (default 0); values are clipped to [lower, lower + radius]"},
        {"radius", "R > 0: the data box's side (default 1)"},
        {"count_fraction", "share f of ε spent on counts, ε₁ = fε, ε₂ = (1 − f)ε (default 0.5)"},
        {"projections", "l2: Gaussian projections k; gaussian: JL dimension, used when < d (default 64)"},
        {"projection_radius", "l2: clip range [−s, s] of the projections (default 0: 1.5 R √d)"},
        {"bandwidth", "gaussian: σ of exp(−‖x − y‖²/2σ²) (default 1)"},
        {"features", "gaussian: random Fourier features m (default 512)"},
        {"delta", "gaussian: δ of the Gaussian mechanism (default 1e-5)"},
        {"classes", "number of classes C (labels 0..C−1; default: max label + 1)"},
        {"keep_data", "refused when true: a DP structure never keeps the raw data"}}},
      {[](const Json& options, uint64_t seed) { return std::make_unique<DpSimilarity>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
