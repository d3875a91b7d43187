#include "lowrank/kernel_methods/singular_likelihood.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/methods.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "singular_likelihood";

// Σ_i log N(x_i; G(z_m), σ²I) per pair, differentiable in the means and σ: [n, M]. The squared
// distances are expanded (‖x‖² − 2xᵀm + ‖m‖², one matrix product) rather than formed from the
// [n, M, D] differences, which made each step memory-bound and D times slower.
at::Tensor pairwise_log_normal(const at::Tensor& x, const at::Tensor& means, const at::Tensor& sigma) {
  const double d = static_cast<double>(x.size(1));
  const at::Tensor sq = squared_distances(x, means);
  return -sq / (2 * sigma * sigma) - d * at::log(sigma) - 0.5 * d * std::log(2 * std::numbers::pi);
}

at::Tensor logmeanexp_rows(const at::Tensor& log_values) {
  return at::logsumexp(log_values, 1) - std::log(static_cast<double>(log_values.size(1)));
}

void check_options(const SingularLikelihoodOptions& o) {
  LR_CHECK(o.latent_dim >= 1, InvalidArgument, kName, ": option \"latent_dim\" must be >= 1, got ",
           o.latent_dim);
  LR_CHECK(o.hidden >= 1, InvalidArgument, kName, ": option \"hidden\" must be >= 1, got ", o.hidden);
  LR_CHECK(o.samples >= 1, InvalidArgument, kName, ": option \"samples\" must be >= 1, got ", o.samples);
  LR_CHECK(std::isfinite(o.tau) && o.tau >= 0, InvalidArgument, kName, ": option \"tau\" must be >= 0, got ",
           o.tau);
  LR_CHECK(std::isfinite(o.sigma_floor), InvalidArgument, kName,
           ": option \"sigma_floor\" must be finite, got ", o.sigma_floor);
  LR_CHECK(o.steps >= 0, InvalidArgument, kName, ": option \"steps\" must be >= 0, got ", o.steps);
  LR_CHECK(std::isfinite(o.learning_rate) && o.learning_rate > 0, InvalidArgument, kName,
           ": option \"learning_rate\" must be > 0, got ", o.learning_rate);
}

class SingularLikelihoodEstimator final : public Estimator {
 public:
  SingularLikelihoodEstimator(const Json& options, uint64_t seed) : Estimator(options, seed) {
    options_.latent_dim = json_get_or<int64_t>(options, "latent_dim", 1, kName);
    options_.hidden = json_get_or<int64_t>(options, "hidden", 32, kName);
    options_.samples = json_get_or<int64_t>(options, "samples", 256, kName);
    options_.tau = json_get_or<double>(options, "tau", 0.05, kName);
    options_.sigma_floor = json_get_or<double>(options, "sigma_floor", -1.0, kName);
    options_.steps = json_get_or<int64_t>(options, "steps", 500, kName);
    options_.learning_rate = json_get_or<double>(options, "learning_rate", 1e-2, kName);
    check_options(options_);
  }
  std::string_view method() const override { return kName; }

 protected:
  void fit_impl(const Dataset& data) override {
    at::Generator rng = at::detail::createCPUGenerator(seed());
    fit_ = singular_likelihood_fit(data.x, options_, rng);
    // Predictions use one fixed set of latent draws, kept with the model.
    latents_ = at::empty({options_.samples, options_.latent_dim}, at::kDouble).normal_(0, 1, rng);
    report_ = {{"sigma", fit_.sigma}};
  }
  // The logmeanexp log-likelihood of each row.
  at::Tensor predict_impl(const at::Tensor& x) const override {
    return logmeanexp_log_likelihood(x, fit_.generator(latents_), fit_.sigma);
  }
  std::vector<NamedTensor> state() const override {
    const Generator& g = fit_.generator;
    return {{"w1", g.w1}, {"b1", g.b1},          {"w2", g.w2},
            {"b2", g.b2}, {"latents", latents_}, {"sigma", at::tensor({fit_.sigma}, at::kDouble)}};
  }
  void restore(const SafetensorsFile& file) override {
    Generator& g = fit_.generator;
    g.w1 = expect_state(file, "w1");
    g.b1 = expect_state(file, "b1");
    g.w2 = expect_state(file, "w2");
    g.b2 = expect_state(file, "b2");
    latents_ = expect_state(file, "latents");
    const at::Tensor sigma = expect_state(file, "sigma");
    LR_CHECK(g.w1.dim() == 2 && g.b1.dim() == 1 && g.w2.dim() == 2 && g.b2.dim() == 1 &&
                 latents_.dim() == 2 && g.w1.size(0) == g.b1.size(0) && g.w2.size(1) == g.w1.size(0) &&
                 g.w2.size(0) == input_dim() && g.b2.size(0) == input_dim() &&
                 latents_.size(1) == g.w1.size(1) && sigma.numel() == 1,
             Corruption, file.path().string(), ": the generator's tensors do not fit together");
    fit_.sigma = sigma.item<double>();
  }

