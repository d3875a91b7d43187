// LowRankAdam — one optimizer object for the GaLore family (GaLore, Zhao et al., 2024,
// arXiv:2403.03507, Alg. 1, and its successors; docs/optimizers.md): the Adam core runs on
// projected gradients R = down(G) of the 2-D attention/MLP weights, and every other parameter
// (embeddings, norms, lm_head, biases) runs plain AdamW (adam_update, bit-identical to AdamW).
// Each method (galore.h, fira.h, frugal.h, dct_adamw.h, gradnorm_lorp.h) is a preset of
// LowRankConfig (low_rank_config.h); the choices the papers' codes differ on are explicit fields
// rather than hidden in method classes.
//
// One step for a projected weight W [m, n] with gradient G, learning rate η, scale α
// (t counts this tensor's Adam updates; the refresh schedule counts optimizer steps k):
//   W ← W·(1 − η·λ)                                   if decay == kBeforeUpdate (FRUGAL, DCT)
//   if k % T == 0 (or no subspace yet): refresh the projector from G; zero M, V (and t unless
//     reset_step is false) if reset_on_refresh
//   R = down(G)
//   Adam core: M ← β1 M + (1−β1) R;  V ← β2 V + (1−β2) R²;  t ← t + 1
//     eps kGaLore: N = M / (√V + ε),              s = η·√(1−β2^t)/(1−β1^t)   (GaLore, Fira)
//     eps kAdamW:  N = M / (√V/√(1−β2^t) + ε),   s = η/(1−β1^t)             (FRUGAL, DCT; = AdamW)
//   SGD core (the §9.6 oracle): N = R, s = η
//   W ← W − s·α·up(N)
//   residual (the part of G outside the subspace):
//     kFira:    W ← W − s·S, S = fira_residual(G, R, N, α·up(R))  (fira.h; no α on S)
//     kSignSgd: W ← W − η·α·ρ_lr·sign(G − up(R))                   (FRUGAL state-free part)
//     kSgd:     W ← W − η·α·ρ_lr·(G − up(R))
//   W ← W − η·λ·W                                     if decay == kAfterUpdate (GaLore, Fira; no α)
// With weight_norm (GradNormLoRP, gradnorm_lorp.h) the steps above run on the direction's
// gradient ∇V instead of G, and W ← g'·(W + Δ)/‖W + Δ‖_row with the row norms g' from their own
// Adam step, before the decay after the update.
// FRUGAL's block selection (Selection::kBlock) instead picks round(ρ·#weights) whole weights
// every T steps: those run the Adam core on G itself (up = identity), the others have their state
// freed and take only the residual rule on G.
// Deviations: the refresh schedule uses the optimizer's step count k for every weight (GaLore
// uses each tensor's own counter, FRUGAL the first tensor's; they agree unless a weight skips
// steps); non-projected parameters always use AdamW's ε placement and decay before the update,
// whatever the method (GaLore applies its own ε and decay order to them); no per-layer
// (gradient-hook) stepping.
// 8-bit states (state_bits 8) follow bitsandbytes' rule: every Adam state of at least
// min_8bit_size (4096) elements, a projected weight's R-shaped moments and a plain parameter's
// full ones alike, is kept block-wise 8-bit (option eight_bit_plain false: projected ones only).
// A reset on refresh zeroes t with the moments unless reset_step is false.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/optim/adamw.h"
#include "lowrank/optim/low_rank_config.h"
#include "lowrank/optim/projector.h"

namespace lowrank::optim {

// Whether `name`/`param` is a weight the low-rank path handles: 2-D, name contains a target.
bool is_projectable(const std::string& name, const at::Tensor& param,
                    const std::vector<std::string>& targets);

// Bytes the optimizer accounts for, by kind (device tensors; host-side step counters excluded).
struct OptimizerBytes {
  int64_t weights = 0;           // every parameter
  int64_t grads = 0;             // the parameters' defined .grad()s
  int64_t optimizer_states = 0;  // Adam moments (low-rank or full; 8-bit: codes + absmax) + 8 per Fira norm
  int64_t projectors = 0;        // projector matrices/indices/seeds + each shared basis once
  int64_t total() const { return weights + grads + optimizer_states + projectors; }
};

class LowRankAdam final : public Optimizer {
 public:
  // `params` are shared with the model. Throws InvalidArgument for an invalid configuration.
  LowRankAdam(NamedTensors params, LowRankConfig config);
  ~LowRankAdam();
  LowRankAdam(LowRankAdam&&) noexcept;
  LowRankAdam& operator=(LowRankAdam&&) noexcept;

  // Applies one update to every parameter with a defined .grad(). Not thread-safe.
  void step(double lr) override;
  void begin_step(double lr) override;
  void step_parameter(size_t index, const at::Tensor& grad) override;
  void end_step() override { ++steps_; }
  void zero_grad() override;
  // Plain and projected parameters alike: lr · lr_scale, and the decay in place of the run's.
  void set_overrides(const std::vector<ParamOverride>& overrides) override;

  const LowRankConfig& config() const { return config_; }
  const NamedTensors& params() const { return params_; }
  int64_t steps() const override { return steps_; }
  // Whether the next step refreshes the projectors (and FRUGAL's block choice): every update_gap
  // steps, the first included.
  bool refreshes_next_step() const { return steps_ % config_.update_gap == 0; }
  bool is_projected(const std::string& name) const;
  // The projector of a projected parameter (null for AdamW parameters, FRUGAL blocks and ρ = 0).
  const Projector* projector(const std::string& name) const;
  // FRUGAL block selection: whether the weight currently runs Adam.
  bool is_active(const std::string& name) const;
  // Fira: ‖S‖_F after the limiter at the last step (nullopt before the first).
  std::optional<double> fira_norm(const std::string& name) const;

  // The state as named CPU tensors: "<param>.exp_avg", "<param>.exp_avg_sq" (8-bit:
  // "<param>.exp_avg.codes", ".absmax", ".shape", and the same for exp_avg_sq), "<param>.step",
  // "<param>.projector.<key>", "<param>.fira_norm", "<param>.active", GradNormLoRP's
  // "<param>.magnitude.exp_avg", ".magnitude.exp_avg_sq", ".magnitude.step"; moments and
  // projector entries only once they exist.
  NamedTensors state_tensors() const override;
  // Restores state_tensors() output and the step count, so that the next steps are identical.
  // Throws Corruption for a mis-shaped tensor.
  void load_state(const NamedTensors& tensors, int64_t steps) override;

  // As Optimizer::prune_state, in place, 8-bit moments included; ratio >= 1 frees the moments
  // (the next update starts from zeros, as a fresh optimizer's).
  void prune_state(const std::string& name, double ratio, bool reset_step = false) override;
  // Frees the parameter's moments (its step count and projector stay).
  void release_state(size_t index) override;

  OptimizerBytes bytes() const;
  OrderedJson memory() const override;

 private:
  struct Slot;
  void select_blocks();
  void projected_step(Slot& slot, const at::Tensor& grad, double lr, bool refresh_now);

  NamedTensors params_;
  std::vector<Slot> slots_;
  LowRankConfig config_;
  int64_t steps_ = 0;
  double lr_ = 0;             // of the step in progress
  bool refresh_now_ = false;  // the step in progress refreshes projectors
};

}  // namespace lowrank::optim
