// Helpers shared by the parameterisation methods (lowrank_ba, sltrain, relora, sst, trp, maestro); not for
// other modules.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/error.h"
#include "lowrank/train/parameterization.h"

namespace lowrank::train::detail {

// `sizes` drawn U(−bound, bound) on the CPU (float32) from `seed`, then moved to `options`.
at::Tensor uniform(at::IntArrayRef sizes, double bound, uint64_t seed, const at::TensorOptions& options);

// [rows, fan_in] drawn U(−1/√fan_in, 1/√fan_in) on the CPU from `seed` (torch's
// kaiming_uniform_(a=√5), nn.Linear's default init) and moved to `options`: the same values on
// every device.
at::Tensor kaiming_uniform(int64_t rows, int64_t fan_in, uint64_t seed, const at::TensorOptions& options);

// A seed derived from `seed` and a counter (slot index, restart number, ...).
uint64_t derive_seed(uint64_t seed, uint64_t counter);

// The operators a method's hooks were given (slot name, operator), as the method's own operator
// type `Op`, in the same order. Throws InternalError naming the slot when one holds another
// method's operator.
template <typename Op>
std::vector<std::pair<std::string, std::shared_ptr<const Op>>> operators_as(
    const std::vector<std::pair<std::string, std::shared_ptr<ParameterizedOperator>>>& operators,
    std::string_view method) {
  std::vector<std::pair<std::string, std::shared_ptr<const Op>>> out;
  out.reserve(operators.size());
  for (const auto& [name, op] : operators) {
    auto cast = std::dynamic_pointer_cast<const Op>(op);
    LR_CHECK(cast != nullptr, InternalError, method, ": slot ", name, " holds another method's operator");
    out.emplace_back(name, std::move(cast));
  }
  return out;
}

}  // namespace lowrank::train::detail
