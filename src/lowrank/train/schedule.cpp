// Warmup + cosine learning-rate schedule (SGDR, Loshchilov & Hutter 2017), the jagged re-warmup
// after restarts and global-norm gradient clipping (Pascanu et al. 2013); see schedule.h.
#include "lowrank/train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace lowrank::train {

double LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return max_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (step >= total_steps) return min_lr;
  const int64_t span = std::max<int64_t>(1, total_steps - warmup_steps);
  const double progress = static_cast<double>(step - warmup_steps) / static_cast<double>(span);
  return min_lr + 0.5 * (max_lr - min_lr) * (1 + std::cos(std::numbers::pi * progress));
}

double jagged_lr_factor(int64_t step, int64_t period, int64_t warmup, double floor) {
  if (period <= 0 || warmup <= 0 || step < period) return 1.0;
  const int64_t since_restart = step % period;
  if (since_restart >= warmup) return 1.0;
  // In this order, so that floor 0 gives exactly j / R and floor 0.001 gives 0.001 + 0.999·j / R.
  return floor + (1.0 - floor) * static_cast<double>(since_restart) / static_cast<double>(warmup);
}

double clip_grad_norm(std::span<const at::Tensor> params, double max_norm) {
  at::NoGradGuard no_grad;
  double sum_sq = 0;
  for (const at::Tensor& p : params) {
    if (!p.grad().defined()) continue;
    const double n = p.grad().norm().item<double>();
    sum_sq += n * n;
  }
  const double total = std::sqrt(sum_sq);
  if (max_norm > 0 && total > max_norm) {
    const double coef = max_norm / (total + 1e-6);
    for (const at::Tensor& p : params)
      if (p.grad().defined()) p.grad().mul_(coef);
  }
  return total;
}

}  // namespace lowrank::train
