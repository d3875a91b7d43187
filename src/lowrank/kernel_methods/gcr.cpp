#include "lowrank/kernel_methods/gcr.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/methods.h"
#include "lowrank/linalg/grassmann.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "gcr";

void check_inputs(const at::Tensor& x, const at::Tensor& bases) {
  LR_CHECK(x.dim() == 2, InvalidArgument, kName, ": x must be [n, d], got ", x.sizes());
  LR_CHECK(bases.dim() == 3 && bases.size(1) == x.size(1) && bases.size(2) <= bases.size(1), InvalidArgument,
           kName, ": bases must be [C, d = ", x.size(1), ", k <= d], got ", bases.sizes());
}

at::Tensor unit_rows(const at::Tensor& x) {
  return x / x.norm(2, 1, true).clamp_min(1e-300);
}

// x̂ S_i for every class: [C, n, k].
at::Tensor class_projections(const at::Tensor& x, const at::Tensor& bases) {
  return at::matmul(unit_rows(x).unsqueeze(0), bases);
}

at::Tensor integer_labels(const at::Tensor& y) {
  LR_CHECK(y.defined() && y.dim() == 1, InvalidArgument, kName, ": fit needs integer class labels y [n]");
  LR_CHECK(at::round(y).eq(y).all().item<bool>() && y.ge(0).all().item<bool>(), InvalidArgument, kName,
           ": the labels y must be integers >= 0, got values from ", y.min().item<double>(), " to ",
           y.max().item<double>());
  return y.to(at::kLong);
}

class Gcr final : public Estimator {
 public:
  Gcr(const Json& options, uint64_t seed) : Estimator(options, seed) {
    o_.subspace_dim = json_get_or<int64_t>(options, "subspace_dim", 4, kName);
    o_.gamma = json_get_or<double>(options, "gamma", 25.0, kName);
    o_.learning_rate = json_get_or<double>(options, "learning_rate", 0.1, kName);
    o_.momentum = json_get_or<double>(options, "momentum", 0.9, kName);
    o_.epochs = json_get_or<int64_t>(options, "epochs", 50, kName);
    o_.batch_size = json_get_or<int64_t>(options, "batch_size", 0, kName);
    o_.reorth_every = json_get_or<int64_t>(options, "reorth_every", 5, kName);
    validate(o_);
  }
  std::string_view method() const override { return kName; }

  static void validate(const GcrOptions& o) {
    LR_CHECK(o.subspace_dim >= 1, InvalidArgument, kName, ": option \"subspace_dim\" must be >= 1, got ",
             o.subspace_dim);
    LR_CHECK(std::isfinite(o.gamma) && o.gamma > 0, InvalidArgument, kName,
             ": option \"gamma\" must be > 0, got ", o.gamma);
    LR_CHECK(std::isfinite(o.learning_rate) && o.learning_rate > 0, InvalidArgument, kName,
             ": option \"learning_rate\" must be > 0, got ", o.learning_rate);
    LR_CHECK(std::isfinite(o.momentum) && o.momentum >= 0 && o.momentum < 1, InvalidArgument, kName,
             ": option \"momentum\" must be in [0, 1), got ", o.momentum);
    LR_CHECK(o.epochs >= 0, InvalidArgument, kName, ": option \"epochs\" must be >= 0, got ", o.epochs);
    LR_CHECK(o.batch_size >= 0, InvalidArgument, kName, ": option \"batch_size\" must be >= 0, got ",
             o.batch_size);
    LR_CHECK(o.reorth_every >= 1, InvalidArgument, kName, ": option \"reorth_every\" must be >= 1, got ",
             o.reorth_every);
  }

 protected:
  void fit_impl(const Dataset& data) override {
    at::Generator generator = at::detail::createCPUGenerator(seed());
    const at::Tensor labels = integer_labels(data.y);
    GcrFit fit = gcr_fit(data.x, labels, o_, generator);
    bases_ = fit.bases;
    const double accuracy =
        gcr_logits(data.x, bases_, o_.gamma).argmax(1).eq(labels).to(at::kDouble).mean().item<double>();
    report_ = {{"classes", bases_.size(0)},
               {"loss", fit.loss.empty() ? gcr_loss(data.x, labels, bases_, o_.gamma).item<double>()
                                         : fit.loss.back()},
               {"train_accuracy", accuracy},
               {"orthonormality_error", gcr_orthonormality_error(bases_)}};
  }
  at::Tensor predict_impl(const at::Tensor& x) const override {
    return gcr_logits(x, bases_, o_.gamma).argmax(1).to(at::kDouble);
  }
  std::vector<NamedTensor> state() const override { return {{"bases", bases_}}; }
  void restore(const SafetensorsFile& file) override {
    bases_ = expect_state(file, "bases");
    LR_CHECK(bases_.dim() == 3 && bases_.size(1) == input_dim(), Corruption, file.path().string(), ": bases ",
             bases_.sizes(), " do not fit the input dimension ", input_dim());
  }

 private:
  GcrOptions o_;
  at::Tensor bases_;
};

}  // namespace

at::Tensor gcr_logits(const at::Tensor& x, const at::Tensor& bases, double gamma) {
  check_inputs(x, bases);
  return gamma * class_projections(x, bases).norm(2, -1).t();
}

at::Tensor gcr_loss(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& bases, double gamma) {
  const at::Tensor log_p = at::log_softmax(gcr_logits(x, bases, gamma), 1);
  return -log_p.gather(1, labels.to(at::kLong).unsqueeze(1)).mean();
}

