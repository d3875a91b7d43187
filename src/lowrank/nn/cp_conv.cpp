// A-priori CP convolutions (cp_conv.h).
#include "lowrank/nn/cp_conv.h"

#include <cmath>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/linalg/cp_als.h"

namespace lowrank::nn {

int64_t CpConv2d::parameter_count() const {
  return a.numel() + b.numel() + c.numel() + d.numel() + (bias.defined() ? bias.numel() : 0);
}

CpConv2d CpConv2d::random(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t rank,
                          uint64_t seed, bool with_bias, at::ScalarType dtype) {
  LR_CHECK(in_channels >= 1 && out_channels >= 1, InvalidArgument, "CP conv channels must be positive, got ",
           in_channels, " -> ", out_channels);
  LR_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, InvalidArgument, "CP conv kernel size ", kernel_size,
           " must be odd and positive (\"same\" padding)");
  LR_CHECK(rank >= 1, InvalidArgument, "CP conv rank ", rank, " must be at least 1");
  // K = Σ_r of R products of four independent U(−β, β) factors: Var K = R·(β²/3)⁴. nn.Conv2d's
  // default init gives Var K = 1 / (3·S·k²) =: v, so β = √(3·(v/R)^¼).
  const double target = 1.0 / (3.0 * static_cast<double>(in_channels * kernel_size * kernel_size));
  const double beta = std::sqrt(3.0 * std::pow(target / static_cast<double>(rank), 0.25));
  at::Generator gen = at::detail::createCPUGenerator(seed);
  auto uniform = [&](int64_t rows) {
    return (at::rand({rows, rank}, gen, at::TensorOptions().dtype(at::kDouble)) * 2 - 1).mul_(beta).to(dtype);
  };
  CpConv2d conv;
  conv.a = uniform(out_channels);
  conv.b = uniform(in_channels);
  conv.c = uniform(kernel_size);
  conv.d = uniform(kernel_size);
  if (with_bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_channels * kernel_size * kernel_size));
    conv.bias =
        ((at::rand({out_channels}, gen, at::TensorOptions().dtype(at::kDouble)) * 2 - 1) * bound).to(dtype);
  }
  return conv;
}

CpConv2d CpConv2d::from_kernel(const at::Tensor& kernel, const at::Tensor& bias, int64_t rank, double* error,
                               int64_t max_iters) {
  LR_CHECK(kernel.dim() == 4 && kernel.size(2) == kernel.size(3) && kernel.size(2) % 2 == 1, InvalidArgument,
           "post-hoc CP needs a square odd kernel [T, S, k, k], got ", kernel.sizes());
  linalg::CpOptions options;
  options.max_iters = max_iters;
  const linalg::CpDecomposition cp = linalg::cp_als(kernel, rank, options);
  if (error) *error = cp.errors.back();
  const at::ScalarType dtype = kernel.scalar_type();
  CpConv2d conv;
  conv.a = cp.factors[0].to(dtype);
  conv.b = cp.factors[1].to(dtype);
  conv.c = cp.factors[2].to(dtype);
  conv.d = cp.factors[3].to(dtype);
  if (bias.defined()) conv.bias = bias.detach().clone();
  return conv;
}

at::Tensor CpConv2d::forward(const at::Tensor& x) const {
  LR_CHECK(x.dim() == 4 && x.size(1) == in_channels(), InvalidArgument, "CP conv expects [N, ", in_channels(),
           ", H, W], got ", x.sizes());
  const int64_t r = rank(), k = kernel_size(), p = k / 2;
  // 1×1 S→R: weight [R, S, 1, 1] = Bᵀ.
  at::Tensor h = at::conv2d(x, b.t().reshape({r, in_channels(), 1, 1}));
  // Depthwise k×1 then 1×k: weights [R, 1, k, 1] and [R, 1, 1, k].
  const at::Tensor no_bias;
  const std::vector<int64_t> stride = {1, 1}, dilation = {1, 1}, pad_h = {p, 0}, pad_w = {0, p};
  h = at::conv2d(h, c.t().reshape({r, 1, k, 1}), no_bias, stride, pad_h, dilation, r);
  h = at::conv2d(h, d.t().reshape({r, 1, 1, k}), no_bias, stride, pad_w, dilation, r);
  // 1×1 R→T: weight [T, R, 1, 1] = A.
  return at::conv2d(h, a.reshape({out_channels(), r, 1, 1}), bias);
}

at::Tensor CpConv2d::kernel() const {
  // K[t, s, i, j] = Σ_r A[t, r] B[s, r] C[i, r] D[j, r]
  return at::einsum("tr,sr,ir,jr->tsij", {a, b, c, d});
}

}  // namespace lowrank::nn
