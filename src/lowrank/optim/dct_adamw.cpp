// DCT-AdamW preset and registration; the equations are in dct_adamw.h.
#include "lowrank/optim/dct_adamw.h"

namespace lowrank::optim {

LowRankConfig dct_adamw_defaults() {
  LowRankConfig c;
  c.method = "dct";
  c.projector = "dct";
  c.rank = 128;
  c.update_gap = 1;
  c.scale = 1.0;
  c.reset_on_refresh = false;
  c.core = MomentCore::kAdam;
  c.eps_placement = EpsPlacement::kAdamW;
  c.decay = DecayPlacement::kBeforeUpdate;
  c.residual = ResidualRule::kNone;
  c.adam.beta1 = 0.9;
  c.adam.beta2 = 0.999;
  c.adam.eps = 1e-8;
  c.adam.weight_decay = 0;
  return c;
}

void register_dct_adamw(Registry<OptimizerMethod>& registry) {
  registry.add({"dct",
                "SVD-free GaLore: Adam on the top-l1 columns of a fixed DCT basis, reselected every step",
                "Modoranu et al., 2025, arXiv:2505.17967",
                {{"rank", "r (128): DCT basis vectors kept per weight"},
                 {"update_gap", "T (1): reselect every T steps"},
                 {"scale", "alpha (1.0)"},
                 {"eps", "1e-8, added to the bias-corrected sqrt(v)"},
                 {"weight_decay", "lambda (0), applied before the update"}}},
               {dct_adamw_defaults()});
}

}  // namespace lowrank::optim
