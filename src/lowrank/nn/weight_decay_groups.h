// The usual weight-decay rule of vision models (timm's param_groups_weight_decay): tensors of one
// dimension or none (biases, norm scales, layer scales) train without weight decay; matrices and
// convolution kernels keep the run's setting.
#pragma once

#include <optional>
#include <vector>

#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

inline std::vector<ParamGroup> no_decay_on_vectors(const NamedTensors& parameters) {
  std::vector<ParamGroup> out;
  for (const auto& [name, t] : parameters)
    if (t.dim() <= 1) out.push_back(ParamGroup{name, std::nullopt, 0.0});
  return out;
}

}  // namespace lowrank::nn
