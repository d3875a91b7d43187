// Low-rank compensation of a compressed weight: given W and its compressed form W_c (quantised,
// pruned or low rank), add B A of rank r so that W_c + B A approximates W.
//   eora  EoRA (Liu et al., 2024, "EoRA: Training-free Compensation for Compressed LLM with
//         Eigenspace Low-Rank Approximation", arXiv:2410.21271; GPTQModel's eora.py): with
//         H = X Xᵀ = Q Λ Qᵀ and Q' = Q Λ^{1/2}, B A = [ΔW Q']_r Q'⁻¹, ΔW = W − W_c, which minimises
//         ||(ΔW − B A) X||_F: the layer-output error rather than the weight error.
//         B = U_r Σ_r^{1/2}, A = Σ_r^{1/2} V_rᵀ Q'⁻¹ (the code's split).
//   svd   the baseline EoRA compares against: the plain truncated SVD of ΔW (the same split).
// Deviations: Q'⁻¹ is the closed form Λ^{-1/2} Qᵀ with eigenvalues below n·eps·λ_max zeroed (a
// pseudo-inverse), where the code raises negative eigenvalues to the smallest positive one and
// inverts numerically (linalg/whiten.h); A and B stay in the compute dtype (the code stores fp16).
#include <ATen/ATen.h>

#include "lowrank/compress/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/linalg/whiten.h"

namespace lowrank::compress {

std::shared_ptr<StoredOperator> compensate(std::shared_ptr<const StoredOperator> compressed,
                                           const at::Tensor& weight, const at::Tensor& gram, int64_t rank,
                                           const std::string& method) {
  const at::Tensor delta = weight.to(at::kDouble) - compressed->dense_weight().to(at::kDouble);
  linalg::Whitener w;
  if (method == "eora") {
    LR_CHECK(gram.defined(), InvalidArgument,
             "EoRA compensation needs calibration statistics (the Gram matrix)");
    w = linalg::eigen_whitener(gram.to(at::kDouble));
  } else {
    LR_CHECK(method == "svd", InvalidArgument, "unknown compensation \"", method, "\"; use eora or svd");
    w = linalg::diagonal_whitener(at::ones({weight.size(1)}, at::kDouble));
  }
  const linalg::LowRankFactors f = linalg::whitened_lowrank(delta, w, rank);
  const at::ScalarType dtype = weight.scalar_type();
  return std::make_shared<CompensatedOperator>(std::move(compressed), f.R.to(dtype).contiguous(),
                                               f.L.to(dtype).contiguous(), method);
}

}  // namespace lowrank::compress
