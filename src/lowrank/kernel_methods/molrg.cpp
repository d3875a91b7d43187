#include "lowrank/kernel_methods/molrg.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/methods.h"
#include "lowrank/linalg/grassmann.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "molrg";

void check_denoiser_inputs(const at::Tensor& x_t, const at::Tensor& bases, double scale, double noise) {
  LR_CHECK(x_t.dim() == 2, InvalidArgument, kName, ": x_t must be [m, n], got ", x_t.sizes());
  LR_CHECK(bases.dim() == 3 && bases.size(1) == x_t.size(1), InvalidArgument, kName,
           ": bases must be [K, n = ", x_t.size(1), ", r], got ", bases.sizes());
  LR_CHECK(std::isfinite(scale) && scale > 0 && std::isfinite(noise) && noise > 0, InvalidArgument, kName,
           ": the scale s and noise γ must be > 0, got ", scale, " and ", noise);
}

// The noise grid: `levels` values geometrically spaced in [lo, hi].
std::vector<double> noise_grid(double lo, double hi, int64_t levels) {
  std::vector<double> grid;
  for (int64_t i = 0; i < levels; ++i) {
    const double fraction = levels == 1 ? 0.0 : static_cast<double>(i) / static_cast<double>(levels - 1);
    grid.push_back(lo * std::pow(hi / lo, fraction));
  }
  return grid;
}

class Molrg final : public Estimator {
 public:
  Molrg(const Json& options, uint64_t seed) : Estimator(options, seed) {
    o_.components = json_get_or<int64_t>(options, "components", 2, kName);
    o_.rank = json_get_or<int64_t>(options, "rank", 2, kName);
    o_.sigma_min = json_get_or<double>(options, "sigma_min", 0.1, kName);
    o_.sigma_max = json_get_or<double>(options, "sigma_max", 2.0, kName);
    o_.noise_levels = json_get_or<int64_t>(options, "noise_levels", 8, kName);
    o_.noise_samples = json_get_or<int64_t>(options, "noise_samples", 4, kName);
    o_.steps = json_get_or<int64_t>(options, "steps", 200, kName);
    o_.learning_rate = json_get_or<double>(options, "learning_rate", 0.05, kName);
    o_.predict_sigma = json_get_or<double>(options, "predict_sigma", 0.5, kName);
    validate(o_);
  }
  std::string_view method() const override { return kName; }

  static void validate(const MolrgOptions& o) {
    LR_CHECK(o.components >= 1, InvalidArgument, kName, ": option \"components\" must be >= 1, got ",
             o.components);
    LR_CHECK(o.rank >= 1, InvalidArgument, kName, ": option \"rank\" must be >= 1, got ", o.rank);
    LR_CHECK(std::isfinite(o.sigma_min) && o.sigma_min > 0 && std::isfinite(o.sigma_max) &&
                 o.sigma_max >= o.sigma_min,
             InvalidArgument, kName,
             ": options \"sigma_min\" and \"sigma_max\" must satisfy 0 < sigma_min <= sigma_max, got ",
             o.sigma_min, " and ", o.sigma_max);
    LR_CHECK(o.noise_levels >= 1 && o.noise_samples >= 1, InvalidArgument, kName,
             ": options \"noise_levels\" and \"noise_samples\" must be >= 1, got ", o.noise_levels, " and ",
             o.noise_samples);
    LR_CHECK(o.steps >= 0, InvalidArgument, kName, ": option \"steps\" must be >= 0, got ", o.steps);
    LR_CHECK(std::isfinite(o.learning_rate) && o.learning_rate > 0, InvalidArgument, kName,
             ": option \"learning_rate\" must be > 0, got ", o.learning_rate);
    LR_CHECK(std::isfinite(o.predict_sigma) && o.predict_sigma > 0, InvalidArgument, kName,
             ": option \"predict_sigma\" must be > 0, got ", o.predict_sigma);
  }

 protected:
  void fit_impl(const Dataset& data) override {
    at::Generator generator = at::detail::createCPUGenerator(seed());
    MolrgFit fit = molrg_fit(data.x, o_, generator);
    bases_ = fit.bases;
    report_ = {
        {"components", o_.components}, {"rank", o_.rank}, {"loss", fit.loss.empty() ? 0.0 : fit.loss.back()}};
  }
  // The posterior mean at noise level predict_sigma (s = 1): x̂₀ for each row of x, [m, n].
  at::Tensor predict_impl(const at::Tensor& x) const override {
    return molrg_denoise(x, bases_, 1.0, o_.predict_sigma);
  }
  std::vector<NamedTensor> state() const override { return {{"bases", bases_}}; }
  void restore(const SafetensorsFile& file) override {
    bases_ = expect_state(file, "bases");
    LR_CHECK(bases_.dim() == 3 && bases_.size(1) == input_dim(), Corruption, file.path().string(), ": bases ",
             bases_.sizes(), " do not fit the input dimension ", input_dim());
  }

