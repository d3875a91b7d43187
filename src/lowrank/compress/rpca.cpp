// Sparse + low-rank weights by robust PCA: W = L + S with L low rank and S sparse, by principal
// component pursuit (Candès et al., 2011; inexact ALM, linalg/rpca.h), the weight-space analogue
// of Scatterbrain's sparse + low-rank split (Chen et al., 2021, arXiv:2110.15343, which splits the
// attention matrix the same way). L is stored as factors U = U_k Σ_k^{1/2}, V = Σ_k^{1/2} V_kᵀ of
// its rank k (numerical rank, σ_i > 1e-6 σ_1, or --rank when smaller), S in CSR form (int64 row
// offsets, int32 column indices, values: 4 index bytes per nonzero, where flat int64 coordinates
// took 8 and could cost more than the dense matrix).
// Options (method_options): lambda (default 1/sqrt(max(m, n))), max_iters (default 500).
// Deviation: when --rank cuts L below its numerical rank, the dropped part is lost (not moved to
// S); the report's error shows it.
#include <ATen/ATen.h>

#include "lowrank/compress/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/linalg/rpca.h"
#include "lowrank/linalg/svd.h"

namespace lowrank::compress {

std::shared_ptr<StoredOperator> compress_rpca(const SlotInput& in, const CompressOptions& options) {
  linalg::RpcaOptions o;
  o.lambda = options.method_options.value("lambda", -1.0);
  o.max_iters = options.method_options.value("max_iters", int64_t{500});
  const linalg::RpcaResult r = linalg::robust_pca(in.weight.to(at::kDouble), o);
  const at::Tensor s = at::linalg_svdvals(r.L);
  const double top = s[0].item<double>();
  int64_t k = top > 0 ? (s > 1e-6 * top).sum().item<int64_t>() : 1;
  k = std::max<int64_t>(1, in.rank > 0 ? std::min(k, in.rank) : k);
  const linalg::Svd svd = linalg::truncated_svd(r.L, k);
  const at::Tensor root = at::sqrt(svd.S);
  const at::ScalarType dtype = in.weight.scalar_type();
  const at::Tensor u = (svd.U * root).to(dtype).contiguous();
  const at::Tensor v = (root.unsqueeze(1) * svd.Vh).to(dtype).contiguous();
  return SparseLowRankOperator::from_dense_sparse(u, v, r.S.to(dtype), in.bias);
}

}  // namespace lowrank::compress
