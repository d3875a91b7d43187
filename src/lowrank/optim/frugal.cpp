// FRUGAL preset, block selection and registration; the equations are in frugal.h.
#include "lowrank/optim/frugal.h"

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/core/error.h"

namespace lowrank::optim {

std::vector<bool> frugal_block_selection(int64_t count, double density, BlockOrder order, int64_t period,
                                         uint64_t seed) {
  LR_CHECK(density >= 0 && density <= 1, InvalidArgument, "frugal: density must be in [0, 1], got ", density);
  std::vector<bool> active(count, false);
  const int64_t k = std::llround(density * static_cast<double>(count));
  if (k == 0 || count == 0) return active;
  if (order == BlockOrder::kRandom) {
    at::Generator gen = at::detail::createCPUGenerator(mix_seed(seed, period));
    const at::Tensor perm = at::randperm(count, gen, at::kLong);
    for (int64_t i = 0; i < k; ++i) active[perm[i].item<int64_t>()] = true;
    return active;
  }
  // Consecutive windows of k weights, cycling; descending walks the list from its end.
  const int64_t start = (period * k) % count;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t j = (start + i) % count;
    active[order == BlockOrder::kAscending ? j : count - 1 - j] = true;
  }
  return active;
}

LowRankConfig frugal_defaults() {
  LowRankConfig c;
  c.method = "frugal";
  c.projector = "svd";
  c.density = 0.25;
  c.update_gap = 200;
  c.scale = 1.0;
  c.reset_on_refresh = true;
  c.core = MomentCore::kAdam;
  c.eps_placement = EpsPlacement::kAdamW;
  c.decay = DecayPlacement::kBeforeUpdate;
  c.residual = ResidualRule::kSignSgd;
  c.residual_lr_scale = 1.0;
  c.adam.beta1 = 0.9;
  c.adam.beta2 = 0.999;
  c.adam.eps = 1e-8;
  c.adam.weight_decay = 0;
  return c;
}

void register_frugal(Registry<OptimizerMethod>& registry) {
  registry.add(
      {"frugal",
       "Adam in a subspace (density rho) plus signSGD on the rest of the gradient: full-rank updates",
       "Zmushko et al., 2025, arXiv:2411.07837",
       {{"density", "rho (0.25): state-full fraction (rank = round(rho*d), or of the columns/rows/entries)"},
        {"projector", "svd (default), random, randperm, columns, rows, randk, block"},
        {"update_gap", "T (200)"},
        {"reset_on_refresh", "reset_statistics (true): zero the moments on refresh"},
        {"reset_step", "with reset_on_refresh, restart Adam's step count t too (true, as the authors' code)"},
        {"residual", "inactive_update_rule: sign_sgd (default), sgd, none"},
        {"residual_lr_scale", "inactive_lr_scale (1.0; 0.1 for fine-tuning)"},
        {"scale", "proj_params_lr_scale (1.0): on both parts"},
        {"block_order", "projector=block: random (default), ascending, descending"},
        {"eps", "1e-8, added to the bias-corrected sqrt(v)"},
        {"weight_decay", "lambda (0), applied before the update"},
        {"seed", "projector and block draws (0)"}}},
      {frugal_defaults()});
}

}  // namespace lowrank::optim
