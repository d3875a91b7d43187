// Local attention: Scatterbrain's sparse half as a mixer; see local_attention.h.
#include "lowrank/mix/local_attention.h"

#include "lowrank/mix/scatterbrain.h"

namespace lowrank::mix {

void register_local_attention(nn::MixerRegistry& registry) {
  register_kernel_mixer(registry, KernelMixerVariant::kLocal,
                        {"local",
                         "exact softmax attention on a sliding window of keys",
                         "Chen et al., 2021, arXiv:2110.15343 (Scatterbrain's local baseline)",
                         {{"causal", "true (default): the last w keys; false: a centred window"},
                          {"window", "keys per query (default 64)"},
                          {"rope", "rotate q and k by RoPE first (default false)"}}});
}

}  // namespace lowrank::mix
