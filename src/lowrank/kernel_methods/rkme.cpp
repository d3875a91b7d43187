#include "lowrank/kernel_methods/rkme.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/methods.h"
#include "lowrank/linalg/kmeans.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "rkme";

at::Tensor gaussian(const at::Tensor& a, const at::Tensor& b, double gamma) {
  return at::exp(-gamma * squared_distances(a, b));
}

// α: the given weights or 1/n.
at::Tensor data_weights(const at::Tensor& x, const at::Tensor& weights) {
  const int64_t n = x.size(0);
  if (!weights.defined()) return at::full({n}, 1.0 / static_cast<double>(n), x.options());
  LR_CHECK(weights.dim() == 1 && weights.size(0) == n, InvalidArgument, "rkme: weights must be [", n,
           "], got ", weights.sizes());
  LR_CHECK(weights.ge(0).all().item<bool>() && std::abs(weights.sum().item<double>() - 1) < 1e-9,
           InvalidArgument, "rkme: weights must be >= 0 and sum to 1");
  return weights.to(at::kDouble);
}

void check_gamma(double gamma) {
  LR_CHECK(std::isfinite(gamma) && gamma > 0, InvalidArgument, "rkme: gamma must be > 0, got ", gamma);
}

class RkmeEstimator final : public Estimator {
 public:
  RkmeEstimator(const Json& options, uint64_t seed) : Estimator(options, seed) {
    rkme_options_.size = json_get_or<int64_t>(options, "size", 100, kName);
    rkme_options_.gamma = json_get_or<double>(options, "gamma", 0.1, kName);
    rkme_options_.steps = json_get_or<int64_t>(options, "steps", 3, kName);
    rkme_options_.step_size = json_get_or<double>(options, "step_size", 0.1, kName);
    rkme_options_.nonnegative = json_get_or<bool>(options, "nonnegative", true, kName);
    LR_CHECK(rkme_options_.size >= 1, InvalidArgument, kName, ": option \"size\" must be >= 1, got ",
             rkme_options_.size);
    LR_CHECK(std::isfinite(rkme_options_.gamma) && rkme_options_.gamma > 0, InvalidArgument, kName,
             ": option \"gamma\" must be > 0, got ", rkme_options_.gamma);
    LR_CHECK(rkme_options_.steps >= 0, InvalidArgument, kName, ": option \"steps\" must be >= 0, got ",
             rkme_options_.steps);
    LR_CHECK(std::isfinite(rkme_options_.step_size) && rkme_options_.step_size > 0, InvalidArgument, kName,
             ": option \"step_size\" must be > 0, got ", rkme_options_.step_size);
  }
  std::string_view method() const override { return kName; }
  const Rkme& rkme() const { return rkme_; }

 protected:
  void fit_impl(const Dataset& data) override {
    at::Generator generator = at::detail::createCPUGenerator(seed());
    rkme_ = rkme_build(data.x, at::Tensor(), rkme_options_, generator);
    report_ = {{"size", rkme_.z.size(0)}, {"objective", rkme_objective(rkme_, data.x, at::Tensor())}};
  }
  at::Tensor predict_impl(const at::Tensor& x) const override { return rkme_evaluate(rkme_, x); }
  std::vector<NamedTensor> state() const override { return {{"z", rkme_.z}, {"beta", rkme_.beta}}; }
  void restore(const SafetensorsFile& file) override {
    rkme_.z = expect_state(file, "z");
    rkme_.beta = expect_state(file, "beta");
    rkme_.gamma = rkme_options_.gamma;
    LR_CHECK(rkme_.z.dim() == 2 && rkme_.z.size(1) == input_dim() && rkme_.beta.dim() == 1 &&
                 rkme_.beta.size(0) == rkme_.z.size(0),
             Corruption, file.path().string(), ": z ", rkme_.z.sizes(), " and beta ", rkme_.beta.sizes(),
             " do not fit together");
  }

 private:
  RkmeOptions rkme_options_;
  Rkme rkme_;
};

}  // namespace