at::Tensor gcr_euclidean_gradient(const at::Tensor& x, const at::Tensor& labels, const at::Tensor& bases,
                                  double gamma) {
  check_inputs(x, bases);
  const int64_t n = x.size(0), classes = bases.size(0);
  LR_CHECK(labels.dim() == 1 && labels.size(0) == n, InvalidArgument, kName, ": labels must be [", n,
           "], got ", labels.sizes());
  const at::Tensor unit = unit_rows(x);
  const at::Tensor proj = at::matmul(unit.unsqueeze(0), bases);  // [C, n, k]
  const at::Tensor radius = proj.norm(2, -1);                    // [C, n]
  const at::Tensor p = at::softmax(gamma * radius.t(), 1);       // [n, C]
  const at::Tensor delta = p - at::one_hot(labels.to(at::kLong), classes).to(p.scalar_type());
  // (γ/n) Σ_b δ_bi / r_bi · x̂_b (x̂_bᵀ S_i); a zero radius has a zero projection, so clamping is safe.
  const at::Tensor coefficient = (gamma / static_cast<double>(n)) * delta.t() / radius.clamp_min(1e-300);
  return at::matmul(unit.t().unsqueeze(0), coefficient.unsqueeze(-1) * proj);  // [C, d, k]
}

at::Tensor gcr_rsgd_step(const at::Tensor& bases, const at::Tensor& euclidean_gradient, at::Tensor& buffer,
                         const GcrOptions& options, int64_t step) {
  // rsgd.py: the buffer holds the Euclidean gradient's momentum; only its tangent part moves S.
  if (!buffer.defined() || options.momentum == 0) {
    buffer = euclidean_gradient.clone();
  } else {
    buffer.mul_(options.momentum).add_(euclidean_gradient);
  }
  const at::Tensor riemannian = linalg::grassmann_tangent_projection(bases, buffer);
  at::Tensor next = linalg::grassmann_geodesic_step(bases, riemannian, -options.learning_rate);
  if (step % options.reorth_every == 0) next = linalg::qr_retraction(next);
  return next;
}

GcrFit gcr_fit(const at::Tensor& x, const at::Tensor& labels, const GcrOptions& options,
               at::Generator& generator) {
  Gcr::validate(options);
  LR_CHECK(x.dim() == 2 && x.size(0) >= 1, InvalidArgument, kName, ": x must be [n, d], got ", x.sizes());
  LR_CHECK(options.subspace_dim <= x.size(1), InvalidArgument, kName,
           ": option \"subspace_dim\" = ", options.subspace_dim, " exceeds the input dimension ", x.size(1));
  LR_CHECK(labels.dim() == 1 && labels.size(0) == x.size(0), InvalidArgument, kName, ": labels must be [",
           x.size(0), "], got ", labels.sizes());
  const at::Tensor xd = x.to(at::kDouble), y = labels.to(at::kLong);
  const int64_t n = xd.size(0), d = xd.size(1);
  const int64_t classes = y.max().item<int64_t>() + 1;
  LR_CHECK(classes >= 2, InvalidArgument, kName, ": fit needs at least 2 classes, got ", classes);
  // grassmann_head.py's init: Q of a standard normal matrix per class.
  GcrFit fit;
  fit.bases = linalg::qr_retraction(
      at::empty({classes, d, options.subspace_dim}, at::kDouble).normal_(0, 1, generator));
  const int64_t batch = options.batch_size > 0 ? std::min(options.batch_size, n) : n;
  at::Tensor buffer;
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    const at::Tensor order = batch < n ? at::randperm(n, generator, at::kLong) : at::arange(n, at::kLong);
    for (int64_t start = 0; start < n; start += batch) {
      const at::Tensor index = order.slice(0, start, std::min(start + batch, n));
      const at::Tensor gradient = gcr_euclidean_gradient(xd.index_select(0, index), y.index_select(0, index),
                                                         fit.bases, options.gamma);
      fit.bases = gcr_rsgd_step(fit.bases, gradient, buffer, options, step++);
    }
    fit.loss.push_back(gcr_loss(xd, y, fit.bases, options.gamma).item<double>());
  }
  return fit;
}

double gcr_orthonormality_error(const at::Tensor& bases) {
  LR_CHECK(bases.dim() == 3, InvalidArgument, kName, ": bases must be [C, d, k], got ", bases.sizes());
  const at::Tensor gram = at::matmul(bases.transpose(1, 2), bases);
  return (gram - at::eye(bases.size(2), bases.options())).abs().max().item<double>();
}

void register_gcr(Registry<EstimatorMethod>& registry) {
  registry.add(
      {kName,
       "GCR: Grassmann class representation, logits γ‖S_iᵀx̂‖ over per-class orthonormal bases trained by "
       "Riemannian SGD with momentum along geodesics; fit labels, predict gives the class",
       "Wang, Li & Zhang, 2023, ICCV, arXiv:2308.01547 (code: github.com/innerlee/gcr)",
       {{"subspace_dim", "dimension k of each class subspace (default 4)"},
        {"gamma", "logit scale γ > 0 (default 25)"},
        {"learning_rate", "geodesic step size η > 0 (default 0.1)"},
        {"momentum", "momentum μ in [0, 1) on the Euclidean gradient (default 0.9)"},
        {"epochs", "passes over the data (default 50)"},
        {"batch_size", "mini-batch size (default 0: full batch)"},
        {"reorth_every", "re-orthonormalise by QR every this many steps (default 5)"}}},
      {[](const Json& options, uint64_t seed) { return std::make_unique<Gcr>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
