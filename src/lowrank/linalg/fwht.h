// Fast Walsh–Hadamard transform: y = H_N x along the last dimension, N a power of two, with the
// unnormalised Sylvester Hadamard matrix H_1 = [1], H_{2N} = [[H_N, H_N], [H_N, −H_N]]
// (entries (−1)^{popcount(i & j)}). O(N log N) per row instead of O(N²); H_N H_N = N·I, so the
// inverse is fwht(y)/N. Real or complex inputs (the quantum-kernel statevectors are complex).
#pragma once

#include <ATen/ATen.h>

namespace lowrank::linalg {

// Throws InvalidArgument when the last dimension is not a power of two.
at::Tensor fwht(const at::Tensor& x);

}  // namespace lowrank::linalg
