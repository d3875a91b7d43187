#include "lowrank/kernel_methods/dkm.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/methods.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "dkm";

at::Tensor eye_like(const at::Tensor& a) {
  return at::eye(a.size(0), a.options());
}

// The kernel between points with inner products `cross` [n, m] and squared norms rows [n], cols [m].
at::Tensor kernel_cross(const at::Tensor& cross, const at::Tensor& rows, const at::Tensor& cols,
                        const DkmOptions& options) {
  if (options.kernel == "rbf") {
    const at::Tensor d2 = (rows.unsqueeze(1) + cols.unsqueeze(0) - 2 * cross).clamp_min(0);
    return at::exp(-d2 / (2 * options.bandwidth * options.bandwidth));
  }
  // acos has an infinite derivative at cosine ±1 (every diagonal entry), which autograd turns into
  // 0·∞ = NaN although κ₁'s own derivative in the cosine, (π − θ)/π, is finite there. Holding the
  // cosine 10⁻¹⁵ inside [−1, 1] changes κ₁ by a relative 10⁻¹⁵ and keeps the gradient finite; the
  // diagonal's cosine is identically 1, so its zero gradient through the clamp is the exact one.
  const at::Tensor bound = (1 - 1e-15) * at::sqrt(rows.unsqueeze(1) * cols.unsqueeze(0));
  return arccos_from_gram(at::minimum(at::maximum(cross, -bound), bound), rows, cols, 1);
}

at::Tensor kernel_diagonal(const at::Tensor& g, const DkmOptions& options) {
  return options.kernel == "rbf" ? at::ones_like(g) : g;
}

// Σ_λ log N(y_λ; 0, C Cᵀ) for the Cholesky factor C [n, n] and y [n, k].
at::Tensor gaussian_log_evidence(const at::Tensor& chol, const at::Tensor& y) {
  const double n = static_cast<double>(y.size(0)), k = static_cast<double>(y.size(1));
  const at::Tensor alpha = at::cholesky_solve(y, chol);
  return -0.5 * (y * alpha).sum() - k * at::log(chol.diagonal()).sum() -
         0.5 * n * k * std::log(2 * std::numbers::pi);
}

// The chosen rows: a seeded random subset of size P (all rows, in order, when P = 0 or P >= n).
at::Tensor inducing_inputs(const at::Tensor& x, int64_t count, uint64_t seed) {
  const int64_t n = x.size(0);
  if (count == 0 || count >= n) return x;
  at::Generator generator = at::detail::createCPUGenerator(seed);
  const at::Tensor order = at::randperm(n, generator, at::TensorOptions().dtype(at::kLong));
  return x.index_select(0, std::get<0>(order.slice(0, 0, count).sort()));
}

// G = V Vᵀ from the raw parameter: V = (tril(raw, −1) + diag(exp(diag raw)))/√P.
at::Tensor gram_of(const at::Tensor& raw) {
  const at::Tensor v =
      (at::tril(raw, -1) + at::diag(at::exp(raw.diagonal()))) / std::sqrt(static_cast<double>(raw.size(0)));
  return at::matmul(v, v.t());
}

at::Tensor raw_of(const at::Tensor& gram) {
  const at::Tensor v = at::linalg_cholesky(gram) * std::sqrt(static_cast<double>(gram.size(0)));
  return at::tril(v, -1) + at::diag(at::log(v.diagonal()));
}

class DkmEstimator final : public Estimator {
 public:
  DkmEstimator(const Json& options, uint64_t seed) : Estimator(options, seed) {
    o_.layers = json_get_or<int64_t>(options, "layers", o_.layers, kName);
    o_.nu = json_get_or<double>(options, "nu", o_.nu, kName);
    o_.kernel = json_get_or<std::string>(options, "kernel", o_.kernel, kName);
    o_.bandwidth = json_get_or<double>(options, "bandwidth", o_.bandwidth, kName);
    o_.inducing = json_get_or<int64_t>(options, "inducing", o_.inducing, kName);
    o_.steps = json_get_or<int64_t>(options, "steps", o_.steps, kName);
    o_.lr = json_get_or<double>(options, "lr", o_.lr, kName);
    o_.noise = json_get_or<double>(options, "noise", o_.noise, kName);
    o_.learn_noise = json_get_or<bool>(options, "learn_noise", o_.learn_noise, kName);
    o_.nngp = json_get_or<bool>(options, "nngp", o_.nngp, kName);
    o_.kernel_jitter = json_get_or<double>(options, "kernel_jitter", o_.kernel_jitter, kName);
    o_.gram_jitter = json_get_or<double>(options, "gram_jitter", o_.gram_jitter, kName);
    validate(o_);
  }
  std::string_view method() const override { return kName; }

