// BatchNorm2d with running statistics; see batch_norm.h.
#include "lowrank/nn/batch_norm.h"

namespace lowrank::nn {

BatchNorm BatchNorm::make(const std::string& prefix, int64_t channels, const ConvTensorSource& source,
                          double eps) {
  BatchNorm bn;
  bn.weight = source(prefix + ".weight", {channels}, ParamInit::kOnes, {});
  bn.bias = source(prefix + ".bias", {channels}, ParamInit::kZeros, {});
  bn.running_mean = source(prefix + ".running_mean", {channels}, ParamInit::kZeros, {});
  bn.running_var = source(prefix + ".running_var", {channels}, ParamInit::kOnes, {});
  bn.eps = eps;
  return bn;
}

at::Tensor BatchNorm::forward(const at::Tensor& x, bool training) const {
  // at::batch_norm updates running_mean / running_var in place in training mode (unbiased
  // variance, momentum m), as torch.nn.BatchNorm2d does.
  return at::batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps,
                        /*cudnn_enabled=*/true);
}

std::pair<at::Tensor, at::Tensor> BatchNorm::eval_affine() const {
  const at::Tensor scale = weight / (running_var + eps).sqrt();
  return {scale, bias - running_mean * scale};
}

void BatchNorm::append_parameters(const std::string& prefix, NamedTensors& out) const {
  out.emplace_back(prefix + ".weight", weight);
  out.emplace_back(prefix + ".bias", bias);
}

void BatchNorm::append_buffers(const std::string& prefix, NamedTensors& out) const {
  out.emplace_back(prefix + ".running_mean", running_mean);
  out.emplace_back(prefix + ".running_var", running_var);
}

}  // namespace lowrank::nn
