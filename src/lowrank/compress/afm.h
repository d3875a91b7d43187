// Atomic Feature Mimicking (AFM): low-rank compression of a layer's *output features* (Yu, Fu,
// Ding, Zhou & Wu, 2024, "Unified Low-rank Compression Framework for Click-through Rate Prediction",
// KDD'24, arXiv:2405.18146; code yuhao318/Atomic_Feature_Mimicking, afm_mlp.py and afm_emb.py).
// For a layer y = W x + b and its outputs on the training data:
//   μ = E[y],  C = E[y yᵀ] − μ μᵀ = U Λ Uᵀ  (λ₁ ≥ λ₂ ≥ …),  U_k = the top-k eigenvectors
//   y ≈ U_k U_kᵀ (y − μ) + μ  ⇒  two layers  W₁ = U_kᵀ W,  b₁ = U_kᵀ b,  W₂ = U_k,  b₂ = (I − U_k U_kᵀ) μ
// (afm_mlp.py `step3`: new_w = Vᵀ[:k] W, new_b = Vᵀ[:k] b, after_w = U[:, :k],
//  after_b = (I − U_k U_kᵀ) μ). The expected squared output error on the calibration data is then
//   E‖y − ŷ‖² = E‖(I − U_k U_kᵀ)(y − μ)‖² = Σ_{i>k} λ_i,
// the least any rank-k affine reconstruction can reach (PCA's optimality).
// Embeddings (afm_emb.py `step3`): e = E[x] becomes E' = (E − μ) U_k (the table shrinks to k columns)
// and a linear layer P = U_k, p = μ after it; the same reconstruction, with the centring folded into
// the table.
// Optionally (the authors' *_Ada_Act models, deepctr_torch/layers/core.py `DNN_Ada_Act`) a ReLU goes
// between W₁ and W₂ and the model is fine-tuned; without fine-tuning the linear form is the method.
// Uncentred (`centred = false`): C = E[y yᵀ], b₂ = 0. For y = W x (no bias) this is U_k U_kᵀ W, the
// minimiser of E‖(W − Ŵ) x‖² over rank-k Ŵ: SVD-LLM's truncation-aware whitening (tested equal).
// On a language model's slots (`lowrank compress --method afm`) C and μ follow from the input
// statistics the calibration already collects, C = W Cov(x) Wᵀ, μ = W E[x] + b, so no output pass
// is needed; the slot becomes a lowrank operator U_k (U_kᵀ W x) + (U_k U_kᵀ b + b₂) whose bias is
// new when the slot had none.
// Deviation: eigenvectors come from a float64 symmetric eigendecomposition (the authors call
// torch.linalg.svd on the float32 covariance: the same vectors for a PSD matrix, to rounding).
#pragma once

#include <cstdint>
#include <memory>

#include <ATen/ATen.h>

#include "lowrank/compress/methods.h"

namespace lowrank::compress {

// Σ y, Σ y yᵀ and the count of the outputs seen, in float64.
struct OutputStatistics {
  at::Tensor sum;     // [n]
  at::Tensor square;  // [n, n]
  int64_t count = 0;
  // Adds a batch of outputs y [B, n] (any float dtype).
  void add(const at::Tensor& y);
  at::Tensor mean() const;  // E[y]
  // E[y yᵀ] − μ μᵀ, or E[y yᵀ] when not `centred`. Throws InvalidArgument when nothing was added.
  at::Tensor covariance(bool centred = true) const;
};

struct AfmProjection {
  at::Tensor basis;        // U_k [n, k] float64, columns by decreasing eigenvalue
  at::Tensor eigenvalues;  // every eigenvalue of C [n], decreasing (float64)
  at::Tensor mean;         // μ [n] float64 (zeros when uncentred)
  int64_t rank() const { return basis.size(1); }
  // Σ_{i>k} λ_i: the expected squared output error on the calibration data.
  double tail() const;
};

// The top-k projection of the statistics. Throws InvalidArgument for k < 1 or k >= n (the width:
// nothing to compress) or empty statistics.
AfmProjection afm_projection(const OutputStatistics& stats, int64_t k, bool centred = true);
// The same from C and μ directly.
AfmProjection afm_projection(const at::Tensor& covariance, const at::Tensor& mean, int64_t k);

// y = W x + b (b may be undefined) as two layers (float32 results).
struct AfmLinear {
  at::Tensor w1, b1, w2, b2;  // [k, in], [k], [out, k], [out]
};
AfmLinear afm_linear(const at::Tensor& weight, const at::Tensor& bias, const AfmProjection& p);

// An embedding table E [V, d] as E' = (E − μ) U_k [V, k] and the layer P = U_k [d, k], p = μ [d].
struct AfmEmbedding {
  at::Tensor table, proj_weight, proj_bias;
};
AfmEmbedding afm_embedding(const at::Tensor& table, const AfmProjection& p);

// The registry's slot compressor (`--method afm`): needs the slot's Gram matrix and input sum.
// Method options: {"centred": true}. Throws InvalidArgument for a rank >= out_features.
std::shared_ptr<StoredOperator> compress_afm(const SlotInput& in, const CompressOptions& options);

}  // namespace lowrank::compress
