#include "lowrank/linalg/random_features.h"

#include <cmath>

#include "lowrank/core/error.h"

namespace lowrank::linalg {
namespace {

void check_map(const at::Tensor& x, const at::Tensor& g, const char* what) {
  LR_CHECK(g.dim() == 2, InvalidArgument, what, ": the projection must be 2-D [m, d], got ", g.sizes());
  LR_CHECK(x.dim() >= 1 && x.size(-1) == g.size(1), InvalidArgument, what, ": inputs of width ",
           x.dim() >= 1 ? x.size(-1) : 0, " do not match the projection's ", g.size(1));
}

}  // namespace

at::Tensor relu_features(const at::Tensor& x, const at::Tensor& g) {
  check_map(x, g, "relu_features");
  return at::relu(at::linear(x, g)) / std::sqrt(static_cast<double>(g.size(0)));
}

at::Tensor fourier_features(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  check_map(x, w, "fourier_features");
  LR_CHECK(b.dim() == 1 && b.size(0) == w.size(0), InvalidArgument,
           "fourier_features: the phases must be [m] = [", w.size(0), "], got ", b.sizes());
  return at::cos(at::linear(x, w, b)) * std::sqrt(2.0 / static_cast<double>(w.size(0)));
}

at::Tensor universal_features(const at::Tensor& x, const at::Tensor& g, const at::Tensor& xi) {
  check_map(x, g, "universal_features");
  LR_CHECK(x.dim() == 2, InvalidArgument, "universal_features: inputs must be [n, d], got ", x.sizes());
  LR_CHECK(xi.dim() == 1 && xi.size(0) == g.size(0), InvalidArgument,
           "universal_features: the frequencies must be [m] = [", g.size(0), "], got ", xi.sizes());
  const auto complex_type = x.scalar_type() == at::kFloat ? at::kComplexFloat : at::kComplexDouble;
  // a = √(iξ): a² = iξ, the identity's c.
  const at::Tensor a = at::sqrt(xi.to(complex_type) * c10::Scalar(c10::complex<double>(0, 1)));
  const at::Tensor projected = at::linear(x, g).to(complex_type);           // [n, m] gᵀx
  const at::Tensor half_norm = (x * x).sum(-1, true).to(complex_type) / 2;  // [n, 1]
  const at::Tensor exponent = projected * a - half_norm * (a * a);
  return at::exp(exponent) / std::sqrt(static_cast<double>(g.size(0)));
}

}  // namespace lowrank::linalg
