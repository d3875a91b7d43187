// The mix family's registration; see registry.h.
#include "lowrank/mix/registry.h"

#include <mutex>

#include "lowrank/mix/dilated_reparam.h"
#include "lowrank/mix/fnet.h"
#include "lowrank/mix/linformer.h"
#include "lowrank/mix/local_attention.h"
#include "lowrank/mix/long_conv.h"
#include "lowrank/mix/mamba.h"
#include "lowrank/mix/neighborhood.h"
#include "lowrank/mix/performer.h"
#include "lowrank/mix/ponet.h"
#include "lowrank/mix/s4.h"
#include "lowrank/mix/s4d.h"
#include "lowrank/mix/scatterbrain.h"
#include "lowrank/mix/sgconv.h"
#include "lowrank/mix/soft.h"

namespace lowrank::mix {

void register_builtin(nn::MixerRegistry& registry) {
  // One line per mixer of mix/ (register_<mixer>(registry)); "attention" is nn's own.
  register_scatterbrain(registry);
  register_performer(registry);
  register_local_attention(registry);
  register_neighborhood(registry);
  register_ponet(registry);
  register_fnet(registry);
  register_linformer(registry);
  register_soft(registry);
  register_s4d(registry);
  register_s4(registry);
  register_dilated_reparam_1d(registry);
  register_long_conv(registry);
  register_sgconv(registry);
  register_mamba(registry);
}

nn::MixerRegistry& registry() {
  static std::once_flag filled;
  std::call_once(filled, [] { register_builtin(nn::mixer_registry()); });
  return nn::mixer_registry();
}

}  // namespace lowrank::mix