 protected:
  void fit_impl(const Dataset& data) override {
    LR_CHECK(data.y.defined(), InvalidArgument, kName, ": fitting needs targets y");
    vector_targets_ = data.y.dim() == 1;
    model_ = dkm_fit(data.x, data.y, o_, seed());
    report_ = {{"objective", model_.objective},
               {"log_likelihood", model_.log_likelihood},
               {"kl", model_.kl},
               {"noise", model_.noise},
               {"inducing", model_.inducing.size(0)}};
  }
  at::Tensor predict_impl(const at::Tensor& x) const override {
    const at::Tensor mean = dkm_predict(model_, x, o_).mean;
    return vector_targets_ ? mean.squeeze(1) : mean;
  }
  std::vector<NamedTensor> state() const override {
    std::vector<NamedTensor> out = {
        {"inducing", model_.inducing},
        {"alpha", model_.alpha},
        {"w", model_.w},
        {"noise", at::scalar_tensor(model_.noise, at::kDouble)},
        {"y_mean", model_.y_mean},
        {"y_scale", model_.y_scale},
        {"vector_targets", at::scalar_tensor(vector_targets_ ? 1.0 : 0.0, at::kDouble)}};
    for (size_t l = 0; l < model_.grams.size(); ++l)
      out.push_back({"gram_" + std::to_string(l + 1), model_.grams[l]});
    return out;
  }
  void restore(const SafetensorsFile& file) override {
    model_.inducing = expect_state(file, "inducing");
    model_.alpha = expect_state(file, "alpha");
    model_.w = expect_state(file, "w");
    model_.noise = expect_state(file, "noise").item<double>();
    model_.y_mean = expect_state(file, "y_mean");
    model_.y_scale = expect_state(file, "y_scale");
    vector_targets_ = expect_state(file, "vector_targets").item<double>() != 0;
    model_.grams.clear();
    const int64_t p = model_.inducing.size(0);
    for (int64_t l = 1; l <= o_.layers; ++l) {
      model_.grams.push_back(expect_state(file, "gram_" + std::to_string(l)));
      LR_CHECK(model_.grams.back().sizes() == at::IntArrayRef({p, p}), Corruption, file.path().string(),
               ": gram_", l, " is ", model_.grams.back().sizes(), ", not [", p, ", ", p, "]");
    }
    LR_CHECK(model_.inducing.dim() == 2 && model_.inducing.size(1) == input_dim() &&
                 model_.alpha.dim() == 2 && model_.alpha.size(0) == p &&
                 model_.w.sizes() == at::IntArrayRef({p, p}),
             Corruption, file.path().string(), ": inducing ", model_.inducing.sizes(), ", alpha ",
             model_.alpha.sizes(), " and w ", model_.w.sizes(), " do not fit together");
  }

 private:
  DkmOptions o_;
  DkmModel model_;
  bool vector_targets_ = true;
};

}  // namespace

void validate(const DkmOptions& o) {
  LR_CHECK(o.layers >= 1, InvalidArgument, kName, ": option \"layers\" must be >= 1, got ", o.layers);
  LR_CHECK(std::isfinite(o.nu) && o.nu > 0, InvalidArgument, kName, ": option \"nu\" must be > 0, got ",
           o.nu);
  LR_CHECK(o.kernel == "arccos1" || o.kernel == "rbf", InvalidArgument, kName,
           ": option \"kernel\" must be arccos1 or rbf, got \"", o.kernel, "\"");
  LR_CHECK(std::isfinite(o.bandwidth) && o.bandwidth > 0, InvalidArgument, kName,
           ": option \"bandwidth\" must be > 0, got ", o.bandwidth);
  LR_CHECK(o.inducing >= 0, InvalidArgument, kName, ": option \"inducing\" must be >= 0 (0 = full), got ",
           o.inducing);
  LR_CHECK(o.steps >= 0, InvalidArgument, kName, ": option \"steps\" must be >= 0, got ", o.steps);
  LR_CHECK(std::isfinite(o.lr) && o.lr > 0, InvalidArgument, kName, ": option \"lr\" must be > 0, got ",
           o.lr);
  LR_CHECK(std::isfinite(o.noise) && o.noise > 0, InvalidArgument, kName,
           ": option \"noise\" must be > 0, got ", o.noise);
  LR_CHECK(std::isfinite(o.kernel_jitter) && o.kernel_jitter >= 0, InvalidArgument, kName,
           ": option \"kernel_jitter\" must be >= 0, got ", o.kernel_jitter);
  LR_CHECK(std::isfinite(o.gram_jitter) && o.gram_jitter >= 0, InvalidArgument, kName,
           ": option \"gram_jitter\" must be >= 0, got ", o.gram_jitter);
}

