// Learning-rate schedule and gradient clipping for training.
// Schedule: linear warmup (Goyal et al., 2017, arXiv:1706.02677) then cosine decay to a floor
// (Loshchilov & Hutter, 2017, "SGDR", arXiv:1608.03983, Eq. 5, a single cycle without restarts):
//   η(s) = η_max · (s + 1) / W                                   for s < W
//   η(s) = η_min + ½(η_max − η_min)(1 + cos(π · (s − W) / (S − W)))  for W <= s < S
// with s the 0-based step, W the warmup steps and S the total steps.
// Jagged re-warmup, for the parameterisations that restart their factors every P steps (ReLoRA's
// cosine_restarts; the refactorisation of lowrank_ba.h, whose ramp starts at 0.001; SST's rounds):
// the scheduled η is multiplied, for the j < R steps after each restart (j = s mod P, s >= P), by
//   f(s) = f0 + (1 − f0)·j / R,     and by 1 otherwise.
// Clipping by global norm (Pascanu et al., 2013, arXiv:1211.5063, Alg. 2), as
// torch.nn.utils.clip_grad_norm_: ‖g‖ = sqrt(Σ_p ‖g_p‖²); if ‖g‖ > c, g ← g · c / (‖g‖ + 1e-6).
#pragma once

#include <cstdint>
#include <span>

#include <ATen/ATen.h>

namespace lowrank::train {

struct LrSchedule {
  double max_lr = 1e-3;
  double min_lr = 1e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  // η(step) for a 0-based step; steps past total_steps give min_lr.
  double at(int64_t step) const;
};

// The jagged re-warmup factor f(step) of the file comment for restarts every `period` steps, a
// ramp of `warmup` steps (R) starting at `floor` (f0). 1 when period or warmup is <= 0.
double jagged_lr_factor(int64_t step, int64_t period, int64_t warmup, double floor = 0.0);

// Scales the .grad() of `params` in place so that their global L2 norm is at most `max_norm`
// (no-op when max_norm <= 0 or the norm is already below). Returns the norm before clipping
// (computed in float64). Parameters without a gradient are skipped.
double clip_grad_norm(std::span<const at::Tensor> params, double max_norm);

}  // namespace lowrank::train