 private:
  MolrgOptions o_;
  at::Tensor bases_;
};

}  // namespace

at::Tensor molrg_weights(const at::Tensor& x_t, const at::Tensor& bases, double scale, double noise) {
  check_denoiser_inputs(x_t, bases, scale, noise);
  const double s2 = scale * scale, g2 = noise * noise;
  const at::Tensor energy = at::matmul(x_t.unsqueeze(0), bases).pow(2).sum(-1).t();  // ‖U_kᵀx‖² [m, K]
  return at::softmax(energy * (s2 / (2 * g2 * (s2 + g2))), 1);
}

at::Tensor molrg_denoise(const at::Tensor& x_t, const at::Tensor& bases, double scale, double noise) {
  const at::Tensor weights = molrg_weights(x_t, bases, scale, noise);  // [m, K]
  const at::Tensor projected =
      at::matmul(at::matmul(x_t.unsqueeze(0), bases), bases.transpose(1, 2));  // U_kU_kᵀx [K, m, n]
  const double shrink = scale / (scale * scale + noise * noise);
  return shrink * (weights.t().unsqueeze(-1) * projected).sum(0);
}

MolrgFit molrg_fit(const at::Tensor& x0, const MolrgOptions& options, at::Generator& generator) {
  Molrg::validate(options);
  LR_CHECK(x0.dim() == 2 && x0.size(0) >= 1, InvalidArgument, kName, ": x must be [N, n], got ", x0.sizes());
  LR_CHECK(options.rank <= x0.size(1), InvalidArgument, kName, ": option \"rank\" = ", options.rank,
           " exceeds the input dimension ", x0.size(1));
  const at::Tensor x = x0.to(at::kDouble);
  const int64_t count = x.size(0), dim = x.size(1);
  MolrgFit fit;
  fit.bases = linalg::qr_retraction(
      at::empty({options.components, dim, options.rank}, at::kDouble).normal_(0, 1, generator));
  const std::vector<double> sigmas = noise_grid(options.sigma_min, options.sigma_max, options.noise_levels);
  const double draws = static_cast<double>(sigmas.size()) * static_cast<double>(options.noise_samples);
  for (int64_t step = 0; step < options.steps; ++step) {
    at::Tensor bases = fit.bases.clone().set_requires_grad(true);
    at::Tensor loss = at::zeros({}, at::kDouble);
    for (const double sigma : sigmas) {
      for (int64_t sample = 0; sample < options.noise_samples; ++sample) {
        const at::Tensor noisy = x + sigma * at::empty({count, dim}, at::kDouble).normal_(0, 1, generator);
        loss = loss + (molrg_denoise(noisy, bases, 1.0, sigma) - x).pow(2).sum(1).mean();
      }
    }
    loss = loss / draws;
    loss.backward();
    fit.loss.push_back(loss.item<double>());
    at::NoGradGuard no_grad;
    // A Euclidean gradient step, then back onto the Stiefel manifold by QR.
    fit.bases = linalg::qr_retraction(fit.bases - options.learning_rate * bases.grad());
  }
  return fit;
}

double subspace_distance(const at::Tensor& u, const at::Tensor& v) {
  LR_CHECK(u.dim() == 2 && u.sizes() == v.sizes(), InvalidArgument, kName,
           ": subspace distance needs two [n, r] bases, got ", u.sizes(), " and ", v.sizes());
  return (at::matmul(u, u.t()) - at::matmul(v, v.t())).norm().item<double>();
}

void register_molrg(Registry<EstimatorMethod>& registry) {
  registry.add({kName,
                "MoLRG: posterior-mean denoiser of a mixture of low-rank Gaussians, bases trained on the "
                "denoising loss "
                "by gradient descent with QR retraction; fit clean data, predict gives the denoised x at "
                "predict_sigma",
                "Wang, Zhang, Zhang, Chen, Ma & Qu, 2024, arXiv:2409.02426",
                {{"components", "number of components K (default 2)"},
                 {"rank", "rank r of each component (default 2)"},
                 {"sigma_min", "smallest training noise level γ > 0 (default 0.1)"},
                 {"sigma_max", "largest training noise level (default 2)"},
                 {"noise_levels", "geometric grid size between sigma_min and sigma_max (default 8)"},
                 {"noise_samples", "noise draws per level and step (default 4)"},
                 {"steps", "gradient steps (default 200)"},
                 {"learning_rate", "gradient step size > 0 (default 0.05)"},
                 {"predict_sigma", "noise level γ that predict denoises at, s = 1 (default 0.5)"}}},
               {[](const Json& options, uint64_t seed) { return std::make_unique<Molrg>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
