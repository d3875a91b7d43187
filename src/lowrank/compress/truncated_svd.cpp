// Truncated SVD compression on the one whitened primitive (linalg/whiten.h): every method here is
// argmin_{rank ≤ k} ||(W − Ŵ) S||_F = [W S]_k S⁻¹ for its own S (linalg/whiten.h derives it):
//   svd      S = I. LoRD (Kaushal et al., 2023, arXiv:2309.14021): one-shot truncated SVD of every
//            targeted weight at a uniform rank reduction.
//   asvd     S = diag(s), s_j = (mean_t |x_tj|)^α, α = 0.5 (Yuan et al., 2023, "ASVD:
//            Activation-aware Singular Value Decomposition", arXiv:2312.05821; ASVD4LLM's code).
//   fwsvd    S = diag(f_j^α), f_j = sqrt(mean_batches mean_i (∂L/∂W_ij)²), α = 1 (Hsu et al., 2022,
//            "Language model compression with weighted low-rank factorization", ICLR; the per-input
//            form of ASVD4LLM's implementation, so α = 1 weights by the square root of the Fisher
//            information as the paper does).
//   svd_llm  S = chol(H), H = Σ_t x_t x_tᵀ (Wang et al., 2024, "SVD-LLM: Truncation-aware Data
//            Whitening for Large Language Model Compression", arXiv:2403.07378, Alg. 1): truncating
//            σ_i of W S costs exactly σ_i² of ||(W − Ŵ) X||_F².
// Factors as SVD-LLM: U = U_k Σ_k^{1/2}, V = Σ_k^{1/2} V_kᵀ S⁻¹ (the √Σ split of ASVD too).
// Deviations: the decomposition runs in float64 (the reference codes use fp32 SVDs; float64 costs
// time only); H that is not numerically positive definite is damped by δ·mean(diag H) as GPTQ
// does rather than shifted by −λ_min (linalg/whiten.h explains); ASVD's and FWSVD's randomized
// svd_lowrank is replaced by the exact truncated SVD (our matrices are small enough).
#include <ATen/ATen.h>

#include "lowrank/compress/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/linalg/whiten.h"

namespace lowrank::compress {

namespace {

linalg::Whitener whitener_for(const SlotInput& in, const CompressOptions& options) {
  const std::string& m = options.method;
  const int64_t n = in.weight.size(1);
  if (m == "svd") return linalg::diagonal_whitener(at::ones({n}, at::kDouble));
  LR_CHECK(in.stats != nullptr, InvalidArgument, "method ", m, " needs calibration statistics for slot ",
           in.name);
  if (m == "asvd") {
    const double alpha = options.alpha < 0 ? 0.5 : options.alpha;
    return linalg::diagonal_whitener(at::pow(in.stats->mean_abs().to(at::kDouble), alpha));
  }
  if (m == "fwsvd") {
    const double alpha = options.alpha < 0 ? 1.0 : options.alpha;
    return linalg::diagonal_whitener(at::pow(in.stats->fisher_importance().to(at::kDouble), alpha));
  }
  LR_CHECK(m == "svd_llm", InvalidArgument, "truncated SVD: unknown variant ", m);
  LR_CHECK(in.stats->gram.defined(), InvalidArgument, "svd_llm needs the Gram matrix of slot ", in.name);
  return linalg::cholesky_whitener(in.stats->gram.to(at::kDouble));
}

}  // namespace

std::shared_ptr<StoredOperator> compress_truncated_svd(const SlotInput& in, const CompressOptions& options) {
  const linalg::Whitener w = whitener_for(in, options);
  const linalg::LowRankFactors f = linalg::whitened_lowrank(in.weight.to(at::kDouble), w, in.rank);
  const at::ScalarType dtype = in.weight.scalar_type();
  return std::make_shared<LowRankOperator>(f.L.to(dtype).contiguous(), f.R.to(dtype).contiguous(), in.bias);
}

}  // namespace lowrank::compress
