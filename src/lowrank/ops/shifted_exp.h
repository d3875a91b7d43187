// The row-wise shifted exponential, the one pass over the [.., T, m] feature tensors of the
// random-feature maps (mix/feature_map.h, Performer's FAVOR+ and Scatterbrain's cosh features):
//   x[r, j] ← exp(x[r, j] − shift[r]) + eps          for every row r of x [.., m]
// in place, with the row sums Σ_j x[r, j] of the result as a by-product when asked.
//
// Composed of ATen ops this is three to four passes over the tensor (subtract, exp, add eps, sum),
// each a read and a write of T·m values; here it is one. A shift of +inf gives a row of eps
// (exp(−inf) = 0): masked keys. float32 rows run 8 lanes at a time in AVX2 + FMA
// (shifted_exp_avx2.cpp: the polynomial exp of avx2_common.h, relative error ≲ 2e-7) on a CPU that
// has them; float64 and other CPUs run the portable loop (std::exp).
#pragma once

#include <ATen/ATen.h>

namespace lowrank::ops {

// x: a contiguous float32 or float64 CPU tensor [.., m], changed in place; shift: one value per row,
// any shape that broadcasts to [.., 1]. Returns the row sums [.., 1] when `row_sums`, else an
// undefined tensor.
at::Tensor shifted_exp_(const at::Tensor& x, const at::Tensor& shift, double eps, bool row_sums);

// True when float32 rows run the AVX2 kernel on this machine.
bool shifted_exp_uses_avx2();

}  // namespace lowrank::ops