at::Tensor dkm_gaussian_kl(const at::Tensor& g, const at::Tensor& k) {
  LR_CHECK(g.dim() == 2 && g.sizes() == k.sizes() && g.size(0) == g.size(1), InvalidArgument,
           "dkm: the KL needs two square matrices of one size, got ", g.sizes(), " and ", k.sizes());
  const at::Tensor chol_k = at::linalg_cholesky(k), chol_g = at::linalg_cholesky(g);
  const at::Tensor trace = at::cholesky_solve(g, chol_k).diagonal().sum();
  const at::Tensor logdet_k = 2 * at::log(chol_k.diagonal()).sum(),
                   logdet_g = 2 * at::log(chol_g.diagonal()).sum();
  return 0.5 * (trace - static_cast<double>(g.size(0)) + logdet_k - logdet_g);
}

GramBlocks dkm_kernel(const GramBlocks& g, const DkmOptions& options) {
  const at::Tensor diag = g.ii.diagonal();
  GramBlocks k;
  k.ii = kernel_cross(g.ii, diag, diag, options) + options.kernel_jitter * eye_like(g.ii);
  if (g.ti.defined()) {
    k.ti = kernel_cross(g.ti, g.t, diag, options);
    k.t = kernel_diagonal(g.t, options) + options.kernel_jitter;
  }
  return k;
}

GramBlocks dkm_propagate(const GramBlocks& k, const at::Tensor& g_ii, double gram_jitter) {
  const at::Tensor g = gram_jitter > 0 ? g_ii + gram_jitter * eye_like(g_ii) : g_ii;
  // A = K_ti K_ii⁻¹ [n, P] by one Cholesky solve: O(n P²).
  const at::Tensor a = at::cholesky_solve(k.ti.t(), at::linalg_cholesky(k.ii)).t();
  GramBlocks out;
  out.ii = g;
  out.ti = at::matmul(a, g);
  // The conditional variance plus the learned part; rounding can take the first below zero at an
  // inducing point, and a norm must not be negative.
  out.t = (k.t - (a * k.ti).sum(1) + (out.ti * a).sum(1)).clamp_min(0);
  return out;
}

std::vector<at::Tensor> dkm_nngp_grams(const at::Tensor& z, const DkmOptions& options) {
  GramBlocks g{at::matmul(z, z.t()) / static_cast<double>(z.size(1)), {}, {}};
  std::vector<at::Tensor> grams;
  for (int64_t l = 0; l < options.layers; ++l) {
    g.ii = dkm_kernel(g, options).ii;
    grams.push_back(g.ii);
    if (options.gram_jitter > 0) g.ii = g.ii + options.gram_jitter * eye_like(g.ii);
  }
  return grams;
}

DkmTerms dkm_terms(const at::Tensor& x, const at::Tensor& y, const at::Tensor& z,
                   const std::vector<at::Tensor>& grams, const at::Tensor& noise, bool sparse,
                   const DkmOptions& options) {
  LR_CHECK(static_cast<int64_t>(grams.size()) == options.layers, InvalidArgument, "dkm: ", grams.size(),
           " Gram matrices for ", options.layers, " layers");
  LR_CHECK(y.dim() == 2 && y.size(0) == x.size(0), InvalidArgument, "dkm: targets must be [", x.size(0),
           ", k], got ", y.sizes());
  const double d0 = static_cast<double>(x.size(1));
  GramBlocks g{at::matmul(z, z.t()) / d0, {}, {}};
  if (sparse) g.ti = at::matmul(x, z.t()) / d0, g.t = (x * x).sum(1) / d0;
  DkmTerms terms;
  at::Tensor kl_sum = at::zeros({}, x.options());
  for (const at::Tensor& gram : grams) {
    const GramBlocks k = dkm_kernel(g, options);
    terms.kl.push_back(dkm_gaussian_kl(gram, k.ii));
    kl_sum = kl_sum + terms.kl.back();
    if (sparse) {
      g = dkm_propagate(k, gram, options.gram_jitter);
    } else {
      g.ii = options.gram_jitter > 0 ? gram + options.gram_jitter * eye_like(gram) : gram;
    }
  }
  const GramBlocks k = dkm_kernel(g, options);
  if (!sparse) {
    terms.log_likelihood = gaussian_log_evidence(at::linalg_cholesky(k.ii + noise * eye_like(k.ii)), y);
  } else {
    // Titsias's collapsed bound through B = L⁻¹K_it (K_ii = L Lᵀ) and C = I + BBᵀ/σ²:
    // log|Q + σ²I| = n log σ² + log|C|, yᵀ(Q + σ²I)⁻¹y = (yᵀy − ‖L_C⁻¹By‖²/σ²)/σ².
    const double n = static_cast<double>(y.size(0)), outputs = static_cast<double>(y.size(1));
    const at::Tensor b = at::linalg_solve_triangular(at::linalg_cholesky(k.ii), k.ti.t(), /*upper=*/false);
    const at::Tensor chol_c = at::linalg_cholesky(eye_like(k.ii) + at::matmul(b, b.t()) / noise);
    const at::Tensor c = at::linalg_solve_triangular(chol_c, at::matmul(b, y), /*upper=*/false);
    const at::Tensor quadratic = ((y * y).sum() - (c * c).sum() / noise) / noise;
    const at::Tensor logdet = n * outputs * at::log(noise) + 2 * outputs * at::log(chol_c.diagonal()).sum();
    const at::Tensor residual = (k.t - (b * b).sum(0)).sum();
    terms.log_likelihood = -0.5 * (quadratic + logdet + n * outputs * std::log(2 * std::numbers::pi)) -
                           outputs * residual / (2 * noise);
  }
  terms.objective = terms.log_likelihood - options.nu * kl_sum;
  return terms;
}

