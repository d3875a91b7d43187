// BatchNorm over the channels of feature maps [B, C, H, W] (Ioffe & Szegedy, 2015, "Batch
// Normalization", arXiv:1502.03167), with PyTorch's BatchNorm2d semantics, which the reference
// ConvNets (timm's MetaNeXt, UniRepLKNet) train with:
//   training: y = (x − μ_B) / sqrt(σ²_B + ε) · w + b, μ_B and σ²_B the biased mean and variance
//             over (B, H, W); the running statistics move as
//             running_mean ← (1 − m)·running_mean + m·μ_B,
//             running_var  ← (1 − m)·running_var  + m·σ²_B · n/(n − 1)   (n = B·H·W, unbiased),
//   eval:     y = (x − running_mean) / sqrt(running_var + ε) · w + b = scale ⊙ x + shift,
// with ε = 1e-5 and m = 0.1 (PyTorch's defaults). The running statistics are state, not trained:
// they are saved with the weights (names <prefix>.running_mean / .running_var) and never given to
// the optimiser.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

// Where a ConvNet's tensors come from: (name, shape, init, value) -> a tensor, loaded or fresh (the
// signature of decoder_layer.h's LayerTensorSource). kNormal draws N(0, initializer_range).
using ConvTensorSource = std::function<at::Tensor(const std::string& name, std::vector<int64_t> shape,
                                                  ParamInit init, const at::Tensor& value)>;

struct BatchNorm {
  at::Tensor weight, bias, running_mean, running_var;  // [C]
  double eps = 1e-5;
  double momentum = 0.1;

  // weight 1, bias 0, running_mean 0, running_var 1 when fresh (torch's init).
  static BatchNorm make(const std::string& prefix, int64_t channels, const ConvTensorSource& source,
                        double eps = 1e-5);

  // x [B, C, ...]. In training mode the running statistics are updated in place (no gradient).
  at::Tensor forward(const at::Tensor& x, bool training) const;
  // The eval-mode map as y = scale ⊙ x + shift, per channel: (scale, shift) [C].
  std::pair<at::Tensor, at::Tensor> eval_affine() const;
  // weight, bias under <prefix>.{weight,bias}; the running statistics under <prefix>.running_*.
  void append_parameters(const std::string& prefix, NamedTensors& out) const;
  void append_buffers(const std::string& prefix, NamedTensors& out) const;
};

}  // namespace lowrank::nn
