#include "lowrank/linalg/fwht.h"

#include "lowrank/core/error.h"

namespace lowrank::linalg {

at::Tensor fwht(const at::Tensor& x) {
  LR_CHECK(x.dim() >= 1, InvalidArgument, "fwht: needs at least one dimension");
  const int64_t n = x.size(-1);
  LR_CHECK(n >= 1 && (n & (n - 1)) == 0, InvalidArgument, "fwht: the last dimension (", n,
           ") must be a power of two");
  const int64_t rows = x.numel() / n;
  at::Tensor y = x.reshape({rows, n}).clone();
  // Butterfly stage with half-width h: entries i and i + h of every block of 2h become
  // (a + b, a − b), i.e. one Kronecker factor [[1, 1], [1, −1]] of H_N per stage.
  for (int64_t h = 1; h < n; h *= 2) {
    const at::Tensor blocks = y.view({rows, n / (2 * h), 2, h});
    const at::Tensor a = blocks.select(2, 0), b = blocks.select(2, 1);
    y = at::stack({a + b, a - b}, 2).reshape({rows, n});
  }
  return y.reshape(x.sizes());
}

}  // namespace lowrank::linalg