at::Tensor simplex_qp(const at::Tensor& k, const at::Tensor& c) {
  LR_CHECK(k.dim() == 2 && k.size(0) == k.size(1) && k.size(0) >= 1, InvalidArgument,
           "rkme: the QP matrix must be square, got ", k.sizes());
  LR_CHECK(c.dim() == 1 && c.size(0) == k.size(0), InvalidArgument, "rkme: the QP vector must be [",
           k.size(0), "], got ", c.sizes());
  const int64_t m = k.size(0);
  const at::Tensor kd = k.to(at::kDouble).contiguous(), cd = c.to(at::kDouble).contiguous();
  // A Gaussian Gram of near-duplicate centres is nearly singular: a ridge far below the
  // tolerance keeps the bordered solves defined without moving the optimum visibly.
  const double ridge = 1e-12 * std::max(1.0, kd.diagonal().max().item<double>());
  const at::Tensor kr = kd + ridge * at::eye(m, kd.options());
  std::vector<double> beta(m, 1.0 / static_cast<double>(m));
  std::vector<bool> free(m, true);
  const double tolerance =
      1e-12 * std::max(1.0, kd.abs().max().item<double>() + cd.abs().max().item<double>());
  for (int64_t iteration = 0; iteration < 20 * m + 100; ++iteration) {
    std::vector<int64_t> f;
    for (int64_t i = 0; i < m; ++i)
      if (free[i]) f.push_back(i);
    const int64_t nf = static_cast<int64_t>(f.size());
    const at::Tensor index = at::tensor(f, at::kLong);
    // KKT of min ½βᵀKβ − cᵀβ on the free set with Σβ = 1: [K_FF 1; 1ᵀ 0][β_F; ν] = [c_F; 1].
    at::Tensor kkt = at::zeros({nf + 1, nf + 1}, kd.options());
    kkt.slice(0, 0, nf).slice(1, 0, nf).copy_(kr.index_select(0, index).index_select(1, index));
    kkt.slice(0, 0, nf).select(1, nf).fill_(1);
    kkt.select(0, nf).slice(0, 0, nf).fill_(1);
    at::Tensor rhs = at::zeros({nf + 1}, kd.options());
    rhs.slice(0, 0, nf).copy_(cd.index_select(0, index));
    rhs[nf] = 1;
    const at::Tensor solution = at::linalg_solve(kkt, rhs);
    const auto* s = solution.data_ptr<double>();
    // Step towards the free-set optimum as far as feasibility allows.
    double step = 1;
    int64_t blocking = -1;
    for (int64_t a = 0; a < nf; ++a) {
      const double from = beta[f[a]], to = s[a];
      if (to < 0 && from - to > 0) {
        const double t = from / (from - to);
        if (t < step) step = t, blocking = f[a];
      }
    }
    for (int64_t a = 0; a < nf; ++a) beta[f[a]] += step * (s[a] - beta[f[a]]);
    if (blocking >= 0) {
      beta[blocking] = 0;
      free[blocking] = false;
      continue;
    }
    // At the free-set optimum: the multipliers μ_i = (Kβ − c)_i + ν of the bound constraints on
    // the active set must be ≥ 0; release the most negative one, or stop.
    const double nu = s[nf];
    const at::Tensor gradient = at::mv(kr, at::tensor(beta, at::kDouble)) - cd;
    const auto* g = gradient.data_ptr<double>();
    int64_t release = -1;
    double most_negative = -tolerance;
    for (int64_t i = 0; i < m; ++i)
      if (!free[i] && g[i] + nu < most_negative) most_negative = g[i] + nu, release = i;
    if (release < 0) return at::tensor(beta, at::kDouble).clamp_min(0);
    free[release] = true;
  }
  throw InternalError(str("rkme: the simplex QP did not finish in ", 20 * m + 100, " active-set iterations"));
}

at::Tensor rkme_beta(const at::Tensor& z, const at::Tensor& x, const at::Tensor& weights, double gamma,
                     bool nonnegative) {
  check_gamma(gamma);
  const at::Tensor alpha = data_weights(x, weights);
  const at::Tensor kzz = gaussian(z, z, gamma);
  const at::Tensor c = at::mv(gaussian(z, x, gamma), alpha);
  if (nonnegative) return simplex_qp(kzz, c);
  return at::linalg_solve(kzz + 1e-5 * at::eye(z.size(0), kzz.options()), c);
}

double rkme_objective(const Rkme& rkme, const at::Tensor& x, const at::Tensor& weights) {
  const at::Tensor alpha = data_weights(x, weights);
  const at::Tensor& b = rkme.beta;
  return (at::dot(b, at::mv(gaussian(rkme.z, rkme.z, rkme.gamma), b)) -
          2 * at::dot(b, at::mv(gaussian(rkme.z, x, rkme.gamma), alpha)) +
          at::dot(alpha, at::mv(gaussian(x, x, rkme.gamma), alpha)))
      .item<double>();
}

at::Tensor rkme_z_gradient(const Rkme& rkme, const at::Tensor& x, const at::Tensor& weights) {
  const at::Tensor alpha = data_weights(x, weights);
  const at::Tensor &z = rkme.z, &b = rkme.beta;
  // Σ_l w_l k(z_j, y_l)(z_j − y_l) = (Σ_l W_jl) z_j − W y with W_jl = w_l k(z_j, y_l).
  auto pull = [&](const at::Tensor& y, const at::Tensor& w) {
    const at::Tensor weighted = gaussian(z, y, rkme.gamma) * w.unsqueeze(0);
    return weighted.sum(1, /*keepdim=*/true) * z - at::matmul(weighted, y);
  };
  return -4 * rkme.gamma * b.unsqueeze(1) * (pull(z, b) - pull(x, alpha));
}