DkmModel dkm_fit(const at::Tensor& x_in, const at::Tensor& y_in, const DkmOptions& options, uint64_t seed) {
  validate(options);
  LR_CHECK(x_in.dim() == 2 && x_in.size(0) >= 2, InvalidArgument, "dkm: x must be [n, d] with n >= 2, got ",
           x_in.sizes());
  LR_CHECK((y_in.dim() == 1 || y_in.dim() == 2) && y_in.size(0) == x_in.size(0), InvalidArgument,
           "dkm: ", y_in.dim() >= 1 ? y_in.size(0) : 0, " targets for ", x_in.size(0), " inputs");
  const at::Tensor x = x_in.to(at::kDouble);
  const at::Tensor y_raw = y_in.dim() == 1 ? y_in.to(at::kDouble).unsqueeze(1) : y_in.to(at::kDouble);
  DkmModel model;
  model.y_mean = y_raw.mean(0);
  model.y_scale = y_raw.std(0, /*unbiased=*/false).clamp_min(1e-12);
  const at::Tensor y = (y_raw - model.y_mean) / model.y_scale;
  const bool sparse = options.inducing > 0 && options.inducing < x.size(0);
  model.inducing = inducing_inputs(x, options.inducing, seed);

  std::vector<at::Tensor> raws;
  for (const at::Tensor& gram : dkm_nngp_grams(model.inducing, options)) {
    raws.push_back(raw_of(gram));
    if (!options.nngp) raws.back().set_requires_grad(true);
  }
  at::Tensor log_noise = at::scalar_tensor(std::log(options.noise), at::kDouble);
  std::vector<at::Tensor> params;
  if (options.learn_noise) log_noise.set_requires_grad(true), params.push_back(log_noise);
  if (!options.nngp) params.insert(params.end(), raws.begin(), raws.end());
  auto grams_of = [&] {
    std::vector<at::Tensor> grams;
    for (const at::Tensor& raw : raws) grams.push_back(gram_of(raw));
    return grams;
  };
  // Adam (Kingma & Ba, 2015), ascending L.
  std::vector<at::Tensor> first, second;
  for (const at::Tensor& p : params) first.push_back(at::zeros_like(p)), second.push_back(at::zeros_like(p));
  const int64_t steps = params.empty() ? 0 : options.steps;
  for (int64_t step = 1; step <= steps; ++step) {
    const DkmTerms terms = dkm_terms(x, y, model.inducing, grams_of(), at::exp(log_noise), sparse, options);
    const std::vector<at::Tensor> grads = torch::autograd::grad({terms.objective}, params);
    at::NoGradGuard no_grad;
    const double beta1 = 0.9, beta2 = 0.999;
    for (size_t i = 0; i < params.size(); ++i) {
      first[i].mul_(beta1).add_(grads[i], 1 - beta1);
      second[i].mul_(beta2).addcmul_(grads[i], grads[i], 1 - beta2);
      params[i].add_(options.lr * (first[i] / (1 - std::pow(beta1, step))) /
                     ((second[i] / (1 - std::pow(beta2, step))).sqrt() + 1e-8));
    }
  }

  at::NoGradGuard no_grad;
  for (const at::Tensor& raw : raws) model.grams.push_back(gram_of(raw.detach()));
  model.noise = std::exp(log_noise.item<double>());
  const at::Tensor noise = at::scalar_tensor(model.noise, at::kDouble);
  const DkmTerms terms = dkm_terms(x, y, model.inducing, model.grams, noise, sparse, options);
  model.objective = terms.objective.item<double>();
  model.log_likelihood = terms.log_likelihood.item<double>();
  for (const at::Tensor& kl : terms.kl) model.kl.push_back(kl.item<double>());

  // The last layer's kernel between the training points and the inducing points.
  const double d0 = static_cast<double>(x.size(1));
  GramBlocks g{at::matmul(model.inducing, model.inducing.t()) / d0, at::matmul(x, model.inducing.t()) / d0,
               (x * x).sum(1) / d0};
  for (const at::Tensor& gram : model.grams)
    g = dkm_propagate(dkm_kernel(g, options), gram, options.gram_jitter);
  const GramBlocks k = dkm_kernel(g, options);
  if (!sparse) {
    const at::Tensor chol = at::linalg_cholesky(k.ii + model.noise * eye_like(k.ii));
    model.alpha = at::cholesky_solve(y, chol);
    model.w = at::cholesky_inverse(chol);
  } else {
    const at::Tensor sigma = k.ii + at::matmul(k.ti.t(), k.ti) / model.noise;
    const at::Tensor chol_sigma = at::linalg_cholesky(sigma);
    model.alpha = at::cholesky_solve(at::matmul(k.ti.t(), y), chol_sigma) / model.noise;
    model.w = at::cholesky_inverse(at::linalg_cholesky(k.ii)) - at::cholesky_inverse(chol_sigma);
  }
  return model;
}

