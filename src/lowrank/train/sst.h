// Sparse Spectral Training (SST) — Zhao, Zhang, Li, Liu & Cannistraci, 2024, "Sparse Spectral
// Training and Inference on Euclidean and Hyperbolic Neural Networks", ICML 2025,
// arXiv:2405.15481 (code: anonymous.4open.science/r/sparse_spectral_training-6A2C, later
// github.com/biomedical-cybernetics/sparse-spectral-training; neither could be read here, so the
// rules below are the paper's as reported by two independent summaries of its §4 and Alg. 1).
// Implements W = U·diag(σ)·Vᵀ, initialised by the SVD of the slot's dense init (U [out, d],
// σ [d], V [in, d], d = min(out, in): zero distortion at step 0):
//   y = ((x V) ⊙ σ) Uᵀ + b.
// - Every step all d singular values are trained: ∂L/∂σ_i = u_iᵀ (∂L/∂W) v_i; after the update
//   σ ← max(σ, 0).
// - Only r = `rank` singular vectors are trained at a time. Each iteration the indices I (r of d)
//   are drawn by a multinomial over the paper's mixture of the uniform and the σ-weighted
//   distribution (§4.4, "SST balances exploitation and exploration"):
//       p(i) = ½·(1/d + σ_i / Σ_j σ_j)
//   without replacement (I names r distinct columns; torch.multinomial(p, r, replacement=False),
//   so the first index follows p exactly and the next ones p renormalised over those left). When
//   Σσ = 0 the σ term is 0 and p is uniform. The sampled vectors get the paper's *enhanced*
//   gradients, without the σ_i factor of the chain rule:  ∂L/∂u_i = (∂L/∂W) v_i,
//   ∂L/∂v_i = (∂L/∂W)ᵀ u_i  (autograd gives σ_i·(∂L/∂W) v_i; the forward adds exactly-zero terms
//   whose gradient is the enhanced one); after each update they are renormalised to unit length.
// - Memory as the paper's implementation: the sampled vectors live in their own trained tensors
//   U_I [out, r], V_I [in, r] (optimizer state only for them); the full U, V are frozen state
//   whose columns I are masked out of the frozen product and written back at each swap. The
//   other d − r vectors are bitwise unchanged by a step.
// - Every `resample_every` steps (an iteration; 0: once per round) a new I is drawn (the previous
//   vectors are written back; U_I's and V_I's Adam moments are zeroed — they belonged to other
//   vectors).
// - Every `reset_every` = T steps (a round) the "SVD re-initialisation": U, σ, V ← SVD(U diag(σ)
//   Vᵀ) (restores orthogonality; the product is unchanged), all Adam moments of σ, U_I, V_I are
//   zeroed, I is redrawn, and the learning rate of the next `restart_warmup` steps is ramped as
//   ReLoRA's jagged schedule (jagged_lr_factor, schedule.h).
// Draws are counter-based (seed, draw number, slot), so a resumed run repeats them; I is
// checkpointed as frozen state.
// Deviations / unverified: the unit renormalisation, the clamp of σ and the momentum reset with
// warmup are from the summaries of the paper [unverified against the code]; the round and
// resample periods are this implementation's defaults, not the paper's (not established); the
// Adam step count keeps running across resets; a slot bias is kept and trained.
#pragma once

#include <cstdint>
#include <memory>

#include <ATen/ATen.h>

#include "lowrank/train/parameterization.h"

namespace lowrank::train {

class SstOperator final : public ParameterizedOperator {
 public:
  // u [out, d], sigma [d], v [in, d] (the full factors; columns `indices` are superseded by the
  // active ones), indices int64 [r] (distinct, in [0, d)), u_active [out, r], v_active [in, r],
  // bias [out] or undefined. Throws InvalidArgument on mismatched shapes or indices.
  SstOperator(at::Tensor u, at::Tensor sigma, at::Tensor v, at::Tensor indices, at::Tensor u_active,
              at::Tensor v_active, at::Tensor bias = {});
  // From the SVD of the slot's dense weight, with a first draw of r indices from `seed`.
  static std::shared_ptr<SstOperator> init(const nn::LinearSlot& slot, const ParameterizationConfig& config,
                                           uint64_t seed);

  std::string_view kind() const override { return "sst"; }
  int64_t in_features() const override { return v_.size(0); }
  int64_t out_features() const override { return u_.size(0); }
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors trainable() const override;
  nn::NamedTensors frozen() const override;
  at::Tensor dense_weight() const override;
  at::Tensor bias() const override { return bias_; }

  // The full U [out, d] and V [in, d] with the active columns in place (copies).
  at::Tensor full_u() const;
  at::Tensor full_v() const;
  // After an optimizer update: σ ← max(σ, 0), active vectors renormalised to unit length.
  void project() const;
  // Writes the active vectors back and draws a new I (sst_sample) from `seed`. In place, without
  // autograd.
  void resample(uint64_t seed) const;
  // U, σ, V ← SVD(U diag(σ) Vᵀ) of the current product (active vectors written back first); the
  // active vectors are re-gathered at the current I. In place, without autograd.
  void reinitialize() const;

  const at::Tensor& sigma() const { return sigma_; }
  const at::Tensor& indices() const { return indices_; }
  const at::Tensor& u_active() const { return u_active_; }
  const at::Tensor& v_active() const { return v_active_; }

 private:
  void write_back() const;
  void gather() const;

  at::Tensor u_;         // [out, d], frozen
  at::Tensor sigma_;     // [d], trained
  at::Tensor v_;         // [in, d], frozen
  at::Tensor indices_;   // int64 [r], frozen: the columns of U, V being trained
  at::Tensor u_active_;  // [out, r], trained: U[:, I]
  at::Tensor v_active_;  // [in, r], trained: V[:, I]
  at::Tensor bias_;
};

// The paper's sampling distribution over the d singular vectors, p(i) = ½·(1/d + σ_i/Σ_j σ_j)
// with σ clamped at 0 (uniform when Σσ = 0): float64 [d] on the CPU, summing to 1.
at::Tensor sst_probabilities(const at::Tensor& sigma);

// r distinct indices of [0, σ.numel()) drawn without replacement by a multinomial over
// sst_probabilities(σ) from `seed`: int64 [r] on the CPU. Throws InvalidArgument unless
// 0 <= r <= d.
at::Tensor sst_sample(const at::Tensor& sigma, int64_t r, uint64_t seed);

void register_sst(Registry<ParameterizationMethod>& registry);

}  // namespace lowrank::train