Rkme rkme_build(const at::Tensor& x, const at::Tensor& weights, const RkmeOptions& options,
                at::Generator& generator) {
  LR_CHECK(x.dim() == 2 && x.size(0) >= 1, InvalidArgument, "rkme: x must be [n, d] with n >= 1, got ",
           x.sizes());
  check_gamma(options.gamma);
  LR_CHECK(options.size >= 1, InvalidArgument, "rkme: size must be >= 1, got ", options.size);
  const at::Tensor xd = x.to(at::kDouble);
  const int64_t n = xd.size(0);
  const int64_t m = options.size >= n ? std::max<int64_t>(1, 2 * n / 3) : options.size;
  Rkme rkme;
  rkme.gamma = options.gamma;
  rkme.z = linalg::kmeans(xd, m, generator, 100).centers;
  rkme.beta = rkme_beta(rkme.z, xd, weights, options.gamma, options.nonnegative);
  for (int64_t step = 0; step < options.steps; ++step) {
    rkme.z = rkme.z - options.step_size * rkme_z_gradient(rkme, xd, weights);
    rkme.beta = rkme_beta(rkme.z, xd, weights, options.gamma, options.nonnegative);
  }
  return rkme;
}

at::Tensor rkme_evaluate(const Rkme& rkme, const at::Tensor& queries) {
  return at::mv(gaussian(queries.to(at::kDouble), rkme.z, rkme.gamma), rkme.beta);
}

double rkme_mmd2(const Rkme& a, const Rkme& b) {
  LR_CHECK(a.gamma == b.gamma, InvalidArgument, "rkme: the two RKMEs use different gamma (", a.gamma, " and ",
           b.gamma, ")");
  LR_CHECK(a.z.size(1) == b.z.size(1), InvalidArgument, "rkme: the two RKMEs live in different dimensions (",
           a.z.size(1), " and ", b.z.size(1), ")");
  auto inner = [&](const Rkme& p, const Rkme& q) {
    return at::dot(p.beta, at::mv(gaussian(p.z, q.z, a.gamma), q.beta)).item<double>();
  };
  return inner(a, a) - 2 * inner(a, b) + inner(b, b);
}

double rkme_mmd2_to_sample(const Rkme& rkme, const at::Tensor& sample) {
  LR_CHECK(sample.dim() == 2 && sample.size(0) >= 1 && sample.size(1) == rkme.z.size(1), InvalidArgument,
           "rkme: the query sample must be [q, ", rkme.z.size(1), "], got ", sample.sizes());
  Rkme as_rkme{sample.to(at::kDouble),
               at::full({sample.size(0)}, 1.0 / static_cast<double>(sample.size(0)), at::kDouble),
               rkme.gamma};
  return rkme_mmd2(rkme, as_rkme);
}

Identification identify(const at::Tensor& query, const std::vector<Rkme>& stored) {
  LR_CHECK(!stored.empty(), InvalidArgument, "rkme: identify needs at least one stored RKME");
  Identification out;
  for (const Rkme& r : stored) out.mmd2.push_back(rkme_mmd2_to_sample(r, query));
  out.ranking.resize(stored.size());
  std::iota(out.ranking.begin(), out.ranking.end(), 0);
  std::stable_sort(out.ranking.begin(), out.ranking.end(),
                   [&](int64_t a, int64_t b) { return out.mmd2[a] < out.mmd2[b]; });
  return out;
}

Rkme load_rkme(const std::filesystem::path& dir) {
  const auto model = load_estimator(dir);
  const auto* estimator = dynamic_cast<const RkmeEstimator*>(model.get());
  LR_CHECK(estimator != nullptr, InvalidArgument, dir.string(), " holds a \"", model->method(),
           "\" model, not an rkme one");
  return estimator->rkme();
}

void register_rkme(Registry<EstimatorMethod>& registry) {
  registry.add(
      {kName,
       "Reduced kernel mean embedding (β, z) of a dataset; predict evaluates Σβⱼk(zⱼ, x); identify() ranks "
       "stored RKMEs by MMD to a query",
       "Wu, Xu, Liu & Zhou, 2023, IEEE TKDE, arXiv:2001.07135",
       {{"size", "reduced-set size m (default 100; m >= n becomes max(1, 2n/3))"},
        {"gamma", "Gaussian kernel exp(−γ‖x − x'‖²), γ > 0 (default 0.1)"},
        {"steps", "alternating z-gradient / β rounds after k-means (default 3)"},
        {"step_size", "z gradient step size (default 0.1)"},
        {"nonnegative", "β on the simplex by a QP (default true) or (K + 1e-5 I)⁻¹C"}}},
      {[](const Json& options, uint64_t seed) { return std::make_unique<RkmeEstimator>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
