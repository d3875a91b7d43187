// LoRAM — Zhang et al., 2025, "Train Small, Infer Large: Memory-Efficient LoRA Training for Large
// Language Models", ICLR, arXiv:2502.13533. LoRA is trained on a pruned copy of the model, then the
// trained matrices are recovered to the full model's shapes and used with the original model:
//   prune:    W⁰ᴾ = P(W⁰)                        (criterion below; the original W⁰ is kept)
//   align:    W⁰ᴾ ← continual pre-training of W⁰ᴾ (plain next-token loss on a small corpus)
//   train:    W⁰ᴾ + Bᴾ Aᴾ, only Bᴾ, Aᴾ trained (a plain LoRA on the pruned copy)
//   recover:  Bᴿ Aᴿ = R(Bᴾ* Aᴾ*);  inference on W⁰ + Bᴿ Aᴿ
// Criteria (option "criterion"), the paper's four variants:
//   "random"       (LoRAM-Rand)  structured: per decoder layer keep k = ⌈keep·n⌉ MLP channels and
//                                 KV-head groups chosen uniformly at random (LLM-Pruner's random
//                                 importance);
//   "structured"   (LoRAM-Stru)  the same structures ranked by LLM-Pruner's first-order Taylor
//                                 importance ("param_first", group reduction "sum") on a calibration
//                                 batch, L the mean next-token loss, G = ∂L/∂W:
//                    MLP channel j:  Σᵢ|W⊙G|_gate[j,i] + Σᵢ|W⊙G|_up[j,i] + Σₒ|W⊙G|_down[o,j]
//                    KV group h:     Σ over the rows of q (its query heads), k and v (head h) and the
//                                    columns of o (its query heads) of |W⊙G|
//                  removal: gate/up rows and down columns of a channel; q rows, o columns (all query
//                  heads of the group), k and v rows of a KV head;
//   "semi"         (LoRAM-Semi)  2:4 semi-structured sparsity by SparseGPT (every decoder linear:
//                                 in each 4 consecutive inputs of a row, 2 zeroed);
//   "unstructured" (LoRAM-Unst)  SparseGPT at the given sparsity.
// SparseGPT (Frantar & Alistarh, 2023, arXiv:2301.00774, IST-DASLab/sparsegpt sparsegpt.py
// fasterprune): layer by layer, H = Σ x xᵀ over the calibration inputs of the slot (layers before
// it already pruned), H += 1% · mean(diag H) · I, U = chol(H⁻¹) upper; per block of 128 columns
// (unstructured: mask of the block's fraction `sparsity` smallest w²/U_jj²; 2:4: at each group of
// 4 columns the 2 smallest w²/U_jj² per row), column by column q = w ⊙ keep, e = (w − q)/U_ii,
// W[:, i:] −= e U[i, i:] (the OBS update of the columns not yet visited).
// Recovery R: structured criteria scatter the pruned-shape LoRA factors into full-shape zeros,
//   B_gate, B_up, B_q, B_k, B_v rows and A_down, A_o columns at the kept indices, everything else
//   unchanged (authors' 3_recovered_low_rank_matrix_generation.py, "zeroA"); the semi-structured and
//   unstructured copies keep every shape, so R is the identity.
// Reference code: junzhang-zj/LoRAM loram/modeling_llama3_70b_structured_pruning.py (LlamaMLP.prune,
// LlamaAttention.prune: KV heads removed with every query head of their group),
// loram/3_recovered_low_rank_matrix_generation.py (recovery), loram/1_pruned_full_rank_weight_
// alignment.py (alignment: the whole pruned model but lm_head trained with AdamW on the LM loss, lr
// 5e-5); horseee/LLM-Pruner hf_prune.py and LLMPruner/pruner/hf_llama_pruner.py (TaylorImportance).
// Deviations: every decoder layer is pruned with the same counts (the config has one
// intermediate_size and head count; the authors keep the first 4 and last 2 of 80 layers); the
// authors' pruning masks come from LLM-Pruner / SparseGPT runs on their own calibration data
// (bookcorpus), here the calibration batch is drawn from the fine-tuning corpus; for GQA the Taylor
// group of a KV head sums over all query heads that share it (LLM-Pruner was written for MHA).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/train/trainer.h"

