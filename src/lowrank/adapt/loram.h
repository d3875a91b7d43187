// LoRAM — Zhang et al., 2025, "Train Small, Infer Large: Memory-Efficient LoRA Training for Large
// Language Models", ICLR, arXiv:2502.13533. LoRA is trained on a structurally pruned copy of the
// model (smaller weights in memory), then the LoRA matrices are recovered to the full model's
// shapes by putting zeros at the pruned positions, and the recovered adapter is used on the
// original, unpruned model:
//   prune:    per decoder layer keep the k = ⌈keep·I⌉ MLP channels j with the largest
//             ‖W_gate[j,:]‖·‖W_up[j,:]‖·‖W_down[:,j]‖ (the SwiGLU channel j reaches the output only
//             through W_down[:, j]); gate/up rows and down columns of the other channels removed
//   train:    LoRA on the pruned model (B_gate, B_up [k, r]; A_down [r, k])
//   recover:  B_gate, B_up → [I, r] and A_down → [r, I] with zeros at pruned channels; all other
//             LoRA matrices unchanged.
// Deviations: the paper's pruning variants are random, LLM-Pruner-style structured and
// semi-structured; this is a magnitude criterion on MLP channels only (attention heads kept),
// and the paper's optional alignment pretraining of the pruned model is not done.
#pragma once

#include <vector>

#include "lowrank/adapt/model_adapters.h"

namespace lowrank::adapt {

// The MLP channels kept by the "loram" method unless lowrank_options.loram_keep says otherwise.
inline constexpr double kLoramDefaultKeep = 0.5;

// The keep ratio a finetune run prunes to: lowrank_options.loram_keep, by default
// kLoramDefaultKeep for the "loram" method and 1 (no pruning) for the others. Throws
// InvalidArgument for a ratio below 1 with a method other than lora or loram (LoRAM recovers
// plain LoRA adapters only).
double loram_keep(const AdapterConfig& config);

struct PrunedModel {
  nn::Model model;                // the pruned copy (intermediate_size = k)
  std::vector<at::Tensor> kept;   // per layer: the kept MLP channel indices, sorted, int64 [k]
  int64_t full_intermediate = 0;  // I
};

// Throws InvalidArgument for keep outside (0, 1].
PrunedModel prune_mlp_channels(const nn::Model& model, double keep);

// The full-size LoRA for `full` from `trained` (plain LoRA layers on `pruned.model`), attached to
// `full` as `name`. Throws InvalidArgument for a layer that is not a plain LoRA.
AttachedAdapter recover_adapter(nn::Model& full, const AttachedAdapter& trained, const PrunedModel& pruned,
                                std::string name);

}  // namespace lowrank::adapt
