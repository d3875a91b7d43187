// Maestro — Horváth, Laskaridis, Rajput & Wang, 2024, "Maestro: Uncovering Low-Rank Structures
// via Trainable Decomposition", ICML 2024, arXiv:2308.14929. Authors' code:
// SamuelHorvath/Maestro-LoD (maestro/layers/linear.py, maestro/layers/utils.py,
// maestro/samplers/single_layer.py, maestro_opts.py, imagenet_main.py, scripts/run_imagenet.sh).
// Maestro discovers each layer's rank during training. Per target slot (y = x Wᵀ + bias):
// - Low-rank ordered decomposition (LOD): W = B·A = Σ_i b_i a_iᵀ (B [out, r], A [r, in], no scale),
//   trained with ordered dropout over the rank: a step's forward at cut-off b is
//     y = (x A[:b]ᵀ) B[:, :b]ᵀ + bias,
//   so that component i is trained only when b >= i and the components come out ordered by
//   importance (the leading ones carry most of the function). Only this sampled pass is trained
//   (`--no-full-pass`, as both run scripts set it). Outside training (after each step, at export)
//   the operator runs at its full current rank r.
//   Sampler (the released code's `--od-sampler`): per_layer (default; "used in our work", README,
//   and `--od-sampler per_layer` in run_imagenet.sh): each step one (slot, b) pair is drawn
//   uniformly among all Σ_slots r_slot pairs and only that slot is cut, the others run at full rank;
//   across_layers: every slot draws its own b ~ U{1..r_slot}.
// - Hierarchical group lasso on the ordered components (MaestroLinear._compute_lasso with
//   hierarchical=True, which both training entry points, cifar_mnist_main.py and
//   imagenet_main.py, set; group_lasso_criterion in maestro/layers/utils.py): the loss gets
//     λ_gp · Σ_slots Σ_{b=1..r} ( ‖A[b:, :]‖_F + ‖B[:, b:]‖_F ),
//   one group per tail b..r of the components, so a trailing component sits in more groups than a
//   leading one and is pushed to zero first. Its gradient is written out:
//     ∂/∂A[j] = A[j] · Σ_{b<=j} 1/‖A[b:, :]‖_F,   ∂/∂B[:, j] = B[:, j] · Σ_{b<=j} 1/‖B[:, b:]‖_F
//   (0 for a group whose norm is 0, the minimum-norm subgradient), and it reaches every component,
//   cut or not, as autograd of the penalty term does in the authors' loop.
// - Progressive shrinking (MaestroLinear.importance / assign_low_rank via progressive_shrinking):
//   the importance of component b is s_b = ‖A[b:, :]‖_F · ‖B[:, b:]‖_F (non-increasing in b), and
//   every component with s_b < ε is removed: r ← #{b : s_b >= ε}. The discovered rank is the r left.
// Defaults: λ_gp = 1e-6 (GP_LAMBDA in both run scripts; maestro_opts.py's fallback is 5e-3),
// ε = 1e-5 (`--importance-threshold`), sampler per_layer.
// Init: the truncated SVD of the slot's dense init, B = U_r·diag(√σ_r), A = diag(√σ_r)·V_rᵀ
// (decompose_linear), so the order starts as the spectral order.
// Draws are counter-based (seed, step), so a resumed run repeats them.
// Deviations: the released code shrinks once per epoch; the trainer has no epochs, so here every
// `shrink_every` steps (default 100). It masks removed components during training and cuts the
// tensors only at the end; here B, A and their Adam moments are cut at once (the same function: a
// masked component gets no loss gradient and only the penalty's, which drives it further to 0).
// A slot keeps at least one component (the code allows 0, a bias-only layer). The code factors
// the full-rank layer (inner dimension min(in, out)); here r is an option and the SVD is cut to it.
// The per_layer sampler draws its pairs with replacement instead of shuffled passes over all
// pairs. The authors train with SGD + momentum; here it is the run's AdamW, whose moments of a
// removed component go with it. A slot bias is kept and trained. As in the authors' loop, the
// components beyond a step's cut-off are not shielded from the update: they get the penalty's
// gradient, and Adam's momentum moves them. A run whose ranks have shrunk resumes: the hooks'
// reshape shrinks a fresh operator to its checkpoint's factors before they are copied.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/nn/model.h"
#include "lowrank/train/parameterization.h"

