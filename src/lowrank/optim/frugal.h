// FRUGAL — Zmushko et al., 2025, "FRUGAL: Memory-Efficient Optimization by Reducing State
// Overhead for Scalable Training", ICML 2025, arXiv:2411.07837; code read from the fork
// hungquangbui02022003/FRUGAL (frugal/proj_optimizer_templates.py, galore_projector.py,
// coordinate_projector.py, adamw.py: _init_state zeroes M, V and the step count at a refresh).
//
// The gradient splits into a state-full part in a subspace (Adam) and a state-free remainder
// (signSGD or SGD), so the update is full-rank:
//   W ← W·(1 − η·λ)                                        (decay first)
//   every T steps: new projector (and, with reset_statistics, M = V = 0, t = 0; option
//                  reset_step false keeps t)
//   u  = Adam_AdamW-form(down(G); η·α)                      (ε added to √v̂)
//   W ← W + up(u) − η·α·ρ_lr·sign(G − up(down(G)))          ('sign_sgd'; 'sgd' drops the sign)
// with α = proj_params_lr_scale (option scale) and ρ_lr = inactive_lr_scale (residual_lr_scale).
// Subspace selections (option projector): svd, random (semi-orthogonal), randperm (coordinate
// axes of the short side), columns, rows, randk (coordinate_projector.h), each with
// r = round(ρ·d) (dense) or ⌊ρ·axis⌋ (coordinates); and "block" (BlockOptimizer, BAdam-like):
// round(ρ·#weights) whole weights run Adam, the rest have their state freed and take signSGD.
// Defaults: ρ = 0.25, T = 200, reset_statistics = true, sign_sgd, inactive_lr_scale = 1,
// α = 1, ε = 1e-8, β = (0.9, 0.999). λ defaults to 0 as in the pretraining scripts (the class
// default is 0.01). GaLore inside FRUGAL: reset_on_refresh false, residual none, scale 0.25.
// Deviation: block_order "mirror" is not implemented (random, ascending, descending are).
#pragma once

#include <vector>

#include "lowrank/optim/methods.h"

namespace lowrank::optim {

// Which of `count` weights are active in refresh period `period` (= step / T): round(ρ·count)
// of them, in `order` (ascending/descending: consecutive windows cycling through the list;
// random: a seeded draw per period).
std::vector<bool> frugal_block_selection(int64_t count, double density, BlockOrder order, int64_t period,
                                         uint64_t seed);

LowRankConfig frugal_defaults();
void register_frugal(Registry<OptimizerMethod>& registry);

}  // namespace lowrank::optim
