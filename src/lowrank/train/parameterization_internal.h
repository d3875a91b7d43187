// Helpers shared by the parameterisation methods (lowrank_ba, sltrain, relora, sst, trp, maestro); not for
// other modules.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace lowrank::train::detail {

// `sizes` drawn U(−bound, bound) on the CPU (float32) from `seed`, then moved to `options`.
at::Tensor uniform(at::IntArrayRef sizes, double bound, uint64_t seed, const at::TensorOptions& options);

// [rows, fan_in] drawn U(−1/√fan_in, 1/√fan_in) on the CPU from `seed` (torch's
// kaiming_uniform_(a=√5), nn.Linear's default init) and moved to `options`: the same values on
// every device.
at::Tensor kaiming_uniform(int64_t rows, int64_t fan_in, uint64_t seed, const at::TensorOptions& options);

// A seed derived from `seed` and a counter (slot index, restart number, ...).
uint64_t derive_seed(uint64_t seed, uint64_t counter);

}  // namespace lowrank::train::detail
