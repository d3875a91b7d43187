// WeLore's fine-tuning of the low-rank components (Jaiswal et al., 2024, "From GaLore to WeLore:
// How Low-Rank Weights Non-uniformly Emerge from Low-Rank Gradients", arXiv:2407.11239, §5;
// VITA-Group/WeLore welore_continual_finetune.py and lib/rank_reduction.py::do_rank_reduction).
//
// `lowrank compress --method welore` splits the decoder's projections into low-rank components
// (LRCs, W ≈ U V with U = U_k Σ_k^{1/2}, V = Σ_k^{1/2} V_kᵀ: lib/LowRankLayer.py's split) and
// non-low-rank components (N-LRCs, kept dense). WeLore then fine-tunes
//     min over {U_l, V_l : l ∈ LRC}  L(θ),   every N-LRC weight W_l frozen,
// so the trainable parameters are Σ_{l ∈ LRC} k_l (m_l + n_l), a fraction of the dense model's.
// Which tensors train follows the reference code exactly: do_rank_reduction builds each LRC as two
// nn.Linear with requires_grad=True and sets requires_grad=False on every N-LRC weight; the
// fine-tuning scripts freeze lm_head and embed_tokens; every other parameter keeps PyTorch's
// default requires_grad=True and enters the optimizer (`[p for p in model.parameters() if
// p.requires_grad]`), which in LLaMA means the RMSNorm gains. So the gains train by default;
// `train_norms: false` freezes them too (the LRC factors alone). AdamW with warmup and cosine decay
// to 0.1× the peak (welore_continual_finetune.py) is the trainer's default schedule.
// Deviation: a slot bias of an LRC (Qwen2's q/k/v) stays frozen; the reference's factors have none.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/nn/model.h"
#include "lowrank/train/trainer.h"

namespace lowrank::train {

struct WeLoreFinetuneOptions {
  bool train_norms = true;  // the RMSNorm gains train too, as in the reference code
};

// The components of a WeLore-compressed model: LRC slots (a "lowrank" base: their U and V train)
// and N-LRC slots (dense: frozen).
struct WeLoreComponents {
  std::vector<std::string> lrc, nlrc;
  int64_t lrc_parameters = 0;   // Σ k (m + n) over the LRCs
  int64_t norm_parameters = 0;  // the RMSNorm gains
  OrderedJson to_json() const;
};

// Throws InvalidArgument when the model has no low-rank slot or a slot whose base is another
// compressed kind (quantized, svdquant, compensated, ...): WeLore trains plain U, V factors.
WeLoreComponents welore_components(const nn::Model& model);

// Throws InvalidArgument (naming --model and what it found) unless `dir` was written by
// `lowrank compress --method welore` (its lowrank_config.json says so). Returns that file's content.
Json check_welore_directory(const std::filesystem::path& dir);

// The trainer's target: every LRC's "<slot>.lowrank_u" and "<slot>.lowrank_v" (the operator's own
// tensors, trained in place) and, with train_norms, the RMSNorm gains; checkpointed raw in
// welore_state.safetensors. Throws as welore_components.
TrainTarget welore_target(const nn::Model& model, const WeLoreFinetuneOptions& options);

}  // namespace lowrank::train
