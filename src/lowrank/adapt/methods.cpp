#include "lowrank/adapt/methods.h"

namespace lowrank::adapt {

void register_builtin_methods(Registry<AdapterMethod>& registry) {
  register_lora(registry);
  register_dylora(registry);
  register_sora(registry);
  register_lora_xs(registry);
  register_lora_sb(registry);
  register_randlora(registry);
  register_loldu(registry);
  register_svfit(registry);
  register_salt(registry);
  register_petal(registry);
  register_snnk(registry);
  register_loram(registry);
}

}  // namespace lowrank::adapt
