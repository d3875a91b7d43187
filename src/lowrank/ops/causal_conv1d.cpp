// The causal depthwise convolution; see causal_conv1d.h.
#include "lowrank/ops/causal_conv1d.h"

#include "lowrank/core/error.h"

namespace lowrank::ops {

CausalConv1dResult causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 const at::Tensor& state, bool silu) {
  LR_CHECK(x.defined() && x.dim() == 3, InvalidArgument,
           "causal_conv1d: x must be [batch, T, channels], got ",
           x.defined() ? ::lowrank::str(x.sizes()) : std::string("undefined"));
  const int64_t batch = x.size(0), T = x.size(1), C = x.size(2);
  LR_CHECK(weight.defined() && weight.dim() == 2 && weight.size(0) == C && weight.size(1) >= 1,
           InvalidArgument, "causal_conv1d: weight must be [", C, ", K >= 1], got ",
           weight.defined() ? ::lowrank::str(weight.sizes()) : std::string("undefined"));
  const int64_t K = weight.size(1);
  LR_CHECK(!bias.defined() || bias.sizes() == at::IntArrayRef{C}, InvalidArgument,
           "causal_conv1d: bias must be [", C, "], got ",
           bias.defined() ? ::lowrank::str(bias.sizes()) : std::string());
  LR_CHECK(!state.defined() || state.sizes() == at::IntArrayRef({batch, C, K - 1}), InvalidArgument,
           "causal_conv1d: state must be [", batch, ", ", C, ", ", K - 1, "], got ",
           state.defined() ? ::lowrank::str(state.sizes()) : std::string());
  const at::Tensor xt = x.transpose(1, 2);  // [batch, C, T]
  const at::Tensor full =
      state.defined() ? at::cat({state.to(x.scalar_type()), xt}, 2) : at::constant_pad_nd(xt, {K - 1, 0});
  const std::optional<at::Tensor> b =
      bias.defined() ? std::optional<at::Tensor>(bias.to(x.scalar_type())) : std::nullopt;
  const int64_t one = 1, zero = 0;  // stride, padding, dilation
  at::Tensor y = at::conv1d(full, weight.to(x.scalar_type()).unsqueeze(1), b, at::IntArrayRef(one),
                            at::IntArrayRef(zero), at::IntArrayRef(one), /*groups=*/C);
  if (silu) y = at::silu(y);
  return {y.transpose(1, 2), full.narrow(2, T, K - 1)};
}

}  // namespace lowrank::ops