namespace lowrank::adapt {

struct LoramOptions {
  std::string criterion = "structured";  // random | structured | semi | unstructured
  double mlp_keep = 0.5;                 // structured criteria: fraction of MLP channels kept
  double attn_keep = 0.5;                // structured criteria: fraction of KV-head groups kept
  double sparsity = 0.5;                 // unstructured: fraction of weights zeroed per block
  int64_t calibration_windows = 10;      // structured / semi / unstructured: windows in the batch
  int64_t align_steps = 0;               // continual pre-training steps of the pruned copy (0: none)
  double align_lr = 5e-5;                // its peak learning rate (authors' script)
  std::string align_data;                // its corpus; empty: the fine-tuning corpus

  bool structural() const { return criterion == "random" || criterion == "structured"; }
  // Reads lowrank_options; throws InvalidArgument naming the option and value.
  static LoramOptions from_config(const AdapterConfig& config);
};

struct PrunedModel {
  nn::Model model;        // the pruned copy
  std::string criterion;  // as in LoramOptions
  // Structured criteria, per decoder layer (sorted int64 indices): the kept MLP channels and the
  // kept KV heads. Empty for semi / unstructured.
  std::vector<at::Tensor> kept_channels;
  std::vector<at::Tensor> kept_kv_heads;
  nn::ModelConfig full;  // the original configuration

  // The kept rows of q_proj (= columns of o_proj) and of k_proj / v_proj in layer `layer`.
  at::Tensor kept_q_rows(int64_t layer) const;
  at::Tensor kept_kv_rows(int64_t layer) const;
};

// Per-structure scores [layers] × {MLP channels [I], KV groups [n_kv]}: higher is kept.
struct StructureScores {
  std::vector<at::Tensor> channels;
  std::vector<at::Tensor> kv_groups;
};

// LLM-Pruner's first-order Taylor importance from the gradients G (slot name -> ∂L/∂W) of the
// decoder linears (formula in the file comment).
StructureScores taylor_importance(const nn::Model& model, const std::map<std::string, at::Tensor>& gradients);

// A copy of `model` with, per layer, the ⌈mlp_keep·I⌉ best-scored MLP channels and the
// ⌈attn_keep·n_kv⌉ best-scored KV groups (with their query heads). Throws InvalidArgument for a
// ratio outside (0, 1].
PrunedModel prune_structures(const nn::Model& model, const StructureScores& scores, double mlp_keep,
                             double attn_keep, const std::string& criterion);

// SparseGPT on one weight [out, in] with the input Gram matrix H [in, in] (float64): prune_n of
// every prune_m consecutive inputs per row when prune_n > 0, else the fraction `sparsity` of each
// block of columns. Returns the pruned and updated weight in W's dtype.
at::Tensor sparsegpt(const at::Tensor& weight, const at::Tensor& gram, double sparsity, int64_t prune_n,
                     int64_t prune_m, int64_t block_size = 128, double damp = 0.01);

// A copy of `model` whose decoder linears are pruned by SparseGPT layer by layer on the calibration
// windows ([N, T] int64 token ids): 2:4 for "semi", `sparsity` for "unstructured".
PrunedModel prune_sparse(const nn::Model& model, const at::Tensor& calibration, const std::string& criterion,
                         double sparsity);

// The pruned copy for `options` (random: seeded by `seed`; other criteria: the calibration windows
// [N, T + 1] of the training stream, the last column the targets of the Taylor loss).
PrunedModel prune_for_loram(nn::Model& model, const LoramOptions& options, const at::Tensor& calibration,
                            uint64_t seed);

// The alignment stage: `steps` of plain next-token training of every tensor of the pruned copy
// but lm_head (AdamW, the trainer's schedule), checkpoints and metrics in `run_dir`.
train::TrainResult align_pruned_model(PrunedModel& pruned, const train::TokenStream& data,
                                      const train::TrainerConfig& trainer,
                                      const std::filesystem::path& run_dir, bool resume);

// The full-size LoRA for `full` from `trained` (plain LoRA layers on `pruned.model`), attached to
// `full` as `name`. Throws InvalidArgument for a layer that is not a plain LoRA.
AttachedAdapter recover_adapter(nn::Model& full, const AttachedAdapter& trained, const PrunedModel& pruned,
                                std::string name);

}  // namespace lowrank::adapt
