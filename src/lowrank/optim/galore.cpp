// GaLore preset and registration; the equations are in galore.h, the step in low_rank_adam.cpp.
#include "lowrank/optim/galore.h"

namespace lowrank::optim {

LowRankConfig galore_defaults() {
  LowRankConfig c;
  c.method = "galore";
  c.projector = "svd";
  c.rank = 128;
  c.update_gap = 200;
  c.scale = 0.25;
  c.reset_on_refresh = false;
  c.core = MomentCore::kAdam;
  c.eps_placement = EpsPlacement::kGaLore;
  c.decay = DecayPlacement::kAfterUpdate;
  c.residual = ResidualRule::kNone;
  c.adam.beta1 = 0.9;
  c.adam.beta2 = 0.999;
  c.adam.eps = 1e-6;
  c.adam.weight_decay = 0;
  return c;
}

void register_galore(Registry<OptimizerMethod>& registry) {
  registry.add(
      {"galore",
       "Adam on the SVD projection of each attn/MLP gradient onto its top-r subspace",
       "Zhao et al., 2024, arXiv:2403.03507",
       {{"rank", "r (128): projector rank, on the short side of each weight"},
        {"update_gap", "T (200): recompute the projector every T steps"},
        {"scale", "alpha (0.25): multiplies the projected update"},
        {"projector", "svd (default), randomized_svd, random, gaussian, dct, columns, rows"},
        {"reset_on_refresh", "zero the moments when the subspace changes (false)"},
        {"core", "adam (default) or sgd"},
        {"state_bits",
         "32 (default) or 8: block-wise 8-bit moments (GaLore 8-bit) for every state of at least "
         "min_8bit_size (4096) elements, projected and plain (eight_bit_plain false: projected only)"},
        {"eps", "1e-6 (GaLore's class default), added to sqrt(V)"},
        {"beta1", "0.9"},
        {"beta2", "0.999"},
        {"weight_decay", "lambda (0), applied after the update without alpha"}}},
      {galore_defaults()});
}

}  // namespace lowrank::optim
