// The names and shapes of the linear slots a model of a given config has, known without building
// the model: for checks that run before any work, such as a rank against every weight it would
// touch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/nn/config.h"

namespace lowrank::nn {

// One linear slot: its HF module name and its weight's [out, in].
struct SlotShape {
  std::string name;
  int64_t out_features = 0;
  int64_t in_features = 0;
};

// The linear slots of a model built from `config`, in Model::slots() order: per layer its mixer's
// slots (attention: q, k, v, o under `self_attn.`; any other mixer: the projections its registered
// factory builds under `mixer.`, e.g. Linformer's or Performer's q, k, v, o), then gate, up, down;
// then lm_head when the architecture has one (a classifier's trunk has not). A layer's mixer other
// than attention is built from mixer_registry() on the meta device (no weights allocated), so its
// name must be registered and its options valid (the factory's errors propagate).
std::vector<SlotShape> slot_shapes(const ModelConfig& config);

}  // namespace lowrank::nn
