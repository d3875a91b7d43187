// LoRA-SB — Ponkshe et al., 2024, "Initialization using Update Approximation is a Silver Bullet for
// Extremely Efficient Low-Rank Fine-Tuning", arXiv:2411.19557. Official code:
// RaghavSinghal10/lora-sb (utils/initialization_utils.py, utils/gradient_utils.py, train_*.py).
//
// LoRA-XS's form (lora_xs.h), Δ(x) = s · B R A x with B, A frozen and only R [r, r] trained,
// initialised from the rank-r truncation of full fine-tuning's first update:
//   ΔW₁ = −η · sign(G)   (update = "sign", default)   or   ΔW₁ = −η · G   (update = "gradient")
//   ΔW₁ ≈ U_r S_r V_rᵀ (truncated SVD),  B = U_r,  A = V_rᵀ,  R = diag(S_r)
// with G = LayerSpec::gradient (dL/dW summed over the initialisation batches; finetune takes
// init_batches of them) and η = option init_lr. The base weight is not compensated: the adapted
// weight starts at W + s · U_r S_r V_rᵀ, (s times) the truncated first step, not at W.
// This is the official initialisation, utils/initialization_utils.py (find_and_initialize_grad
// with config/reconstruct_config.yaml's r_squared = True): get_svd_grad (utils/svd_utils.py)
// returns U, diag(S), Vᵀ of the update; lora_B takes its left singular vectors, lora_A its right
// ones, the r × r default_lora_latent_mapping takes diag(S) with no 1/s factor, lora_A and lora_B
// get requires_grad = False, and the model's weight is left as it is (utils/latent_utils.py,
// forward_latent: W x + B(R(A x)) · s). The official scripts force α = r (train_*.py:
// args.lora_alpha = args.lora_r), so s = 1 there; with α ≠ r this file, as the official code
// would, starts from s times the truncation.
// The update: utils/gradient_utils.py, estimate_and_process_grads_torch returns −η · sign(ΣG)
// (AdamW's first step, whose m/√v is sign(g)), with η = lr / (warmup_ratio · total_steps), the
// first step's rate of a linear warmup; init_lr's default 5e-5 is that rate under finetune's
// defaults (lr 1e-3, 20 warmup steps). "gradient" is SGD's first step. B and A are orthonormal,
// as the paper requires for its scale-independence argument.
//
// Saved like LoRA-XS (lora_A.weight, lora_B.weight, lora_R.weight) with peft_type
// "LOWRANK_LORA_SB": loading needs no gradient. Deviation: the exact SVD in float32 (the
// official code runs torch.svd_lowrank with 10 power iterations and rounds U, S, V to bfloat16).
#pragma once

#include "lowrank/adapt/lora_xs.h"
