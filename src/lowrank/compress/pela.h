// PELA (Guo, Wang, Xu, Wu & Chen, 2024, "PELA: Learning Parameter-Efficient Models with Low-Rank
// Approximation", CVPR, arXiv:2310.10700; code guoyang9/PELA): factorise a pretrained model, then an
// intermediate pre-training stage recovers what the factorisation lost before any downstream tuning.
//   1. Each targeted weight W [m, n] becomes W_l W_r by truncated SVD with the singular values split
//      evenly, W_l = U_r √S_r, W_r = √S_r V_rᵀ, at r = ⌊m n / (c (m + n))⌋ for a compression factor
//      c (low_rank.py `LowRankLinear`, lines 17–22 and 61–62) — `lowrank compress --method pela
//      --ratio ρ` with c = 1/(1 − ρ), the same factors as `svd`.
//   2. Intermediate pre-training of the student (every one of its tensors trains, as the authors'
//      optimiser takes the whole student; the original model is a frozen teacher) on
//        L = L_task + α · L_fd + β · L_wp,
//        L_fd = (1/L) Σ_l MSE(h_l, h_l^orig)          each decoder layer's output hidden state,
//                                                       mean over batch, tokens and features
//                                                       (DeiT/engine.py 75–78; ALBEF Pretrain.py 73–79)
//        L_wp = (1/S) Σ_s (‖W_l W_r − W‖_max − ε)²    over the S factored weights, ‖·‖_max the largest
//                                                       absolute entry (torch.norm(·, inf) of the
//                                                       flattened difference; DeiT/engine.py 14–38,
//                                                       ALBEF models/model_pretrain.py 300–322)
//      with L_task the language-model cross entropy (the authors' task losses: ImageNet cross entropy,
//      ALBEF's MLM/ITA/ITM). Defaults α = 1 (DeiT's kd_alpha; ALBEF uses 0.1), β = 1 and ε = 1e-3
//      (ALBEF's hard-coded values; Swin uses β = 1, ε = 0; DeiT's scripts leave β = 0).
//   3. Downstream fine-tuning of the compact model (here: `lowrank finetune` on the result).
// The stage runs on train/trainer (AdamW, warmup + cosine, checkpoints that resume exactly), its run
// directory beside the output (`<out>.pela-run`, or method option "run_dir").
// Deviation from the reading (relative feature error, Frobenius weight error, factors only):
// the authors' code is followed, as above.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/nn/model.h"
#include "lowrank/train/trainer.h"

namespace lowrank::compress {

struct PelaOptions {
  double alpha = 1.0;            // feature distillation weight
  double beta = 1.0;             // weight-perturbation weight
  double epsilon = 1e-3;         // ε of the weight-perturbation term
  train::TrainerConfig trainer;  // steps, batch, seq_len, lr (default 1e-4: ALBEF's), seed, ...
  std::string run_dir;           // the stage's run directory (empty: `<out>.pela-run`)
  // Throws InvalidArgument naming the value.
  void check() const;
  // From `--alpha`, `--beta`, `--distill-steps` and the method options (pela_option_keys(); -1 /
  // absent: the defaults). Throws InvalidArgument for an unknown key or a bad value.
  static PelaOptions from(double alpha, double beta, int64_t steps, const Json& method_options);
};

// The method options pela takes: epsilon, lr, min_lr, warmup_steps, batch_size, seq_len, seed,
// checkpoint_every, stop_after, run_dir (compress/methods.cpp's validation reads the same list).
const std::set<std::string>& pela_option_keys();

// The three terms of one batch of windows [B, T + 1], each a scalar float32 tensor (task and
// distillation differentiable in the student; the perturbation in its factors). `originals` maps a
// factored slot's name to its original weight W (float32, no gradient).
struct PelaTerms {
  at::Tensor task, distill, perturb;
  at::Tensor total(const PelaOptions& o) const;
};
PelaTerms pela_terms(const nn::Model& student, const nn::Model& teacher, const at::Tensor& windows,
                     const std::map<std::string, at::Tensor>& originals, const PelaOptions& options);

struct PelaResult {
  int64_t steps = 0;
  bool finished = false;
  double first_loss = 0, last_loss = 0;
  OrderedJson to_json() const;
};

// Runs the intermediate stage on `student` (compressed in place, its factored slots `lowrank`
// operators) against the frozen `teacher` (never written, no gradients), on windows of `data`.
// Resumes from a checkpoint in `run_dir` when there is one. Throws InvalidArgument for a student
// without a factored slot or of another shape than the teacher.
PelaResult pela_pretrain(nn::Model& student, const nn::Model& teacher, const train::TokenStream& data,
                         const PelaOptions& options, const std::filesystem::path& run_dir);

}  // namespace lowrank::compress
