#include "lowrank/kernel_methods/dpp_sampling.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "lowrank/core/error.h"
#include "lowrank/core/random.h"
#include "lowrank/kernel_methods/methods.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "dpp_sampling";

// Uniform [0, 1) doubles from the top 53 bits, so a seed gives the same draws on every platform
// (std::uniform_real_distribution is implementation-defined).
class Uniform {
 public:
  explicit Uniform(uint64_t seed) : engine_(seed) {}
  double operator()() { return unit_interval(engine_()); }
  int64_t below(int64_t n) { return std::min<int64_t>(n - 1, static_cast<int64_t>((*this)() * n)); }

 private:
  std::mt19937_64 engine_;
};

// φ_j(x) = √(2j+1) P_j(x), j = 0..m−1, by the three-term recurrence (j+1)P_{j+1} = (2j+1)xP_j − jP_{j−1}.
void legendre_features(int64_t m, double x, double* out) {
  double previous = 0, current = 1;
  for (int64_t j = 0; j < m; ++j) {
    out[j] = std::sqrt(2.0 * j + 1) * current;
    const double next = ((2.0 * j + 1) * x * current - j * previous) / (j + 1);
    previous = current;
    current = next;
  }
}

double squared_norm(const std::vector<double>& v) {
  double s = 0;
  for (double a : v) s += a * a;
  return s;
}

// One draw from ρ = (k_m/m) dμ by rejection from μ; fills phi with φ(x).
double draw_christoffel(const OrthonormalBasis& basis, Uniform& uniform, std::vector<double>& phi) {
  const double bound = christoffel_bound(basis);
  for (;;) {
    const double x = 2 * uniform() - 1;
    legendre_features(basis.size, x, phi.data());
    if (uniform() * bound < squared_norm(phi)) return x;
  }
}

void draw_projection_dpp(const OrthonormalBasis& basis, Uniform& uniform, std::vector<double>& out) {
  const int64_t m = basis.size;
  std::vector<std::vector<double>> orthonormal;  // e_1..e_{i−1}
  std::vector<double> phi(m), projection(m);
  for (int64_t i = 0; i < m; ++i) {
    for (;;) {
      const double x = draw_christoffel(basis, uniform, phi);
      const double k = squared_norm(phi);
      std::fill(projection.begin(), projection.end(), 0.0);
      double captured = 0;  // Σ_j (e_j·φ)²
      for (const auto& e : orthonormal) {
        double dot = 0;
        for (int64_t a = 0; a < m; ++a) dot += e[a] * phi[a];
        captured += dot * dot;
        for (int64_t a = 0; a < m; ++a) projection[a] += dot * e[a];
      }
      if (uniform() >= 1 - captured / k) continue;
      // Gram–Schmidt: the accepted φ(x) minus its projection, normalised. Accepted points have
      // a residual of positive length almost surely (the acceptance probability is its share).
      std::vector<double> residual(m);
      for (int64_t a = 0; a < m; ++a) residual[a] = phi[a] - projection[a];
      const double length = std::sqrt(squared_norm(residual));
      if (!(length > 0)) continue;
      for (double& a : residual) a /= length;
      orthonormal.push_back(std::move(residual));
      out.push_back(x);
      break;
    }
  }
}

at::Tensor to_tensor(const std::vector<double>& values) {
  return at::tensor(at::ArrayRef<double>(values), at::TensorOptions().dtype(at::kDouble));
}

at::Tensor as_points(const at::Tensor& x) {
  LR_CHECK(x.dim() == 1 || (x.dim() == 2 && x.size(1) == 1), InvalidArgument,
           "dpp_sampling: points must be [n] or [n, 1], got ", x.sizes());
  const at::Tensor flat = x.reshape({-1}).to(at::kDouble).contiguous();
  if (flat.numel() > 0) {
    const double lo = flat.min().item<double>(), hi = flat.max().item<double>();
    LR_CHECK(lo >= -1 && hi <= 1, InvalidArgument,
             "dpp_sampling: the Legendre basis lives on [-1, 1], got points in [", lo, ", ", hi, "]");
  }
  return flat;
}

void check_count(int64_t n, const char* what) {
  LR_CHECK(n >= 1, InvalidArgument, "dpp_sampling: ", what, " must be >= 1, got ", n);
}

