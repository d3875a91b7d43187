// RandLoRA — Albert et al., 2025, "RandLoRA: Full-rank parameter-efficient fine-tuning of large
// models", arXiv:2502.00987, in PEFT's implementation and file format (peft/tuners/randlora:
// config.py, layer.py, model.py), peft_type "RANDLORA".
//
// Frozen random bases shared by every adapted layer, sized for the largest targeted shape
// (max_dim × min_dim over the element-wise largest (out, in)):
//   A [r, 1, min_dim],  B [max_dim, N, r],  N = ⌈min_dim / r⌉,
// and per layer (out, in), with m = min(out, in), M = max(out, in), n = ⌈m / r⌉, the trained
//   λ [r, n] (randlora_lambda, 0 at initialisation) and γ [n, m] (randlora_gamma, 1/max(n, m)).
// The update is full rank (r·n ≥ m) and, as layer.py computes it,
//   Â = flatten₀₁(λ[:, :, None] · A[:, :n, :m] · γ[None])   [r·n, m]   (row k: i = k / n, j = k mod n)
//   B̂ = flatten₁₂(B[:M, :n, :])                              [M, n·r]  (column k: j = k / r, i = k mod r)
//   ΔW = s · B̂ Â  when in = m (in ≤ out),  s · (B̂ Â)ᵀ  otherwise,   s = randlora_alpha / r,
// a sum of r·n rank-one terms like the paper's Σ_j B_j diag(λ_j) A diag(γ_j), with PEFT's
// assignment of B's columns to the terms (row k of Â meets column k of B̂), reproduced exactly.
// Δ(x) = ΔW x is computed as two products, x through Â (or B̂ᵀ) first, as PEFT does.
//
// Bases: generated as model.py does, from a CPU generator seeded with projection_prng_key:
// dense — A = kaiming_uniform(a=√5) of a bfloat16 [r, 1, min_dim], then N bfloat16 [max_dim, 1, r]
// for B, each divided by its standard deviation; sparse / very_sparse — uniform draws mapped to
// {−1, 0, 1} (probability 1/(2k) each sign, k = 3 or √min_dim), divided by their standard
// deviation. They are written once per file as base_model.randlora_A / base_model.randlora_B
// (PEFT's save_projection = true names); randlora_lambda and randlora_gamma per module.
// Loading reads the bases from the file (base_model.randlora_A/B, or PEFT ≥ 0.21's per-module
// copies); files saved with save_projection = false, which PEFT rebuilds from the seed with
// torch's RNG, are rejected: only the stored-bases case is supported.
// Options (adapter_config.json, PEFT's keys): r, randlora_alpha (640), randlora_dropout (0),
// projection_prng_key (0), sparse, very_sparse.
// Deviations: PEFT ≥ 0.21 also writes a copy of both bases under every module; this writes them
// once (PEFT loads such files, warning about the missing copies). PEFT draws the dense bases in
// float16 where accelerate reports no bfloat16 support; this always uses bfloat16. save_projection
// is always written true, since the bases are always saved.
#pragma once

#include <memory>

#include "lowrank/adapt/adapter.h"

namespace lowrank::adapt {

class RandloraAdapter final : public TrainableAdapter {
 public:
  // a [r, 1 or ≥ n, ≥ m] and b [≥ M, ≥ n, r] the shared bases, lambda [r, n], gamma [n, m];
  // in/out the layer's features; scaling randlora_alpha / r; dropout randlora_dropout.
  RandloraAdapter(at::Tensor a, at::Tensor b, at::Tensor lambda, at::Tensor gamma, int64_t in, int64_t out,
                  double scaling, double dropout);
  std::string_view kind() const override { return "randlora"; }
  nn::NamedTensors tensors() const override {
    return {{"randlora_lambda", lambda_}, {"randlora_gamma", gamma_}};
  }
  nn::NamedTensors parameters() const override { return tensors(); }
  nn::NamedTensors shared_tensors() const override {
    return {{"base_model.randlora_A", a_}, {"base_model.randlora_B", b_}};
  }
  at::Tensor delta_weight(const nn::BaseOperator& base) const override;
  const at::Tensor& basis_a() const { return a_; }
  const at::Tensor& basis_b() const { return b_; }

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor& base_y,
                           const nn::BaseOperator& base) const override;

 private:
  at::Tensor scaled_a() const;  // Â [r·n, m]
  at::Tensor flat_b() const;    // B̂ [M, n·r]

  at::Tensor a_, b_, lambda_, gamma_;
  int64_t in_, out_, n_;
  double scaling_, dropout_p_;
};

// PEFT's random bases for rank r and the largest targeted shape (out, in): {A [r, 1, min_dim],
// B [max_dim, N, r]}, float32 (values of bfloat16 precision for the dense kind).
std::pair<at::Tensor, at::Tensor> randlora_bases(int64_t r, int64_t largest_out, int64_t largest_in,
                                                 uint64_t seed, bool sparse, bool very_sparse);

}  // namespace lowrank::adapt