DkmPrediction dkm_predict(const DkmModel& model, const at::Tensor& x_in, const DkmOptions& options) {
  LR_CHECK(x_in.dim() == 2 && x_in.size(1) == model.inducing.size(1), InvalidArgument,
           "dkm: inputs must be [m, ", model.inducing.size(1), "], got ", x_in.sizes());
  at::NoGradGuard no_grad;
  const at::Tensor x = x_in.to(at::kDouble), z = model.inducing;
  const double d0 = static_cast<double>(x.size(1));
  GramBlocks g{at::matmul(z, z.t()) / d0, at::matmul(x, z.t()) / d0, (x * x).sum(1) / d0};
  for (const at::Tensor& gram : model.grams)
    g = dkm_propagate(dkm_kernel(g, options), gram, options.gram_jitter);
  const GramBlocks k = dkm_kernel(g, options);
  const at::Tensor mean = at::matmul(k.ti, model.alpha);
  const at::Tensor variance = (k.t - (at::matmul(k.ti, model.w) * k.ti).sum(1)).clamp_min(0) + model.noise;
  return {mean * model.y_scale + model.y_mean, variance.unsqueeze(1) * model.y_scale.square()};
}

void register_dkm(Registry<EstimatorMethod>& registry) {
  registry.add(
      {kName,
       "Deep kernel machine: one learned Gram matrix per layer (KL-regularised towards the NNGP), full or "
       "sparse with inducing Grams; predict returns the predictive mean",
       "Yang, Robeyns, Milsom, Anson, Schoots & Aitchison, ICML 2023, arXiv:2108.13097",
       {{"layers", "learned Gram layers L >= 1 (default 2)"},
        {"nu", "ν > 0, the weight of each layer's KL to K(G_{l-1}) (default 1)"},
        {"kernel", "kernel on Grams: arccos1 (ReLU NNGP) or rbf (default arccos1)"},
        {"bandwidth", "h of rbf, exp(-D/(2h²)) (default 1)"},
        {"inducing", "inducing points P_i of the sparse DKM; 0 = full (default 0)"},
        {"steps", "Adam steps (default 200)"},
        {"lr", "Adam step size > 0 (default 0.01)"},
        {"noise", "noise variance σ² of standardised targets, > 0 (initial value if learned; default 0.1)"},
        {"learn_noise", "fit σ² with the Grams (default true)"},
        {"nngp", "ν = ∞: Grams held at the NNGP, only σ² fitted (default false)"},
        {"kernel_jitter", "added to each kernel's diagonal, >= 0 (default 1e-4, the reference code's)"},
        {"gram_jitter",
         "added to each G_ii in the propagation only, >= 0 (the reference code's 0.1; default 0)"}}},
      {[](const Json& options, uint64_t seed) { return std::make_unique<DkmEstimator>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
