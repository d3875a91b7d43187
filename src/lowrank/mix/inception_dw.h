// Inception depthwise convolution (Yu, Zhou, Yan & Wang, 2024, "InceptionNeXt: When Inception Meets
// ConvNeXt", CVPR, arXiv:2303.16900, Eq. 1-5): the channels of x ∈ ℝ^{C×H×W} are split as
//   X_id, X_hw, X_w, X_h = Split(X)   with g = ⌊r·C⌋ channels per conv branch (r = 1/8) and
//                                     C − 3g channels in the identity branch, in that order;
//   X'_hw = DWConv_{k_s×k_s}(X_hw),  X'_w = DWConv_{1×k_b}(X_w),  X'_h = DWConv_{k_b×1}(X_h),
//   X' = Concat(X_id, X'_hw, X'_w, X'_h),
// k_s = 3 (square), k_b = 11 (band), "same" zero padding, each conv with a bias. Layout and
// tensor names follow timm's `InceptionDWConv2d` (huggingface/pytorch-image-models,
// timm/models/inception_next.py), whose split order and ⌊·⌋ (int(C·r)) are the authors'.
// Tensors (under the block's prefix): mixer.dwconv_hw.{weight [g,1,k_s,k_s], bias [g]},
// mixer.dwconv_w.{weight [g,1,1,k_b], bias}, mixer.dwconv_h.{weight [g,1,k_b,1], bias}.
// C < 8 gives g = 0: every channel is identity, as in timm.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/nn/batch_norm.h"

namespace lowrank::mix {

struct InceptionDWOptions {
  int64_t square_kernel_size = 3;
  int64_t band_kernel_size = 11;
  double branch_ratio = 0.125;
};

// g = ⌊ratio · channels⌋, timm's int(in_chs * branch_ratio).
int64_t inception_branch_channels(int64_t channels, double branch_ratio);

struct InceptionDW {
  int64_t channels = 0, branch = 0;
  InceptionDWOptions options;
  at::Tensor hw_weight, hw_bias, w_weight, w_bias, h_weight, h_bias;

  // `prefix` is the mixer's ("stages.0.blocks.1.mixer"). Throws InvalidArgument for kernel sizes
  // that are not odd and positive or a ratio outside (0, 1/3].
  static InceptionDW make(const std::string& prefix, int64_t channels, const InceptionDWOptions& options,
                          const nn::ConvTensorSource& source);
  // x [B, C, H, W] -> [B, C, H, W]
  at::Tensor forward(const at::Tensor& x) const;
  void append_parameters(const std::string& prefix, nn::NamedTensors& out) const;
};

}  // namespace lowrank::mix
