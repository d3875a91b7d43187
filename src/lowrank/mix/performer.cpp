// Performer (FAVOR+): Scatterbrain's low-rank half as a mixer; see performer.h.
#include "lowrank/mix/performer.h"

#include "lowrank/mix/scatterbrain.h"

namespace lowrank::mix {

void register_performer(nn::MixerRegistry& registry) {
  register_kernel_mixer(
      registry, KernelMixerVariant::kPerformer,
      {"performer",
       "FAVOR+ linear attention with positive orthogonal random features (performer-pytorch's)",
       "Choromanski et al., 2021, arXiv:2009.14794",
       {{"causal", "true (default): prefix sums; false: bidirectional"},
        {"n_features", "random features m (default floor(d ln d))"},
        {"feature_seed", "seed of the random features (default 0)"},
        {"rope", "rotate q and k by RoPE first (default false)"}}});
}

}  // namespace lowrank::mix
