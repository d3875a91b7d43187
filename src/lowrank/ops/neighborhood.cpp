// Neighborhood attention: the window rule, the checks and the choice of kernel; see neighborhood.h.
#include "lowrank/ops/neighborhood.h"

#include <algorithm>

#include <ATen/core/grad_mode.h>

#include "lowrank/core/error.h"

namespace lowrank::ops {

NeighborhoodWindow neighborhood_window(int64_t index, int64_t length, const NeighborhoodAxis& axis) {
  const int64_t d = axis.dilation;
  const int64_t k = axis.kernel;
  const int64_t group = index % d;
  const int64_t i = index / d;  // the query in group coordinates
  const int64_t group_length = (length - group + d - 1) / d;
  if (axis.causal) {
    const int64_t start = std::max<int64_t>(i - k + 1, 0);
    return {group + d * start, i - start + 1};
  }
  // NATTEN's get_window_start: centred, shifted inward at both borders.
  const int64_t ns = k / 2;
  const int64_t start =
      std::max<int64_t>(i - ns, 0) + (i + ns >= group_length ? group_length - i - ns - 1 : 0);
  return {group + d * start, k};
}

void check_neighborhood_axis(const NeighborhoodAxis& axis, int64_t length, const char* what) {
  LR_CHECK(axis.kernel >= 1 && axis.kernel % 2 == 1, InvalidArgument,
           "neighborhood attention: kernel_size must be odd and >= 1, got ", axis.kernel);
  LR_CHECK(axis.dilation >= 1, InvalidArgument, "neighborhood attention: dilation must be >= 1, got ",
           axis.dilation);
  LR_CHECK(axis.causal || axis.kernel * axis.dilation <= length, InvalidArgument,
           "neighborhood attention: kernel_size ", axis.kernel, " × dilation ", axis.dilation, " = ",
           axis.kernel * axis.dilation, " exceeds the ", what, " ", length,
           " (a window that is not causal needs kernel_size × dilation <= ", what, ")");
}

namespace {

bool tiled_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias) {
  const bool cpu_float =
      q.device().is_cpu() && (q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble);
  const bool needs_grad =
      at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad() ||
                                     (bias.defined() && bias.requires_grad()));
  return cpu_float && !needs_grad;
}

}  // namespace

at::Tensor neighborhood_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& bias, const std::vector<NeighborhoodAxis>& axes,
                                  double scale, NeighborhoodKernel kernel) {
  const int64_t dims = static_cast<int64_t>(axes.size());
  LR_CHECK(dims == 1 || dims == 2, InvalidArgument, "neighborhood attention: 1 or 2 axes, got ", dims);
  LR_CHECK(q.dim() == dims + 3, InvalidArgument, "neighborhood attention: ", dims,
           "-D queries must be [B, heads, ", dims == 1 ? "L" : "H, W", ", D], got ", q.sizes());
  LR_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), InvalidArgument,
           "neighborhood attention: q, k, v shapes differ: ", q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  const int64_t heads = q.size(1);
  if (dims == 1) {
    check_neighborhood_axis(axes[0], q.size(2), "sequence length");
  } else {
    check_neighborhood_axis(axes[0], q.size(2), "grid height");
    check_neighborhood_axis(axes[1], q.size(3), "grid width");
  }
  if (bias.defined()) {
    std::vector<int64_t> want = {heads};
    for (const NeighborhoodAxis& a : axes) want.push_back(2 * a.kernel - 1);
    LR_CHECK(bias.sizes() == at::IntArrayRef(want), InvalidArgument,
             "neighborhood attention: the relative position bias must be ", at::IntArrayRef(want), ", got ",
             bias.sizes());
  }
  // Both kernels see the 2-D layout; a sequence is one row.
  const NeighborhoodAxis row{1, 1, false};
  const NeighborhoodAxis& axis_h = dims == 1 ? row : axes[0];
  const NeighborhoodAxis& axis_w = dims == 1 ? axes[0] : axes[1];
  const at::Tensor q2 = dims == 1 ? q.unsqueeze(2) : q;
  const at::Tensor k2 = dims == 1 ? k.unsqueeze(2) : k;
  const at::Tensor v2 = dims == 1 ? v.unsqueeze(2) : v;
  const at::Tensor b2 = bias.defined() && dims == 1 ? bias.unsqueeze(1) : bias;

  if (kernel == NeighborhoodKernel::kAuto)
    kernel = tiled_applies(q, k, v, bias) ? NeighborhoodKernel::kTiled : NeighborhoodKernel::kNaive;
  at::Tensor out;
  if (kernel == NeighborhoodKernel::kTiled) {
    LR_CHECK(
        tiled_applies(q, k, v, bias), Unsupported,
        "neighborhood attention: the tiled kernel runs float32/float64 on the CPU without gradients; got ",
        q.scalar_type(), " on ", q.device());
    out = neighborhood_attention_tiled(q2, k2, v2, b2, axis_h, axis_w, scale);
  } else {
    out = neighborhood_attention_naive(q2, k2, v2, b2, axis_h, axis_w, scale);
  }
  return dims == 1 ? out.squeeze(2) : out;
}

}  // namespace lowrank::ops
