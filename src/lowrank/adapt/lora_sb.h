// LoRA-SB — Ponkshe et al., 2024, "Initialization using Update Approximation is a Silver Bullet for
// Extremely Efficient Low-Rank Fine-Tuning", arXiv:2411.19557. Official code:
// RaghavSinghal10/lora-sb (utils/gradient_utils.py, train_*.py).
//
// LoRA-XS's form (lora_xs.h), Δ(x) = s · B R A x with B, A frozen and only R [r, r] trained,
// initialised so that s·B R A is the best rank-r approximation of full fine-tuning's first update:
//   ΔW₁ = −η · sign(G)   (update = "sign", default)   or   ΔW₁ = −η · G   (update = "gradient")
//   ΔW₁ ≈ U_r S_r V_rᵀ (truncated SVD),  B = U_r,  A = V_rᵀ,  R = S_r / s
// with G = LayerSpec::gradient (dL/dW summed over the initialisation batches; finetune takes
// init_batches of them) and η = option init_lr. The official code estimates the update as
// −η·sign(ΣG) (estimate_and_process_grads_torch_*: AdamW's first step, whose m/√v is sign(g)),
// with η = lr / warmup_steps, the first step's rate of a linear warmup; init_lr's default 5e-5 is
// that rate under finetune's defaults (lr 1e-3, 20 warmup steps). "gradient" is SGD's first step.
// R = S_r/s makes s·B R A equal the truncation for any s; the official scripts set α = r (s = 1),
// where the 1/s factor does not show, and its initialisation file (initialization_utils.py) could
// not be read here, so the placement of s is this file's choice. B and A are orthonormal, as the
// paper requires for its scale-independence argument.
//
// Saved like LoRA-XS (lora_A.weight, lora_B.weight, lora_R.weight) with peft_type
// "LOWRANK_LORA_SB": loading needs no gradient. Deviation: the exact SVD (the official code runs
// a randomized one on large matrices).
#pragma once

#include "lowrank/adapt/lora_xs.h"