class DppSampling final : public Estimator {
 public:
  DppSampling(const Json& options, uint64_t seed) : Estimator(options, seed) {
    basis_ = parse_basis(json_get_or<std::string>(options, "basis", "legendre:20", kName));
    weighting_ = json_get_or<std::string>(options, "weights", "christoffel", kName);
    LR_CHECK(weighting_ == "christoffel" || weighting_ == "uniform", InvalidArgument, kName,
             ": option \"weights\" must be \"christoffel\" or \"uniform\", got \"", weighting_, "\"");
  }
  std::string_view method() const override { return kName; }

 protected:
  void fit_impl(const Dataset& data) override {
    LR_CHECK(data.y.defined(), InvalidArgument, kName, ": ", data.source, " has no targets y");
    LR_CHECK(data.x.size(1) == 1, InvalidArgument, kName, ": the Legendre basis is one-dimensional, ",
             data.source, " has ", data.x.size(1), " input columns");
    const at::Tensor x = data.x.reshape({-1});
    const at::Tensor w = weighting_ == "christoffel" ? optimal_weights(basis_, x) : at::ones_like(x);
    const WeightedLeastSquares fit = weighted_least_squares(basis_, x, data.y, w);
    coefficients_ = fit.coefficients;
    report_ = {{"basis", to_string(basis_)},
               {"points", x.size(0)},
               {"gram_min_eigenvalue", fit.gram_min_eigenvalue},
               {"stable", fit.gram_min_eigenvalue >= 0.5}};
  }
  at::Tensor predict_impl(const at::Tensor& x) const override {
    return at::matmul(basis_matrix(basis_, x), coefficients_);
  }
  std::vector<NamedTensor> state() const override { return {{"coefficients", coefficients_}}; }
  void restore(const SafetensorsFile& file) override {
    coefficients_ = expect_state(file, "coefficients");
    LR_CHECK(coefficients_.dim() >= 1 && coefficients_.dim() <= 2 && coefficients_.size(0) == basis_.size,
             Corruption, file.path().string(), ": coefficients have shape ", coefficients_.sizes(),
             ", expected [", basis_.size, "] or [", basis_.size, ", k]");
  }

 private:
  OrthonormalBasis basis_;
  std::string weighting_;
  at::Tensor coefficients_;
};

}  // namespace

OrthonormalBasis parse_basis(const std::string& spec) {
  const size_t colon = spec.find(':');
  const std::string family = spec.substr(0, colon);
  LR_CHECK(family == "legendre", InvalidArgument, "unknown basis \"", spec, "\" (known: legendre:M)");
  OrthonormalBasis basis;
  basis.family = family;
  int64_t size = 0;
  bool parsed = false;
  if (colon != std::string::npos && colon + 1 < spec.size()) {
    try {
      size_t used = 0;
      size = std::stoll(spec.substr(colon + 1), &used);
      parsed = used == spec.size() - colon - 1;
    } catch (const std::exception&) {
    }
  }
  LR_CHECK(parsed && size >= 1, InvalidArgument, "basis \"", spec,
           "\": the dimension M of legendre:M must be an integer >= 1");
  basis.size = size;
  return basis;
}

std::string to_string(const OrthonormalBasis& basis) {
  return basis.family + ":" + std::to_string(basis.size);
}

double christoffel_bound(const OrthonormalBasis& basis) {
  return static_cast<double>(basis.size) * static_cast<double>(basis.size);
}

at::Tensor basis_matrix(const OrthonormalBasis& basis, const at::Tensor& x) {
  const at::Tensor points = as_points(x);
  const int64_t n = points.size(0), m = basis.size;
  at::Tensor out = at::empty({n, m}, at::kDouble);
  const double* px = points.data_ptr<double>();
  double* po = out.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) legendre_features(m, px[i], po + i * m);
  return out;
}

at::Tensor inverse_christoffel(const OrthonormalBasis& basis, const at::Tensor& x) {
  return basis_matrix(basis, x).pow(2).sum(1);
}

at::Tensor optimal_weights(const OrthonormalBasis& basis, const at::Tensor& x) {
  return static_cast<double>(basis.size) / inverse_christoffel(basis, x);
}

at::Tensor sample_christoffel(const OrthonormalBasis& basis, int64_t n, uint64_t seed) {
  check_count(n, "the number of points n");
  Uniform uniform(seed);
  std::vector<double> phi(basis.size), out;
  for (int64_t i = 0; i < n; ++i) out.push_back(draw_christoffel(basis, uniform, phi));
  return to_tensor(out);
}

at::Tensor sample_projection_dpp(const OrthonormalBasis& basis, uint64_t seed) {
  Uniform uniform(seed);
  std::vector<double> out;
  draw_projection_dpp(basis, uniform, out);
  return to_tensor(out);
}

