#include "lowrank/linalg/dct.h"

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"

namespace lowrank::linalg {

at::Tensor dct2_matrix(int64_t n, at::ScalarType dtype) {
  LR_CHECK(n >= 1, InvalidArgument, "dct2_matrix: size n = ", n, " must be >= 1");
  LR_CHECK(at::isFloatingType(dtype), InvalidArgument, "dct2_matrix: dtype ", dtype, " is not floating");
  auto opts = at::TensorOptions().dtype(at::kDouble);
  auto k = at::arange(n, opts).unsqueeze(1);  // (n, 1) frequency
  auto j = at::arange(n, opts).unsqueeze(0);  // (1, n) sample
  auto C = at::cos(k * (2 * j + 1) * (std::numbers::pi / (2.0 * static_cast<double>(n))));
  C.mul_(std::sqrt(2.0 / static_cast<double>(n)));
  C[0].mul_(1.0 / std::numbers::sqrt2);  // c_0 = 1/sqrt(2)
  return C.to(dtype);
}

at::Tensor dct3_matrix(int64_t n, at::ScalarType dtype) {
  return dct2_matrix(n, dtype).mT().contiguous();
}

}  // namespace lowrank::linalg
