// The mix family's registry: the token mixers (nn/token_mixer.h) a LowrankMixerForCausalLM can name
// in its `layer_mixers`. nn/ owns the interface and the registry (nn::mixer_registry(), which holds
// nn's own "attention" from the start); this family fills it with its mixers, one explicit
// function and no static self-registration, as the other families (core/registry.h). Adding a
// mixer is a file pair mix/<mixer>.{h,cpp} with a register_<mixer>(nn::MixerRegistry&) and one line
// in register_builtin (registry.cpp).
//
// A program that loads models with mix/'s mixers calls registry() once before (config parsing
// refuses a name it does not know, listing the known ones).
#pragma once

#include "lowrank/nn/token_mixer.h"

namespace lowrank::mix {

// Adds mix/'s built-in mixers to `registry` ("attention" is nn's and already there).
void register_builtin(nn::MixerRegistry& registry);

// nn::mixer_registry() with the built-ins added (once, on first use). Thread-safe.
nn::MixerRegistry& registry();

}  // namespace lowrank::mix
