// Warmup + cosine learning-rate schedule (SGDR, Loshchilov & Hutter 2017) and global-norm
// gradient clipping (Pascanu et al. 2013); see schedule.h.
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
