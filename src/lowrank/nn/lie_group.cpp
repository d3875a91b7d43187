// GL⁺(2) and SL(2): the polar chart and Haar sampling (lie_group.h).
#include "lowrank/nn/lie_group.h"

#include <cmath>
#include <numbers>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/core/error.h"

namespace lowrank::nn {

namespace {

// [..., 2, 2] rotation by angle θ [...].
at::Tensor rotation(const at::Tensor& theta) {
  const at::Tensor c = at::cos(theta), s = at::sin(theta);
  return at::stack({at::stack({c, -s}, -1), at::stack({s, c}, -1)}, -2);
}

// θ of the rotation factor of g = P·R(θ).
at::Tensor rotation_angle_of(const at::Tensor& g) {
  const at::Tensor a = g.select(-2, 0).select(-1, 0), b = g.select(-2, 0).select(-1, 1);
  const at::Tensor c = g.select(-2, 1).select(-1, 0), d = g.select(-2, 1).select(-1, 1);
  return at::atan2(c - b, a + d);
}

void check_square2(const at::Tensor& m, const char* what) {
  LR_CHECK(m.dim() >= 2 && m.size(-1) == 2 && m.size(-2) == 2, InvalidArgument, what,
           " expects matrices [..., 2, 2], got ", m.sizes());
}

// f applied to the eigenvalues of symmetric matrices [..., 2, 2]: V f(Λ) Vᵀ.
template <typename F>
at::Tensor symmetric_function(const at::Tensor& s, F f) {
  const auto [e, v] = at::linalg_eigh(s);
  return at::matmul(v * f(e).unsqueeze(-2), v.transpose(-1, -2));
}

}  // namespace

namespace {
// g = P·R(θ), with θ kept for the chart (float64).
struct PolarWithAngle {
  PolarFactors factors;
  at::Tensor theta;
};
PolarWithAngle polar_with_angle(const at::Tensor& g_in) {
  check_square2(g_in, "left_polar");
  const at::Tensor g = g_in.to(at::kDouble);
  LR_CHECK(at::all(at::linalg_det(g) > 0).item<bool>(), InvalidArgument,
           "left_polar: every matrix must have a positive determinant (GL+(2))");
  // In 2-D the rotation has a closed form: P = g R(θ)ᵀ is symmetric exactly when
  // θ = atan2(g₁₀ − g₀₁, g₀₀ + g₁₁) (for det g > 0 this also makes P positive definite).
  at::Tensor theta = rotation_angle_of(g);
  const at::Tensor r = rotation(theta);
  const at::Tensor p = at::matmul(g, r.transpose(-1, -2));
  return {{0.5 * (p + p.transpose(-1, -2)), r}, std::move(theta)};
}
}  // namespace

PolarFactors left_polar(const at::Tensor& g) {
  return polar_with_angle(g).factors;
}

at::Tensor lie_chart(const at::Tensor& g) {
  const auto [f, theta] = polar_with_angle(g);
  const at::Tensor log_p = symmetric_function(f.p, [](const at::Tensor& e) { return at::log(e); });
  // log R = θ J, J = [[0, −1], [1, 0]], θ ∈ (−π, π].
  const at::Tensor zero = at::zeros_like(theta);
  const at::Tensor log_r = at::stack({at::stack({zero, -theta}, -1), at::stack({theta, zero}, -1)}, -2);
  return log_p + log_r;
}

at::Tensor lie_chart_inverse(const at::Tensor& x_in) {
  check_square2(x_in, "lie_chart_inverse");
  const at::Tensor x = x_in.to(at::kDouble);
  const at::Tensor s = 0.5 * (x + x.transpose(-1, -2));
  const at::Tensor theta = 0.5 * (x.select(-2, 1).select(-1, 0) - x.select(-2, 0).select(-1, 1));
  return at::matmul(symmetric_function(s, [](const at::Tensor& e) { return at::exp(e); }), rotation(theta));
}

at::Tensor sl2_kak_t(const at::Tensor& g) {
  check_square2(g, "sl2_kak_t");
  const at::Tensor norm2 = g.to(at::kDouble).pow(2).sum({-2, -1});
  return 0.5 * at::acosh(at::clamp_min(norm2 / 2.0, 1.0));
}

at::Tensor sample_sl2_haar(int64_t n, double t_max, uint64_t seed) {
  LR_CHECK(n >= 1, InvalidArgument, "Haar sampling needs n >= 1, got ", n);
  LR_CHECK(t_max > 0 && t_max < 20, InvalidArgument, "Haar sampling truncation T = ", t_max,
           " must lie in (0, 20) (the singular values are e^T and e^-T)");
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor phi = at::rand({n}, gen, opts) * (2 * std::numbers::pi);
  const at::Tensor psi = at::rand({n}, gen, opts) * (2 * std::numbers::pi);
  // t from the density ∝ sinh(2t) on [0, T]: CDF (cosh 2t − 1)/(cosh 2T − 1), inverted.
  const at::Tensor u = at::rand({n}, gen, opts);
  const at::Tensor t = 0.5 * at::acosh(1 + u * (std::cosh(2 * t_max) - 1));
  const at::Tensor zero = at::zeros_like(t);
  const at::Tensor a = at::stack({at::stack({at::exp(t), zero}, -1), at::stack({zero, at::exp(-t)}, -1)}, -2);
  return at::matmul(at::matmul(rotation(phi), a), rotation(psi));
}

at::Tensor sample_gl2_haar(int64_t n, double t_max, double log_scale_max, uint64_t seed) {
  LR_CHECK(log_scale_max >= 0, InvalidArgument, "GL+(2) log-scale bound ", log_scale_max, " must be >= 0");
  const at::Tensor g = sample_sl2_haar(n, t_max, seed);
  at::Generator gen = at::detail::createCPUGenerator(seed ^ 0x9E3779B97F4A7C15ull);
  const at::Tensor s = (at::rand({n}, gen, at::TensorOptions().dtype(at::kDouble)) * 2 - 1) * log_scale_max;
  return g * at::exp(s).view({n, 1, 1});
}

namespace {
// The k×k window's offsets δ = (column − r, row − r) / r, [k, k, 2].
at::Tensor window_offsets(int64_t k) {
  const int64_t r = k / 2;
  const at::Tensor steps = (at::arange(k, at::kDouble) - r) / r;
  return at::stack({steps.view({1, k}).expand({k, k}), steps.view({k, 1}).expand({k, k})}, -1);
}
}  // namespace

KernelMlp KernelMlp::random(int64_t in, int64_t hidden, int64_t out, int64_t fan_in, uint64_t seed,
                            at::ScalarType dtype) {
  LR_CHECK(in >= 1 && hidden >= 1 && out >= 1 && fan_in >= 1, InvalidArgument,
           "kernel MLP sizes must be positive, got ", in, ", ", hidden, ", ", out, ", fan_in ", fan_in);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  auto uniform = [&](at::IntArrayRef shape, double bound) {
    return ((at::rand(shape, gen, opts) * 2 - 1) * bound).to(dtype);
  };
  KernelMlp k;
  k.w1 = uniform({hidden, in}, 1.0 / static_cast<double>(in));
  k.b1 = uniform({hidden}, 1.0 / std::sqrt(static_cast<double>(in)));
  k.w2 = uniform({out, hidden},
                 std::sqrt(6.0 / static_cast<double>(hidden)) / std::sqrt(static_cast<double>(fan_in)));
  k.b2 = at::zeros({out}, at::TensorOptions().dtype(dtype));
  return k;
}

at::Tensor KernelMlp::forward(const at::Tensor& coords) const {
  return at::linear(at::sin(at::linear(coords, w1, b1) * w0), w2, b2);
}

// A conv of type Conv with an MLP kernel on `coords` inputs: the shared body of the two layers'
// constructors. InvalidArgument, naming `what`, for bad channels or kernel size.
template <typename Conv>
Conv make_mlp_conv(const char* what, int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                   int64_t coords, int64_t hidden, uint64_t seed, at::ScalarType dtype) {
  LR_CHECK(in_channels >= 1 && out_channels >= 1, InvalidArgument, what, " channels must be positive, got ",
           in_channels, " -> ", out_channels);
  LR_CHECK(kernel_size >= 3 && kernel_size % 2 == 1, InvalidArgument, what, " kernel size ", kernel_size,
           " must be odd and at least 3");
  Conv conv;
  conv.in_channels = in_channels;
  conv.out_channels = out_channels;
  conv.kernel_size = kernel_size;
  conv.kernel = KernelMlp::random(coords, hidden, out_channels * in_channels,
                                  in_channels * kernel_size * kernel_size, seed, dtype);
  return conv;
}

LiftingConv2d LiftingConv2d::random(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                                    int64_t hidden, uint64_t seed, at::ScalarType dtype) {
  return make_mlp_conv<LiftingConv2d>("lifting conv", in_channels, out_channels, kernel_size, 2, hidden, seed,
                                      dtype);
}

at::Tensor LiftingConv2d::kernels(const at::Tensor& g) const {
  check_square2(g, "LiftingConv2d");
  LR_CHECK(g.dim() == 3, InvalidArgument, "LiftingConv2d expects group elements [N, 2, 2], got ", g.sizes());
  const int64_t k = kernel_size, n = g.size(0);
  const at::ScalarType dtype = kernel.w1.scalar_type();
  const at::Tensor delta = window_offsets(k);
  const at::Tensor gd = g.to(at::kDouble);
  const at::Tensor g_inv = at::linalg_inv(gd);  // [N, 2, 2]
  // g⁻¹ δ for every n: [N, k, k, 2].
  const at::Tensor coords = at::einsum("nab,ijb->nija", {g_inv, delta});
  const at::Tensor values = kernel.forward(coords.to(dtype));  // [N, k, k, out·in]
  const at::Tensor inv_det = (1.0 / at::linalg_det(gd).abs()).to(dtype).view({n, 1, 1, 1, 1});
  return values.view({n, k, k, out_channels, in_channels}).permute({0, 3, 4, 1, 2}) * inv_det;
}

at::Tensor LiftingConv2d::forward(const at::Tensor& x, const at::Tensor& g) const {
  LR_CHECK(x.dim() == 4 && x.size(1) == in_channels, InvalidArgument, "LiftingConv2d expects [B, ",
           in_channels, ", H, W], got ", x.sizes());
  const at::Tensor w = kernels(g);  // [N, O, C, k, k]
  const int64_t n = w.size(0);
  // All group elements in one conv: N·O output channels, then [B, N, O, H, W] → [B, O, N, H, W].
  const at::Tensor y = at::conv2d(x, w.reshape({n * out_channels, in_channels, kernel_size, kernel_size}), {},
                                  1, kernel_size / 2);
  return y.view({x.size(0), n, out_channels, x.size(2), x.size(3)}).transpose(1, 2);
}

GroupConv2d GroupConv2d::random(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                                int64_t hidden, uint64_t seed, at::ScalarType dtype) {
  return make_mlp_conv<GroupConv2d>("group conv", in_channels, out_channels, kernel_size, 6, hidden, seed,
                                    dtype);
}

at::Tensor GroupConv2d::forward(const at::Tensor& x, const at::Tensor& g, const at::Tensor& h) const {
  check_square2(g, "GroupConv2d");
  check_square2(h, "GroupConv2d");
  const int64_t m = g.size(0), n = h.size(0), k = kernel_size, o = out_channels, c = in_channels;
  LR_CHECK(x.dim() == 5 && x.size(1) == c && x.size(2) == m, InvalidArgument, "GroupConv2d expects [B, ", c,
           ", ", m, ", H, W] for ", m, " input elements, got ", x.sizes());
  const at::ScalarType dtype = kernel.w1.scalar_type();
  const at::Tensor hd = h.to(at::kDouble), h_inv = at::linalg_inv(hd);
  // Spatial part h_n⁻¹δ [N, k, k, 2]; group part ξ⁻¹(h_n⁻¹ g_m) [N, M, 4].
  const at::Tensor spatial = at::einsum("nab,ijb->nija", {h_inv, window_offsets(k)});
  const at::Tensor rel =
      lie_chart(at::matmul(h_inv.unsqueeze(1), g.to(at::kDouble).unsqueeze(0))).reshape({n, m, 4});
  // Inputs [N, M, k, k, 6] → kernel values [N, M, k, k, O·C].
  const at::Tensor coords = at::cat(
      {spatial.unsqueeze(1).expand({n, m, k, k, 2}), rel.view({n, m, 1, 1, 4}).expand({n, m, k, k, 4})}, -1);
  at::Tensor w = kernel.forward(coords.to(dtype)).view({n, m, k, k, o, c});
  const at::Tensor scale = (1.0 / (at::linalg_det(hd).abs() * static_cast<double>(m))).to(dtype);
  w = w * scale.view({n, 1, 1, 1, 1, 1});
  // One conv: output channel (n, o), input channel (c, m), as x's [B, C, M] flattens.
  w = w.permute({0, 4, 5, 1, 2, 3}).reshape({n * o, c * m, k, k});
  const at::Tensor y = at::conv2d(x.reshape({x.size(0), c * m, x.size(3), x.size(4)}), w, {}, 1, k / 2);
  return y.view({x.size(0), n, o, x.size(3), x.size(4)}).transpose(1, 2);
}

}  // namespace lowrank::nn
