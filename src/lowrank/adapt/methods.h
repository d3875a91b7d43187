// The built-in adapter methods, one registration function per method file. Adding a method is a
// file pair under adapt/ plus one line in register_builtin_methods (methods.cpp).
#pragma once

#include "lowrank/adapt/adapter.h"

namespace lowrank::adapt {

void register_builtin_methods(Registry<AdapterMethod>& registry);

void register_lora(Registry<AdapterMethod>& registry);  // lora, dora, pissa (lora.cpp)

void register_dylora(Registry<AdapterMethod>& registry);    // dylora.cpp
void register_sora(Registry<AdapterMethod>& registry);      // sora.cpp
void register_lora_xs(Registry<AdapterMethod>& registry);   // lora_xs.cpp
void register_lora_sb(Registry<AdapterMethod>& registry);   // lora_sb.cpp
void register_randlora(Registry<AdapterMethod>& registry);  // randlora.cpp
void register_loldu(Registry<AdapterMethod>& registry);     // loldu.cpp
void register_svfit(Registry<AdapterMethod>& registry);     // svfit.cpp
void register_salt(Registry<AdapterMethod>& registry);      // salt.cpp
void register_petal(Registry<AdapterMethod>& registry);     // petal.cpp
void register_snnk(Registry<AdapterMethod>& registry);      // snnk.cpp
void register_loram(Registry<AdapterMethod>& registry);     // loram.cpp

}  // namespace lowrank::adapt
