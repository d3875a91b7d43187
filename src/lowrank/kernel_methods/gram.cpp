#include "lowrank/kernel_methods/gram.h"

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"

namespace lowrank::kernel_methods {

const std::vector<std::string>& kernel_names() {
  static const std::vector<std::string> names = {"rbf", "laplace", "matern", "arccos0", "arccos1"};
  return names;
}

void validate(const KernelSpec& spec, std::string_view what) {
  const auto& names = kernel_names();
  if (std::find(names.begin(), names.end(), spec.name) == names.end()) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    throw InvalidArgument(str(what, ": unknown kernel \"", spec.name, "\" (known: ", known, ")"));
  }
  LR_CHECK(std::isfinite(spec.bandwidth) && spec.bandwidth > 0, InvalidArgument, what,
           ": bandwidth must be > 0, got ", spec.bandwidth);
  if (spec.name == "matern") {
    LR_CHECK(spec.nu == 0.5 || spec.nu == 1.5 || spec.nu == 2.5, InvalidArgument, what,
             ": nu must be 0.5, 1.5 or 2.5, got ", spec.nu);
  }
}

KernelSpec kernel_spec_from_options(const Json& options, std::string_view what) {
  KernelSpec spec;
  spec.name = json_get_or<std::string>(options, "kernel", spec.name, what);
  spec.bandwidth = json_get_or<double>(options, "bandwidth", spec.bandwidth, what);
  spec.nu = json_get_or<double>(options, "nu", spec.nu, what);
  validate(spec, what);
  return spec;
}

at::Tensor squared_distances(const at::Tensor& x, const at::Tensor& y) {
  LR_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(1) == y.size(1), InvalidArgument,
           "gram: inputs must be [n, d] and [m, d] with the same d, got ", x.sizes(), " and ", y.sizes());
  const at::Tensor d2 = (x * x).sum(1, true) - 2 * at::matmul(x, y.t()) + (y * y).sum(1).unsqueeze(0);
  return d2.clamp_min(0);
}

at::Tensor arccos_from_gram(const at::Tensor& cross, const at::Tensor& diag_x, const at::Tensor& diag_y,
                            int degree) {
  LR_CHECK(degree == 0 || degree == 1, InvalidArgument, "arccos kernel: degree must be 0 or 1, got ", degree);
  const at::Tensor norms = at::sqrt(diag_x.unsqueeze(1) * diag_y.unsqueeze(0));
  // A zero input has no angle; its cosine is taken as 1 (θ = 0), which gives arccos1 = 0 anyway.
  const at::Tensor cosine =
      at::where(norms.gt(0), cross / norms.clamp_min(1e-300), at::ones_like(cross)).clamp(-1.0, 1.0);
  const at::Tensor theta = at::acos(cosine);
  constexpr double pi = std::numbers::pi;
  if (degree == 0) return 1.0 - theta / pi;
  return norms * (at::sin(theta) + (pi - theta) * cosine) / pi;
}

at::Tensor gram(const KernelSpec& spec, const at::Tensor& x, const at::Tensor& y) {
  validate(spec, "gram");
  const double h = spec.bandwidth;
  if (spec.name == "arccos0" || spec.name == "arccos1") {
    LR_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(1) == y.size(1), InvalidArgument,
             "gram: inputs must be [n, d] and [m, d] with the same d, got ", x.sizes(), " and ", y.sizes());
    return arccos_from_gram(at::matmul(x, y.t()), (x * x).sum(1), (y * y).sum(1),
                            spec.name == "arccos0" ? 0 : 1);
  }
  if (spec.name == "laplace") {
    LR_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(1) == y.size(1), InvalidArgument,
             "gram: inputs must be [n, d] and [m, d] with the same d, got ", x.sizes(), " and ", y.sizes());
    return at::exp(-at::cdist(x, y, 1.0) / h);
  }
  const at::Tensor d2 = squared_distances(x, y);
  if (spec.name == "rbf") return at::exp(-d2 / (2 * h * h));
  // Matérn: r itself, from the differences (compute mode 2 = no matmul expansion): √ of the expanded
  // form's cancellation error (~1e-16·‖x‖²) would put an error of ~1e-8 into e^{−r} near r = 0.
  const at::Tensor r = at::cdist(x, y, 2.0, /*compute_mode=*/2) / h;
  if (spec.nu == 0.5) return at::exp(-r);
  if (spec.nu == 1.5) {
    const at::Tensor s = std::sqrt(3.0) * r;
    return (1 + s) * at::exp(-s);
  }
  const at::Tensor s = std::sqrt(5.0) * r;
  return (1 + s + s * s / 3) * at::exp(-s);
}

}  // namespace lowrank::kernel_methods
