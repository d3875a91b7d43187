// Dynamic loss scaling; see loss_scaler.h.
#include "lowrank/train/loss_scaler.h"

#include <vector>

#include "lowrank/core/error.h"

namespace lowrank::train {

LossScaler::LossScaler(const LossScalerOptions& options)
    : options_(options),
      scale_(at::full({1}, options.init_scale, at::kFloat)),
      growth_tracker_(at::zeros({1}, at::kInt)) {
  LR_CHECK(options.init_scale > 0 && options.growth_factor > 1 && options.backoff_factor > 0 &&
               options.backoff_factor < 1 && options.growth_interval >= 1,
           InvalidArgument,
           "loss scaler: need init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1 and "
           "growth_interval >= 1");
}

void LossScaler::set_state(double scale, int64_t growth_tracker) {
  LR_CHECK(scale > 0 && growth_tracker >= 0, InvalidArgument, "loss scaler: a state of scale ", scale,
           " and growth tracker ", growth_tracker);
  scale_.fill_(scale);
  growth_tracker_.fill_(growth_tracker);
}

at::Tensor LossScaler::scale_loss(const at::Tensor& loss) const {
  return loss * scale_.to(loss.device());
}

bool LossScaler::unscale(std::span<const at::Tensor> params) const {
  at::NoGradGuard no_grad;
  // ATen's kernel takes the gradients of one device at a time, as GradScaler groups them.
  std::vector<at::Tensor> grads;
  for (const at::Tensor& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return false;
  const at::Device device = grads.front().device();
  at::Tensor found_inf = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device));
  const at::Tensor inv_scale = scale_.to(device).to(at::kDouble).reciprocal().to(at::kFloat);
  at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale);
  return found_inf.item<float>() != 0.0f;
}

void LossScaler::update(bool found_inf) {
  const at::Tensor inf = at::full({1}, found_inf ? 1.0 : 0.0, at::kFloat);
  at::_amp_update_scale_(scale_, growth_tracker_, inf, options_.growth_factor, options_.backoff_factor,
                         options_.growth_interval);
}

}  // namespace lowrank::train
