// The Inception depthwise convolution; see inception_dw.h.
#include "lowrank/mix/inception_dw.h"

#include <array>
#include <cmath>

#include "lowrank/core/error.h"

namespace lowrank::mix {

int64_t inception_branch_channels(int64_t channels, double branch_ratio) {
  return static_cast<int64_t>(std::floor(static_cast<double>(channels) * branch_ratio));
}

InceptionDW InceptionDW::make(const std::string& prefix, int64_t channels, const InceptionDWOptions& options,
                              const nn::ConvTensorSource& source) {
  for (const auto& [key, k] :
       {std::pair<const char*, int64_t>{"square_kernel_size", options.square_kernel_size},
        {"band_kernel_size", options.band_kernel_size}})
    LR_CHECK(k > 0 && k % 2 == 1, InvalidArgument, "inception_dw: \"", key,
             "\" must be odd and positive (same padding), got ", k);
  LR_CHECK(options.branch_ratio > 0 && options.branch_ratio <= 1.0 / 3, InvalidArgument,
           "inception_dw: \"branch_ratio\" must be in (0, 1/3] (three branches of that share), got ",
           options.branch_ratio);
  InceptionDW m;
  m.channels = channels;
  m.options = options;
  m.branch = inception_branch_channels(channels, options.branch_ratio);
  const int64_t g = m.branch, ks = options.square_kernel_size, kb = options.band_kernel_size;
  m.hw_weight = source(prefix + ".dwconv_hw.weight", {g, 1, ks, ks}, nn::ParamInit::kNormal, {});
  m.hw_bias = source(prefix + ".dwconv_hw.bias", {g}, nn::ParamInit::kZeros, {});
  m.w_weight = source(prefix + ".dwconv_w.weight", {g, 1, 1, kb}, nn::ParamInit::kNormal, {});
  m.w_bias = source(prefix + ".dwconv_w.bias", {g}, nn::ParamInit::kZeros, {});
  m.h_weight = source(prefix + ".dwconv_h.weight", {g, 1, kb, 1}, nn::ParamInit::kNormal, {});
  m.h_bias = source(prefix + ".dwconv_h.bias", {g}, nn::ParamInit::kZeros, {});
  return m;
}

at::Tensor InceptionDW::forward(const at::Tensor& x) const {
  LR_CHECK(x.dim() == 4 && x.size(1) == channels, InvalidArgument, "inception_dw: expected [B, ", channels,
           ", H, W], got ", x.sizes());
  const int64_t g = branch;
  if (g == 0) return x;
  const int64_t id = channels - 3 * g;
  const int64_t ps = options.square_kernel_size / 2, pb = options.band_kernel_size / 2;
  const std::array<int64_t, 2> one{1, 1}, pad_hw{ps, ps}, pad_w{0, pb}, pad_h{pb, 0};
  const at::Tensor hw = at::conv2d(x.narrow(1, id, g), hw_weight, hw_bias, one, pad_hw, one, g);
  const at::Tensor w = at::conv2d(x.narrow(1, id + g, g), w_weight, w_bias, one, pad_w, one, g);
  const at::Tensor h = at::conv2d(x.narrow(1, id + 2 * g, g), h_weight, h_bias, one, pad_h, one, g);
  return at::cat({x.narrow(1, 0, id), hw, w, h}, 1);
}

void InceptionDW::append_parameters(const std::string& prefix, nn::NamedTensors& out) const {
  out.emplace_back(prefix + ".dwconv_hw.weight", hw_weight);
  out.emplace_back(prefix + ".dwconv_hw.bias", hw_bias);
  out.emplace_back(prefix + ".dwconv_w.weight", w_weight);
  out.emplace_back(prefix + ".dwconv_w.bias", w_bias);
  out.emplace_back(prefix + ".dwconv_h.weight", h_weight);
  out.emplace_back(prefix + ".dwconv_h.bias", h_bias);
}

}  // namespace lowrank::mix
