#include "lowrank/linalg/ldu.h"

#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/linalg/check_internal.h"

namespace lowrank::linalg {

at::Tensor Ldu::reconstruct() const {
  return at::matmul(P.mT(), at::matmul(L * D.unsqueeze(0), U));
}

Ldu ldu(const at::Tensor& A_in, double rcond) {
  auto A = detail::working_matrix(A_in, "ldu: A");
  const int64_t m = A.size(0), n = A.size(1);
  LR_CHECK(m >= 1 && n >= 1, InvalidArgument, "ldu: A is empty (", m, "x", n, ")");
  LR_CHECK(at::isfinite(A).all().item<bool>(), InvalidArgument, "ldu: A has non-finite entries");
  if (rcond < 0) {
    const double eps = A.scalar_type() == at::kDouble
                           ? std::numeric_limits<double>::epsilon()
                           : static_cast<double>(std::numeric_limits<float>::epsilon());
    rcond = static_cast<double>(std::max(m, n)) * eps;
  }
  auto [P_t, L, U_full] = at::linalg_lu(A);  // A = P_t L U_full
  auto D = U_full.diagonal();
  auto abs_d = D.abs();
  const double d_max = abs_d.max().item<double>();
  auto small = (abs_d <= rcond * d_max).nonzero();
  LR_CHECK(d_max > 0 && small.numel() == 0, InvalidArgument, "ldu: A (", m, "x", n,
           ") is rank-deficient: pivot ", (small.numel() ? small[0][0].item<int64_t>() : 0), " is ",
           (small.numel() ? D[small[0][0]].item<double>() : 0.0), " (max |pivot| ", d_max, ", rcond ", rcond,
           "); LDU needs nonzero pivots");
  Ldu out;
  out.P = P_t.mT().contiguous();
  out.L = L;
  out.D = D.contiguous();
  out.U = U_full / D.unsqueeze(1);
  return out;
}

}  // namespace lowrank::linalg
