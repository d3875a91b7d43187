// Dynamic loss scaling for float16 mixed-precision training (Micikevicius et al., 2018, "Mixed
// Precision Training", ICLR, arXiv:1710.03740, §3.2; the dynamic variant of torch.amp.GradScaler,
// torch/amp/grad_scaler.py). float16's smallest normal is 6e-5, so small gradients flush to zero
// under fp16 autocast (nn/autocast.h). The loss is multiplied by a scale S before backward, and
// the gradients are divided by S before the optimizer sees them. A step whose gradients hold an
// inf or a NaN is skipped, and S is multiplied by backoff (0.5). After `growth_interval` (2000)
// clean steps in a row, S is multiplied by growth (2). S starts at 2^16. The unscale and the
// update are ATen's own kernels, the ones GradScaler calls: _amp_foreach_non_finite_check_and_unscale_
// and _amp_update_scale_.
#pragma once

#include <cstdint>
#include <span>

#include <ATen/ATen.h>

namespace lowrank::train {

struct LossScalerOptions {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

// GradScaler's dynamic loss scale (file comment).
class LossScaler {
 public:
  explicit LossScaler(const LossScalerOptions& options = {});

  double scale() const { return scale_.item<double>(); }
  int64_t growth_tracker() const { return growth_tracker_.item<int64_t>(); }
  // Restores a checkpointed state.
  void set_state(double scale, int64_t growth_tracker);

  // loss · S.
  at::Tensor scale_loss(const at::Tensor& loss) const;
  // Divides every defined gradient by S in place; returns whether one held an inf or a NaN.
  bool unscale(std::span<const at::Tensor> params) const;
  // After the step (taken or skipped): backoff on `found_inf`, growth after the interval.
  void update(bool found_inf);

 private:
  LossScalerOptions options_;
  at::Tensor scale_;           // float32 [1], as GradScaler's
  at::Tensor growth_tracker_;  // int32 [1]
};

}  // namespace lowrank::train