namespace lowrank::train {

class MaestroOperator final : public ParameterizedOperator {
 public:
  // b [out, r], a [r, in], bias [out] or undefined. Throws InvalidArgument on mismatched shapes.
  MaestroOperator(at::Tensor b, at::Tensor a, at::Tensor bias = {});
  static std::shared_ptr<MaestroOperator> init(const nn::LinearSlot& slot,
                                               const ParameterizationConfig& config, uint64_t seed);

  std::string_view kind() const override { return "maestro"; }
  int64_t in_features() const override { return a_.size(1); }
  int64_t out_features() const override { return b_.size(0); }
  // At the active rank (r unless a step set it).
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors trainable() const override;
  // B[:, :b]·A[:b] at the active rank.
  at::Tensor dense_weight() const override;
  at::Tensor bias() const override { return bias_; }

  int64_t rank() const { return a_.size(0); }
  int64_t active_rank() const { return active_; }
  // Sets the cut-off b in [1, r] of the next forward passes (r: the full operator). Throws
  // InvalidArgument outside that range. Not thread-safe with forward.
  void set_active_rank(int64_t b) const;

  // Σ_{b=1..r} ‖A[b:, :]‖_F + ‖B[:, b:]‖_F, the hierarchical group lasso (without λ).
  double group_lasso() const;
  // Adds λ·∂(group_lasso)/∂A and ∂/∂B to the factors' gradients (defining them if undefined).
  void add_group_lasso_gradient(double lambda) const;
  // s_b = ‖A[b:, :]‖_F · ‖B[:, b:]‖_F for b = 1..r, [r] float64 on the CPU.
  at::Tensor importance() const;
  // Removes the components k..r−1 in place: B and A (the very tensors the model and the optimizer
  // hold) become B[:, :k] and A[:k]; their gradients are dropped. Throws InvalidArgument for k
  // outside [1, r], or while an autograd graph built from B or A is alive.
  void shrink(int64_t k) const;
  // A new operator holding copies of the first b components.
  std::shared_ptr<MaestroOperator> truncate(int64_t b) const;

  const at::Tensor& a() const { return a_; }
  const at::Tensor& b() const { return b_; }

 private:
  at::Tensor b_;  // [out, r]
  at::Tensor a_;  // [r, in]
  at::Tensor bias_;
  mutable int64_t active_;  // cut-off b of the current step
};

// The cut-offs of one 0-based step for slots of current ranks `ranks`, from (seed, step):
// per_layer: one slot at b, drawn uniformly among all (slot, b) pairs, the others at full rank;
// across_layers: b_i ~ U{1..r_i} for every slot. Throws InvalidArgument for another sampler.
std::vector<int64_t> maestro_cutoffs(const std::string& sampler, uint64_t seed, int64_t step,
                                     const std::vector<int64_t>& ranks);

// The rank progressive shrinking keeps: #{b : s_b >= threshold}, at least 1.
int64_t maestro_kept_rank(const at::Tensor& importance, double threshold);

// One optimizer state cut: parameter `name`'s Adam moments narrowed to their first `keep` entries
// along `dim` (0 for A's rows, 1 for B's columns).
struct MomentCut {
  std::string name;
  int64_t dim = 0;
  int64_t keep = 0;
};
// Applies `cuts` to the optimizer's state (float32 or block-wise 8-bit moments; 8-bit ones are
// re-quantised after the cut) through state_tensors()/load_state(), keeping the step count. The
// parameters must already have their new shapes. Throws NotFound for a name without moments.
void cut_adam_moments(optim::Optimizer& optimizer, const std::vector<MomentCut>& cuts);

// {slot name: current rank} of every Maestro slot of `model` (empty when there is none): the
// discovered ranks a run reports.
OrderedJson maestro_ranks(const nn::Model& model);

void register_maestro(Registry<ParameterizationMethod>& registry);

}  // namespace lowrank::train
