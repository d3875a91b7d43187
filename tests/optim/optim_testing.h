// Shared by the optimizer tests: seeded random tensors and trainable copies of parameters.
#pragma once

#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/optim/projector.h"

namespace lowrank::optim::testing_support {

// A seeded standard normal tensor times `scale`.
inline at::Tensor randn(std::vector<int64_t> shape, uint64_t seed, double scale = 1.0,
                        at::ScalarType dtype = at::kFloat) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, dtype).mul_(scale);
}

// Detached copies that require gradients, under the same names.
inline NamedTensors clone_params(const NamedTensors& params) {
  NamedTensors out;
  for (const auto& [n, p] : params) out.emplace_back(n, p.detach().clone().requires_grad_(true));
  return out;
}

}  // namespace lowrank::optim::testing_support
