// PETALface's quality-gated pair of adapters — Narayan et al., 2025, "PETALface: Parameter
// Efficient Transfer Learning for Low-resolution Face Recognition", WACV, arXiv:2412.07771:
//   Δ(x_b) = s · ( q_b · B_hi(A_hi x_b) + (1 − q_b) · B_lo(A_lo x_b) )
// two LoRAs ("proxy encoders" for high- and low-quality inputs) mixed per input row b by a
// quality score q_b ∈ [0, 1] that an external assessor gives (the paper: an image-quality
// network's normalised score). The scores are set on the adapter before each forward
// (set_quality_scores); an adapter without scores refuses to run rather than guess.
// Both LoRAs are initialised as PEFT's LoRA (A uniform, B = 0). Not mergeable (Δ depends on q).
// peft_type "LOWRANK_PETAL"; tensors lora_A_hi/lora_B_hi/lora_A_lo/lora_B_lo ".weight".
#pragma once

#include "lowrank/adapt/model_adapters.h"

namespace lowrank::adapt {

// Sets the per-row quality scores q [B] (each in [0, 1]) of every PETAL layer of `adapter` for
// the next forward passes. Throws InvalidArgument for scores outside [0, 1] or not 1-D, and when
// the adapter has no PETAL layer.
void set_quality_scores(const AttachedAdapter& adapter, const at::Tensor& scores);

}  // namespace lowrank::adapt
