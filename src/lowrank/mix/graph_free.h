// Whether tensors computed from some inputs may be updated in place: no autograd graph is kept for
// any of them (inference mode, grad mode off, or inputs that need no gradient). The mixers' large
// intermediate tensors (feature maps, score blocks, kernels) then take in-place passes: one read
// and one write each, no new allocation.
#pragma once

#include <initializer_list>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace lowrank::mix {

inline bool keeps_no_graph(std::initializer_list<at::Tensor> inputs) {
  if (!at::GradMode::is_enabled()) return true;
  for (const at::Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return false;
  return true;
}

}  // namespace lowrank::mix
