// MatryoshkaKV's training of the projections (Lin et al., 2024, arXiv:2410.14731, §3.3–3.4): each
// U is kept orthogonal by the Cayley map of a free matrix X,
//   U = (I − A/2)⁻¹ (I + A/2),   A = X − Xᵀ,
// initialised by its inverse, A = 2 (U₀ − I)(U₀ + I)⁻¹, X = A/2, from the PCA basis U₀; X and the
// means μ are trained by Matryoshka distillation: every step draws a rank for every (layer, KV
// head, K/V) uniformly from {D/8, 2D/8, …, D} and minimises
//   kl_weight · KL(p_teacher ‖ p_student) + ce_weight · CE(next token)
// with p_teacher the uncompressed model's next-token distribution (temperature 1, summed over the
// vocabulary, averaged over positions), so that the leading columns carry the most.
// Reference code: The-kamisato/MatryoshkaKV-cache,
// LLaMA-Factory/src/llamafactory/model/custom_model/modeling_pcallama_trial.py (`orthogonal_`: the
// Cayley map above, in float32 there, float64 here) and
// LLaMA-Factory/src/llamafactory/train/pt/trainer.py (`PcaLlamaDistillationTrainer.compute_loss`:
// ranks 16·randint(1, 9) per layer and head for D = 128, loss 0.25·KL + 0.75·CE, the defaults here).
// The optimiser is Adam (β = 0.9, 0.999), the model's weights frozen.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/compress/matryoshka_kv.h"
#include "lowrank/core/json.h"

namespace lowrank::compress {

// The Cayley map of X [..., D, D] (float64): an orthogonal matrix with determinant 1.
at::Tensor cayley(const at::Tensor& x);
// Its inverse on an orthogonal U without eigenvalue −1: the skew X = (U − I)(U + I)⁻¹ with
// cayley(X) = U. Throws InvalidArgument when U + I is singular.
at::Tensor inverse_cayley(const at::Tensor& u);

// The greedy rank search under a budget (after training; paper §3.5): every (layer, KV head, K/V)
// starts at rank D; while Σ ranks > `budget`, the one whose lowering by `step` (not below 1) raises
// `objective` least is lowered (ties: the first in layer, head, K-before-V order). Returns `layers`
// with the ranks found. This is the procedure as the reference summary states it (the paper's
// Alg. 1 text and the authors' search script were not available to check it against); with a
// separable convex objective it is the marginal-allocation optimum (tests). Throws
// InvalidArgument when the budget is below one rank per head.
std::vector<MatryoshkaKVLayer> greedy_rank_search(
    std::vector<MatryoshkaKVLayer> layers, int64_t budget, int64_t step,
    const std::function<double(const std::vector<MatryoshkaKVLayer>&)>& objective);

struct MatryoshkaTrainOptions {
  int64_t steps = 0;
  double lr = 1e-3;
  int64_t batch_size = 2;  // windows per step
  double kl_weight = 0.25, ce_weight = 0.75;
  uint64_t seed = 0;
  bool rank_search = false;  // ranks per head by greedy_rank_search under the --kv-ratio budget
};
// From `--method-options` ({"train_steps", "lr", "batch_size", "kl_weight", "ce_weight", "seed",
// "rank_search"});
// an unknown key or a bad value is an InvalidArgument naming it.
MatryoshkaTrainOptions matryoshka_train_options(const Json& method_options);

// Trains `layers` (the PCA initialisation; their ranks are kept as the final ones) on `windows`
// [N, seq_len + 1] of token ids, the model's own weights frozen; the model is left without a KV
// compression. Returns the trained layers (bases orthogonal, full width) and fills `losses` with
// each step's loss when given.
std::vector<MatryoshkaKVLayer> train_matryoshka_kv(nn::Model& model,
                                                   const std::vector<MatryoshkaKVLayer>& layers,
                                                   const at::Tensor& windows,
                                                   const MatryoshkaTrainOptions& options,
                                                   std::vector<double>* losses = nullptr);

// The objective at fixed ranks (the layers' own): kl_weight·KL + ce_weight·CE on `windows`, no
// gradient. The model is left without a KV compression.
double matryoshka_kv_loss(nn::Model& model, const std::vector<MatryoshkaKVLayer>& layers,
                          const at::Tensor& windows, const MatryoshkaTrainOptions& options);

}  // namespace lowrank::compress
