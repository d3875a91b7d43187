// PETALface's quality-gated pair of adapters — Narayan et al., 2025, "PETALface: Parameter
// Efficient Transfer Learning for Low-resolution Face Recognition", WACV, arXiv:2412.07771:
//   Δ(x_b) = s · ( q_b · B_hi(A_hi x_b) + (1 − q_b) · B_lo(A_lo x_b) )
// two LoRAs ("proxy encoders" for high- and low-quality inputs) mixed per input row b by a
// quality weight q_b ∈ [0, 1]. The authors' code (Kartik-3004/PETALface backbones/lora_layers.py
// LoRALinearTwo) feeds α·x to one LoRA and (1 − α)·x to the other, the same Δ since each LoRA is
// linear in x; train_iqa.py generate_alpha maps the image-quality score (CNN-IQA, higher = better)
// to α = 0.5 + (score − threshold), threshold 0.5 by default.
// The scores are set on the adapter before each forward (set_quality_scores); an adapter without
// scores refuses to run rather than guess. Initialisation as the authors' code: A ~ N(0, (1/r)²),
// B = 0 for both LoRAs. Not mergeable (Δ depends on q).
// Text inputs (finetune): the quality of a window is a per-document proxy, the reference (base)
// model's mean next-token loss L_b on the window, mapped with fixed bounds from a calibration pass
// over windows of the training stream (L_min, L_max: their smallest and largest loss):
//   score_b = clamp((L_max − L_b) / (L_max − L_min), 0, 1)     (low loss = clean, typical text)
//   q_b     = clamp(0.5 + (score_b − threshold), 0, 1)          (the authors' generate_alpha)
// Deviations: the authors' scale is a fixed lora_scale (default 1), here α/r as every LoRA of this
// project (lora_alpha = r gives 1); their 0.1 dropout on each LoRA output is lora_dropout here
// (default 0, on the input); q is clamped to [0, 1] (their α is not, but the score is in [0, 1]
// for the default threshold); the image-quality network is replaced by the loss proxy above.
// peft_type "LOWRANK_PETAL"; tensors lora_A_hi/lora_B_hi/lora_A_lo/lora_B_lo ".weight".
#pragma once

#include "lowrank/adapt/model_adapters.h"

namespace lowrank::adapt {

// Sets the per-row quality scores q [B] (each in [0, 1]) of every PETAL layer of `adapter` for
// the next forward passes. Throws InvalidArgument for scores outside [0, 1] or not 1-D, and when
// the adapter has no PETAL layer.
void set_quality_scores(const AttachedAdapter& adapter, const at::Tensor& scores);

// The fixed loss bounds of the text quality proxy (file comment).
struct QualityCalibration {
  double loss_min = 0, loss_max = 0;
  double threshold = 0.5;  // the authors' generate_alpha threshold (option quality_threshold)
};

// Mean next-token loss per window of `model` as it stands: windows [B, T + 1] int64 (inputs the
// first T, targets the last T) -> [B] float64. No gradient.
at::Tensor window_losses(const nn::Model& model, const at::Tensor& windows);
// The same with the adapter detached for the pass: the reference (base) model's losses.
at::Tensor reference_losses(nn::Model& model, const AttachedAdapter& adapter, const at::Tensor& windows);
// q_b = clamp(0.5 + (clamp((L_max − L_b)/(L_max − L_min), 0, 1) − threshold), 0, 1) for losses
// [B]; L_max = L_min gives score 1. Returns float32 [B].
at::Tensor quality_from_losses(const at::Tensor& losses, const QualityCalibration& calibration);
// Bounds from the reference losses of the calibration windows; Throws InvalidArgument for a
// threshold outside [0, 1].
QualityCalibration calibrate_quality(const at::Tensor& reference_losses, double threshold);
// Scores the rows of `windows` with the reference model and sets them on the adapter.
void score_windows(nn::Model& model, const AttachedAdapter& adapter, const at::Tensor& windows,
                   const QualityCalibration& calibration);

// The PETAL options of finetune (lowrank_options): quality_threshold (0.5), quality_windows (64).
double petal_threshold(const AdapterConfig& config);
int64_t petal_calibration_windows(const AdapterConfig& config);

}  // namespace lowrank::adapt