at::Tensor sample_volume_rescaled(const OrthonormalBasis& basis, int64_t n, uint64_t seed) {
  LR_CHECK(n >= basis.size, InvalidArgument,
           "dpp_sampling: volume-rescaled sampling needs n >= m, got n = ", n, " < m = ", basis.size);
  Uniform uniform(seed);
  std::vector<double> out, phi(basis.size);
  draw_projection_dpp(basis, uniform, out);
  for (int64_t i = basis.size; i < n; ++i) out.push_back(draw_christoffel(basis, uniform, phi));
  for (int64_t i = n - 1; i > 0; --i) std::swap(out[i], out[uniform.below(i + 1)]);  // Fisher–Yates
  return to_tensor(out);
}

at::Tensor sample_dpp_repetitions(const OrthonormalBasis& basis, int64_t repetitions, uint64_t seed) {
  check_count(repetitions, "the number of DPP repetitions r");
  Uniform uniform(seed);
  std::vector<double> out;
  for (int64_t r = 0; r < repetitions; ++r) draw_projection_dpp(basis, uniform, out);
  return to_tensor(out);
}

const std::vector<std::string>& design_names() {
  static const std::vector<std::string> names = {"christoffel", "dpp", "volume", "repeat"};
  return names;
}

at::Tensor sample_design(const std::string& method, const OrthonormalBasis& basis, int64_t n, uint64_t seed) {
  check_count(n, "the number of points n");
  const int64_t m = basis.size;
  if (method == "christoffel") return sample_christoffel(basis, n, seed);
  if (method == "volume") return sample_volume_rescaled(basis, n, seed);
  if (method == "dpp") {
    LR_CHECK(n == m, InvalidArgument, "dpp_sampling: a projection DPP has exactly m = ", m,
             " points, got n = ", n);
    return sample_projection_dpp(basis, seed);
  }
  if (method == "repeat") {
    LR_CHECK(n % m == 0, InvalidArgument, "dpp_sampling: DPP repetitions need n a multiple of m = ", m,
             ", got n = ", n);
    return sample_dpp_repetitions(basis, n / m, seed);
  }
  throw InvalidArgument(
      str("unknown sampling method \"", method, "\" (known: christoffel, dpp, volume, repeat)"));
}

WeightedLeastSquares weighted_least_squares(const OrthonormalBasis& basis, const at::Tensor& x,
                                            const at::Tensor& y, const at::Tensor& weights) {
  const at::Tensor phi = basis_matrix(basis, x);
  const int64_t n = phi.size(0), m = basis.size;
  LR_CHECK(m <= n, InvalidArgument, "dpp_sampling: weighted least squares needs m <= n, got m = ", m,
           " > n = ", n);
  LR_CHECK(y.dim() >= 1 && y.dim() <= 2 && y.size(0) == n, InvalidArgument,
           "dpp_sampling: values must be [n] or [n, k] with n = ", n, ", got ", y.sizes());
  LR_CHECK(weights.dim() == 1 && weights.size(0) == n, InvalidArgument,
           "dpp_sampling: weights must be [n] with n = ", n, ", got ", weights.sizes());
  const at::Tensor w = weights.to(at::kDouble);
  LR_CHECK((w > 0).all().item<bool>(), InvalidArgument, "dpp_sampling: weights must be > 0");
  // Least squares on the rows scaled by √w (QR-based), better conditioned than the normal equations.
  const at::Tensor root = w.sqrt();
  const at::Tensor scaled = phi * root.unsqueeze(1);
  const at::Tensor rhs = y.to(at::kDouble).reshape({n, -1}) * root.unsqueeze(1);
  at::Tensor coefficients = std::get<0>(at::linalg_lstsq(scaled, rhs, c10::nullopt, "gelsd"));
  if (y.dim() == 1) coefficients = coefficients.reshape({m});
  const at::Tensor gram = at::matmul(scaled.t(), scaled) / static_cast<double>(n);
  return {coefficients, at::linalg_eigvalsh(gram).min().item<double>()};
}

void register_dpp_sampling(Registry<EstimatorMethod>& registry) {
  registry.add(
      {kName,
       "weighted least squares in a Legendre basis with weights m/k_m (designs from `kernel sample`)",
       "Nouy & Michel, 2023, arXiv:2312.14057",
       {{"basis", "orthonormal basis legendre:M on [-1, 1] (default legendre:20)"},
        {"weights", "christoffel (m/k_m, the paper's) or uniform (unweighted) (default christoffel)"}}},
      {[](const Json& options, uint64_t seed) { return std::make_unique<DppSampling>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
