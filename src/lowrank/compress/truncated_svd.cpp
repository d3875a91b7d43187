// Truncated SVD compression on the one whitened primitive (linalg/whiten.h): every method here is
// argmin_{rank ≤ k} ||(W − Ŵ) S||_F = [W S]_k S⁻¹ for its own S (linalg/whiten.h derives it):
//   svd      S = I. LoRD (Kaushal et al., 2023, arXiv:2309.14021): one-shot truncated SVD of every
//            targeted weight at a uniform rank reduction. Also the post-training half of
//            Greenformers' low-rank transformation (Winata et al., 2020, arXiv:1910.13923; code
//            SamuelCahyawijaya/greenformer, auto_fact.py `solver='svd'`; docs/methods/greenformers.md).
//   asvd     S = diag(s), s_j = (mean_t |x_tj|)^α, α = 0.5 (Yuan et al., 2023, "ASVD:
//            Activation-aware Singular Value Decomposition", arXiv:2312.05821; ASVD4LLM's code).
//   fwsvd    S = diag(f_j^α), f_j = sqrt(mean_batches mean_i (∂L/∂W_ij)²), α = 1 (Hsu et al., 2022,
//            "Language model compression with weighted low-rank factorization", ICLR; the per-input
//            form of ASVD4LLM's implementation, so α = 1 weights by the square root of the Fisher
//            information as the paper does).
//   svd_llm  S = chol(H), H = Σ_t x_t x_tᵀ (Wang et al., 2024, "SVD-LLM: Truncation-aware Data
//            Whitening for Large Language Model Compression", arXiv:2403.07378, Alg. 1): truncating
//            σ_i of W S costs exactly σ_i² of ||(W − Ŵ) X||_F².
//            With `{"update": true}`, SVD-LLM's second component in the form of the authors' code
//            (AIoT-MLSys-Lab/SVD-LLM, SVDLLM.py, `whitening_local_update` and class `local_update`,
//            run by `--step 2`; arXiv v1 §3.3 "layer-wise closed-form update"): keep the right
//            factor V = Σ_k^{1/2} V_kᵀ S⁻¹ and replace the left one by the least-squares solution
//              U' = argmin_U ||W X' − U V X'||_F = W H' Vᵀ (V H' Vᵀ)⁺,  H' = X' X'ᵀ,
//            where X' are the slot's inputs in the model whose earlier decoder layers are already
//            compressed and updated (compress_model runs the layers in order and calibrates each
//            layer again; the layer itself is still dense then, as in the authors' loop). With
//            X' = X the update is the identity (U' = U_k Σ_k^{1/2}): it corrects only the drift
//            that compression of the earlier layers causes in a layer's inputs.
// Factors as SVD-LLM: U = U_k Σ_k^{1/2}, V = Σ_k^{1/2} V_kᵀ S⁻¹ (the √Σ split of ASVD too).
// Deviations: the decomposition runs in float64 (the reference codes use fp32 SVDs; float64 costs
// time only); H that is not numerically positive definite is damped by δ·mean(diag H) as GPTQ
// does rather than shifted by −λ_min (linalg/whiten.h explains); ASVD's and FWSVD's randomized
// svd_lowrank is replaced by the exact truncated SVD (our matrices are small enough). The update
// solves least squares through H' = Q Λ Qᵀ (the factor X'ᵀ is replaced by (Q Λ^{1/2})ᵀ, which has
// the same Gram, so the minimiser is the same) instead of on the stacked activations, and draws
// X' from the same --calib-samples windows as the whitening (the authors' code draws 16 separate
// sequences, --updating_nsamples, for it).
#include <ATen/ATen.h>

#include "lowrank/compress/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/linalg/whiten.h"

namespace lowrank::compress {

namespace {

linalg::Whitener whitener_for(const SlotInput& in, const CompressOptions& options) {
  const std::string& m = options.method;
  const int64_t n = in.weight.size(1);
  // PELA's factorisation is svd's (the intermediate stage follows in compress/pipeline.cpp).
  if (m == "svd" || m == "pela") return linalg::diagonal_whitener(at::ones({n}, at::kDouble));
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

bool svd_llm_update(const CompressOptions& options) {
  if (!options.method_options.contains("update")) return false;
  const Json& v = options.method_options["update"];
  LR_CHECK(v.is_boolean(), InvalidArgument, "--method-options \"update\": ", v.dump(),
           " must be true or false");
  return v.get<bool>();
}

at::Tensor svd_llm_updated_left(const at::Tensor& weight, const at::Tensor& right, const at::Tensor& gram) {
  const at::Tensor W = weight.to(at::kDouble), R = right.to(at::kDouble), H = gram.to(at::kDouble);
  LR_CHECK(W.dim() == 2 && R.dim() == 2 && R.size(1) == W.size(1) && H.dim() == 2 && H.size(0) == W.size(1) &&
               H.size(1) == W.size(1),
           InvalidArgument, "svd_llm update: weight ", W.sizes(), ", right factor ", R.sizes(), " and Gram ",
           H.sizes(), " do not fit");
  // ||W X' − L R X'||_F = ||(W − L R) S'||_F for any S' S'ᵀ = H', so the problem is the least
  // squares S'ᵀ Rᵀ Lᵀ ≈ S'ᵀ Wᵀ with n equations instead of one per token.
  const at::Tensor S = linalg::eigen_whitener(H).S;
  const at::Tensor A = at::matmul(S.t(), R.t()), B = at::matmul(S.t(), W.t());
  // gelsd: the minimum-norm solution when R H' Rᵀ is singular (fewer tokens than the rank).
  const at::Tensor solution = std::get<0>(at::linalg_lstsq(A, B, std::nullopt, "gelsd"));
  return solution.t().contiguous();
}

std::shared_ptr<StoredOperator> compress_truncated_svd(const SlotInput& in, const CompressOptions& options) {
  const linalg::Whitener w = whitener_for(in, options);
  linalg::LowRankFactors f = linalg::whitened_lowrank(in.weight.to(at::kDouble), w, in.rank);
  if (in.update_gram.defined()) {
    LR_CHECK(options.method == "svd_llm" && svd_llm_update(options), InvalidArgument, "slot ", in.name,
             ": inputs for the update are given but method ", options.method,
             " does not update (svd_llm with --method-options '{\"update\": true}' does)");
    f.L = svd_llm_updated_left(in.weight, f.R, in.update_gram);
  }
  const at::ScalarType dtype = in.weight.scalar_type();
  return std::make_shared<LowRankOperator>(f.L.to(dtype).contiguous(), f.R.to(dtype).contiguous(), in.bias);
}

}  // namespace lowrank::compress
