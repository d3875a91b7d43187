// GradNormLoRP's weight parameterisation — Huang, Shen, Zhu, Rudinac & Kanoulas, 2024, "Gradient
// Weight-normalized Low-rank Projection for Efficient LLM Training", AAAI 2025, arXiv:2412.19616;
// code Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-LLM-Training
// (torchrun_main.py for pre-training and test_fine.py / amfgalore.py for fine-tuning: both wrap
// the model in PEFT's DoRA, LoraConfig(r=8, lora_alpha=16, use_dora=True), and hand the
// adapters' factors to a GaLore optimizer).
//
// The paper applies low-rank approximation to the weights and to the gradients. The weights
// (this file): weight-vector normalisation (Salimans & Kingma, 2016),
//     w = δ·v/‖v‖,                                                       (weight normalisation)
// with the direction kept as the frozen initial weight plus a trained low-rank part,
//     W = M·(W₀ + IJ)/‖W₀ + IJ‖_c,                                       (the GradNormLoRP weight)
// ‖·‖_c the norm of each column of the paper's [in, out] matrix, i.e. of each output row of the
// stored [out, in] weight (PEFT's DoRA weight_norm over dim 1). As the code builds it (PEFT LoRA:
// IJ = s·B·A, s = α/r):
//     V = W₀ + s·B·A,   n_i = ‖V_i‖ (row i, treated as a constant in backward),
//     W = diag(m / n)·V,   y = x Wᵀ + b,
// B [out, r], A [r, in], m [out]; W₀ [out, in] is the slot's dense initial weight, frozen.
// Trained: m, A, B (and the slot bias). Init as PEFT: B = 0, A ~ kaiming_uniform(a=√5)
// = U(±1/√in), m = ‖W₀‖_row, so W = W₀ at step 0. Gradients, with G = ∂L/∂W and V̂ = V/n:
//     ∂L/∂m_i = ⟨G_i, V̂_i⟩,   ∂L/∂V = diag(m/n)·G,   ∂L/∂B = s·(∂L/∂V)·Aᵀ,   ∂L/∂A = s·Bᵀ·(∂L/∂V).
// The gradients of A and B are what the optimizer projects (optim/gradnorm_lorp.h: D̃ =
// U η(Uᵀ D V) Vᵀ, one-sided as GaLore's code); m takes plain Adam.
// Defaults: r = 8, α = 16 (the code's LoraConfig in every script).
// Deviations: the code's LoRA dropout (0.1) is not applied; the detached norm follows the code
// (PEFT's DoRA, after DoRA §4.3) — the paper's equation does not say; a zero row of W₀ + s·B·A
// divides by 1e-12 instead of 0; the authors' pre-training script also freezes every tensor
// outside the DoRA layers (embeddings, norms, lm_head: a side effect of get_peft_model), which
// here are trained as in every other parameterisation.
#pragma once

#include <memory>
#include <string_view>

#include <ATen/ATen.h>

#include "lowrank/train/parameterization.h"

namespace lowrank::train {

class GradNormLorpOperator final : public ParameterizedOperator {
 public:
  // base W₀ [out, in] (frozen), b [out, r], a [r, in], magnitude m [out], bias [out] or
  // undefined. Throws InvalidArgument on mismatched shapes.
  GradNormLorpOperator(at::Tensor base, at::Tensor b, at::Tensor a, at::Tensor magnitude, double scale,
                       at::Tensor bias = {});
  static std::shared_ptr<GradNormLorpOperator> init(const nn::LinearSlot& slot,
                                                    const ParameterizationConfig& config, uint64_t seed);

  std::string_view kind() const override { return "gradnormlorp"; }
  int64_t in_features() const override { return base_.size(1); }
  int64_t out_features() const override { return base_.size(0); }
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors trainable() const override;
  nn::NamedTensors frozen() const override { return {{"base_weight", base_}}; }
  // W = diag(m/n)·(W₀ + s·B·A), differentiable in m, A, B (n detached).
  at::Tensor dense_weight() const override;
  at::Tensor bias() const override { return bias_; }

  const at::Tensor& base() const { return base_; }
  const at::Tensor& a() const { return a_; }
  const at::Tensor& b() const { return b_; }
  const at::Tensor& magnitude() const { return magnitude_; }
  double scale() const { return scale_; }

 private:
  at::Tensor base_;       // W₀ [out, in], frozen
  at::Tensor b_;          // [out, r]
  at::Tensor a_;          // [r, in]
  at::Tensor magnitude_;  // m [out]
  double scale_;          // s = α/r
  at::Tensor bias_;
};

void register_gradnorm_lorp(Registry<ParameterizationMethod>& registry);

// `--optimizer gradnormlorp` projects the gradients of the factors of W = m·(W₀ + s·B·A)/‖·‖_row,
// so it runs only with that weight form: pretrain's --parameterization gradnormlorp, finetune's
// --method dora. Throws InvalidArgument naming `flag` when `optimizer` is gradnormlorp and
// `method` is not `required`.
void check_gradnorm_lorp_pairing(std::string_view optimizer, std::string_view flag, std::string_view method,
                                 std::string_view required);

}  // namespace lowrank::train
