// Argument checks shared by the linalg routines (not part of the public API).
#pragma once

#include <cstdint>
#include <string_view>

#include <ATen/ATen.h>

#include "lowrank/core/error.h"
#include "lowrank/linalg/svd.h"

namespace lowrank::linalg::detail {

// A floating (or integer) tensor of dimension `dims`, converted to the module's working dtype
// (float64 stays, everything else becomes float32). Throws InvalidArgument naming `what`.
inline at::Tensor working_tensor(const at::Tensor& A, int64_t dims, std::string_view what) {
  LR_CHECK(A.defined(), InvalidArgument, what, " is an undefined tensor");
  LR_CHECK(A.dim() == dims, InvalidArgument, what, " must be ", dims, "-D, got shape ", A.sizes());
  LR_CHECK(!at::isComplexType(A.scalar_type()) && A.scalar_type() != at::kBool, Unsupported, what,
           " has dtype ", A.scalar_type(), "; only real floating or integer tensors are supported");
  return A.to(working_dtype(A));
}

inline at::Tensor working_matrix(const at::Tensor& A, std::string_view what) {
  return working_tensor(A, 2, what);
}

inline void check_rank(int64_t k, int64_t m, int64_t n, std::string_view what) {
  LR_CHECK(k >= 1 && k <= std::min(m, n), InvalidArgument, what, ": rank k = ", k,
           " is not in [1, min(m, n)] = [1, ", std::min(m, n), "] for a ", m, "x", n, " matrix");
}

}  // namespace lowrank::linalg::detail