 private:
  SingularLikelihoodOptions options_;
  SingularLikelihoodFit fit_;
  at::Tensor latents_;
};

}  // namespace

at::Tensor Generator::operator()(const at::Tensor& z) const {
  const at::Tensor hidden = w1.defined() ? at::tanh(at::matmul(z, w1.t()) + b1) : z;
  return at::matmul(hidden, w2.t()) + b2;
}

at::Tensor logmeanexp_log_likelihood(const at::Tensor& x, const at::Tensor& means, double sigma) {
  LR_CHECK(x.dim() == 2 && means.dim() == 2 && means.size(1) == x.size(1) && means.size(0) >= 1,
           InvalidArgument, kName, ": x [n, D] and means [M, D] disagree: ", x.sizes(), " and ",
           means.sizes());
  LR_CHECK(std::isfinite(sigma) && sigma > 0, InvalidArgument, kName, ": sigma must be > 0, got ", sigma);
  return logmeanexp_rows(
      pairwise_log_normal(x.to(at::kDouble), means.to(at::kDouble), at::scalar_tensor(sigma, at::kDouble)));
}

at::Tensor gaussian_elbo(const at::Tensor& x, const Generator& generator, double sigma, const at::Tensor& mu,
                         const at::Tensor& log_std, int64_t samples, at::Generator& rng) {
  LR_CHECK(mu.dim() == 2 && mu.sizes() == log_std.sizes() && mu.size(0) == x.size(0), InvalidArgument, kName,
           ": mu and log_std must both be [", x.size(0), ", r], got ", mu.sizes(), " and ", log_std.sizes());
  LR_CHECK(samples >= 1, InvalidArgument, kName, ": the ELBO needs samples >= 1, got ", samples);
  LR_CHECK(std::isfinite(sigma) && sigma > 0, InvalidArgument, kName, ": sigma must be > 0, got ", sigma);
  const int64_t n = x.size(0), r = mu.size(1), d = x.size(1);
  const at::Tensor eps = at::empty({n, samples, r}, at::kDouble).normal_(0, 1, rng);
  const at::Tensor z = mu.unsqueeze(1) + at::exp(log_std).unsqueeze(1) * eps;  // [n, K, r]
  const at::Tensor means = generator(z.reshape({n * samples, r})).reshape({n, samples, d});
  const at::Tensor sq = (x.to(at::kDouble).unsqueeze(1) - means).pow(2).sum(-1);
  const double dd = static_cast<double>(d);
  const at::Tensor expected_log_normal =
      (-sq / (2 * sigma * sigma)).mean(1) - dd * std::log(sigma) - 0.5 * dd * std::log(2 * std::numbers::pi);
  const at::Tensor kl = 0.5 * (at::exp(2 * log_std) + mu.pow(2) - 1 - 2 * log_std).sum(1);
  return expected_log_normal - kl;
}

double wasserstein1_1d(const at::Tensor& u, const at::Tensor& v) {
  LR_CHECK(u.dim() == 1 && v.dim() == 1 && u.size(0) == v.size(0) && u.size(0) >= 1, InvalidArgument, kName,
           ": the 1-D W1 needs two samples of the same size, got ", u.sizes(), " and ", v.sizes());
  return (std::get<0>(u.to(at::kDouble).sort()) - std::get<0>(v.to(at::kDouble).sort()))
      .abs()
      .mean()
      .item<double>();
}

double sliced_wasserstein1(const at::Tensor& a, const at::Tensor& b, int64_t directions, at::Generator& rng) {
  LR_CHECK(a.dim() == 2 && a.sizes() == b.sizes(), InvalidArgument, kName,
           ": sliced W1 needs two samples of the same shape [n, D], got ", a.sizes(), " and ", b.sizes());
  LR_CHECK(directions >= 1, InvalidArgument, kName, ": sliced W1 needs directions >= 1, got ", directions);
  at::Tensor u = at::empty({a.size(1), directions}, at::kDouble).normal_(0, 1, rng);
  u = u / u.norm(2, 0, /*keepdim=*/true);
  const at::Tensor pa = at::matmul(a.to(at::kDouble), u), pb = at::matmul(b.to(at::kDouble), u);
  double total = 0;
  for (int64_t k = 0; k < directions; ++k) total += wasserstein1_1d(pa.select(1, k), pb.select(1, k));
  return total / static_cast<double>(directions);
}

SingularLikelihoodFit singular_likelihood_fit(const at::Tensor& x, const SingularLikelihoodOptions& options,
                                              at::Generator& rng) {
  check_options(options);
  LR_CHECK(x.dim() == 2 && x.size(0) >= 1, InvalidArgument, kName, ": x must be [n, D], got ", x.sizes());
  const int64_t d = x.size(1), r = options.latent_dim, h = options.hidden;
  const double floor = options.sigma_floor < 0 ? options.tau : options.sigma_floor;
  const at::Tensor xd = x.to(at::kDouble);
  // The instance-noise perturbation of the data, drawn once.
  const at::Tensor perturbed = xd + options.tau * at::empty_like(xd).normal_(0, 1, rng);
  std::vector<at::Tensor> params = {
      at::empty({h, r}, at::kDouble).normal_(0, 1, rng), at::zeros({h}, at::kDouble),
      at::empty({d, h}, at::kDouble).normal_(0, 1.0 / std::sqrt(static_cast<double>(h)), rng),
      xd.mean(0).clone(),
      at::scalar_tensor(std::log(std::max(xd.std(0).mean().item<double>(), 1e-3)), at::kDouble)};
  for (auto& p : params) p.set_requires_grad(true);
  auto sigma_of = [&](const at::Tensor& log_excess) { return floor + at::exp(log_excess); };
  std::vector<at::Tensor> first(params.size()), second(params.size());
  for (size_t i = 0; i < params.size(); ++i)
    first[i] = at::zeros_like(params[i]), second[i] = at::zeros_like(params[i]);
  for (int64_t step = 1; step <= options.steps; ++step) {
    const at::Tensor z = at::empty({options.samples, r}, at::kDouble).normal_(0, 1, rng);
    const Generator g{params[0], params[1], params[2], params[3]};
    const at::Tensor loss =
        -logmeanexp_rows(pairwise_log_normal(perturbed, g(z), sigma_of(params[4]))).mean();
    loss.backward();
    at::NoGradGuard no_grad;
    // Adam (Kingma & Ba, 2015), descending.
    const double beta1 = 0.9, beta2 = 0.999;
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor grad = params[i].grad();
      first[i].mul_(beta1).add_(grad, 1 - beta1);
      second[i].mul_(beta2).addcmul_(grad, grad, 1 - beta2);
      const at::Tensor corrected = (first[i] / (1 - std::pow(beta1, step))) /
                                   ((second[i] / (1 - std::pow(beta2, step))).sqrt() + 1e-8);
      params[i].sub_(options.learning_rate * corrected);
      params[i].mutable_grad().zero_();
    }
  }
  SingularLikelihoodFit fit;
  fit.generator = {params[0].detach(), params[1].detach(), params[2].detach(), params[3].detach()};
  fit.sigma = floor + std::exp(params[4].item<double>());
  return fit;
}

void register_singular_likelihood(Registry<EstimatorMethod>& registry) {
  registry.add({kName,
                "Deep generative model X = G(Z) + σε fitted by the sieve MLE on instance-noise-perturbed "
                "data; predict "
                "returns the logmeanexp log-likelihood of each row",
                "Chae, Kim, Kim & Lin, JMLR 24 (2023), arXiv:2105.04046",
                {{"latent_dim", "latent dimension r (default 1)"},
                 {"hidden", "generator MLP width (default 32)"},
                 {"samples", "latent draws M in the logmeanexp likelihood (default 256)"},
                 {"tau", "instance noise added to the data once, >= 0 (default 0.05)"},
                 {"sigma_floor", "sieve bound σ >= floor; negative means tau (default -1)"},
                 {"steps", "Adam steps (default 500)"},
                 {"learning_rate", "Adam step size, > 0 (default 0.01)"}}},
               {[](const Json& options, uint64_t seed) {
                 return std::make_unique<SingularLikelihoodEstimator>(options, seed);
               }});
}

}  // namespace lowrank::kernel_methods
