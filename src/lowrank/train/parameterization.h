// Low-rank weight parameterisations for training (issue 5, "Low-rank parameterisations"): the
// 2-D attention/MLP projections of the decoder layers (q, k, v, o, gate, up, down) are trained
// through a factored base operator instead of a dense W; embeddings, norms and the lm_head stay
// dense and are trained as usual, as the papers do. Methods (one file pair each):
//   lowrank  W = (α/r)·B·A                       (GaLore paper's "low-rank" baseline; lowrank_ba.h),
//            optionally with Glentis et al.'s (2025) refactorisation + momentum reset
//   sltrain  W = (α/r)·B·A + S, S on a fixed random support (Han et al., 2024; sltrain.h)
//   relora   W = W0 + (α/r)·B·A, merged into W0 and restarted every T steps (Lialin et al., 2023;
//            relora.h)
//   sst      W = U·diag(σ)·Vᵀ, all σ trained, r singular vectors sampled by p = ½(1/d + σ/Σσ)
//            trained, re-SVD every T steps (Zhao et al., 2024; sst.h)
//   trp      dense W, energy-threshold SVD truncation + λ·‖W‖_* subgradient U_k V_kᵀ every m steps
//            (Xu et al., 2019; trp.h)
//   maestro  W = B·A with ordered dropout over the rank, a hierarchical group lasso on the ordered
//            components and progressive shrinking of the rank (Horváth et al., 2024; maestro.h)
//   gradnormlorp  W = m·(W0 + s·B·A)/‖W0 + s·B·A‖_row, W0 frozen (Huang et al., 2024;
//            train/gradnorm_lorp.h; its optimizer is optim/gradnorm_lorp.h)
// A parameterisation is a ParameterizedOperator swapped into each target LinearSlot
// (replace_base). apply_parameterization returns the TrainTarget the trainer needs: the trainable
// tensors (factors, S values, and every dense tensor outside the target slots), the frozen state
// that checkpoints must carry (ReLoRA's W0, SLTrain's support indices) and the method's hooks.
// After training, densify() turns the model back into a plain dense HF model (W = dense_weight()).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/core/registry.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/model.h"
#include "lowrank/train/trainer.h"

namespace lowrank::train {

// The options of every parameterisation (each method accepts the subset its MethodInfo lists).
struct ParameterizationConfig {
  int64_t rank = 128;            // r: inner dimension of B [out, r] · A [r, in]
  double alpha = 32;             // α: the product is scaled by α/r
  double density = 0.03;         // SLTrain δ: fraction of W's entries in the sparse support
  int64_t reset_every = 5000;    // ReLoRA T: merge and restart every T optimizer steps
  int64_t restart_warmup = 100;  // ReLoRA: steps of linear LR re-warmup after each restart
  double prune_ratio = 0.99;     // ReLoRA: fraction of A's and B's Adam moments zeroed at a
                                 // restart (smallest magnitudes first); 1 = full reset
  int64_t resample_every = 0;    // SST: steps between fresh samples of the trained singular
                                 // vectors; 0 = once per round (at each re-SVD, every reset_every)
  double nuclear_weight = 3e-4;  // TRP λ: weight of the nuclear-norm regulariser λ·‖W‖_*
  double energy = 0.9;           // TRP e: keep the smallest k with Σ_{i<=k} σ_i² >= e·Σ σ_i²
  int64_t prune_every = 5;       // TRP m: truncate (and regularise) before every m-th step
  int64_t refactor_every = 0;    // lowrank: re-split B·A by SVD and reset moments every K steps
                                 // (0: off)
  int64_t recovery_steps = 10;   // lowrank: LR ramp from 0.001× after each refactorisation
  // lowrank's refactorisations and SST's rounds and redraws: restart Adam's step count t with the
  // moments they zero (each method's default is what its authors' code does: lowrank true, SST false).
  bool reset_step = false;

  // Maestro
  double group_lasso = 1e-6;          // λ_gp: weight of the hierarchical group lasso
  double shrink_threshold = 1e-5;     // ε: drop the components whose importance falls below it
  int64_t shrink_every = 100;         // progressive shrinking after every n-th step (0: off)
  std::string sampler = "per_layer";  // ordered-dropout sampler: per_layer, across_layers

  double scale() const { return alpha / static_cast<double>(rank); }
  OrderedJson to_json() const;
};

// A base operator whose tensors split into trained and frozen ones. tensors() is their union
// (what Model::save writes, `<slot>.<name>`).
class ParameterizedOperator : public nn::BaseOperator {
 public:
  // Tensors the optimizer updates, named relative to the slot.
  virtual nn::NamedTensors trainable() const = 0;
  // State that is not trained but must be checkpointed (indices, the merged W0).
  virtual nn::NamedTensors frozen() const { return {}; }
  nn::NamedTensors tensors() const override;
};

// What a parameterisation makes of one slot: (slot, config, seed) -> operator. The slot's
// current (dense) base gives the shape, the dense init (ReLoRA's W0) and the bias.
using ParameterizedFactory = std::function<std::shared_ptr<ParameterizedOperator>(
    const nn::LinearSlot& slot, const ParameterizationConfig& config, uint64_t seed)>;

// The hooks a method adds to the training loop (ReLoRA's merge-and-restart, jagged schedule;
// TRP's regulariser gradient and Maestro's cut-off rank in before_step),
// given the operators it created (slot name, operator) and the config.
struct ParameterizationHooks {
  std::function<void(int64_t step)> before_step;  // before the step's forward passes
  std::function<void(int64_t step, optim::Optimizer& optimizer)> after_update;
  std::function<double(int64_t step)> lr_factor;
  std::function<void(const std::string& name, const at::Tensor& saved)> reshape;  // TrainTarget's
};
using HooksFactory = std::function<ParameterizationHooks(
    const std::vector<std::pair<std::string, std::shared_ptr<ParameterizedOperator>>>& operators,
    const ParameterizationConfig& config, uint64_t seed)>;

struct ParameterizationMethod {
  ParameterizedFactory make;
  HooksFactory hooks;  // optional
  // The method's own defaults where they differ from ParameterizationConfig's (GradNormLoRP's
  // r = 8, α = 16); unset: ParameterizationConfig{}.
  std::optional<ParameterizationConfig> defaults = std::nullopt;
};

// The parameterisation methods (built-ins registered on first use). Thread-safe.
const Registry<ParameterizationMethod>& parameterization_registry();
void register_builtin_parameterizations(Registry<ParameterizationMethod>& registry);

// The config of `method` with `options` (a JSON object) applied. Throws NotFound (listing the
// known methods) for an unknown name, InvalidArgument for an option the method does not take
// (listing those it takes) or a bad value.
ParameterizationConfig parameterization_config(const std::string& method, const Json& options);

// True for the slots a parameterisation replaces: the decoder layers' token-mixer projections
// (attention's self_attn.*, another mixer's mixer.*; token_mixer.h) and mlp projections (not
// lm_head, not a classifier's score head).
bool is_parameterized_slot(const std::string& slot_name);

// Checks `method`/`options` against the target slots' shapes (name, out, in) before any work:
// throws as parameterization_config, and InvalidArgument naming the slot when r > min(out, in)
// (for the methods that take a rank).
void check_parameterization(const std::string& method, const Json& options,
                            const std::vector<std::tuple<std::string, int64_t, int64_t>>& slots);

struct AppliedParameterization {
  std::string method;
  ParameterizationConfig config;
  std::vector<std::pair<std::string, std::shared_ptr<ParameterizedOperator>>> operators;
  // Trainable tensors (model order), frozen state and hooks; weights_file "model.safetensors"
  // with the factor names (not an HF model: densify() gives that).
  TrainTarget target;
};

// Replaces the base of every target slot of `model` by `method`'s operator (initialised from
// `seed`). Throws as check_parameterization, and InvalidArgument when a target slot's base is
// not dense (already parameterised or compressed) or holds adapters.
AppliedParameterization apply_parameterization(nn::Model& model, const std::string& method,
                                               const Json& options, uint64_t seed);

// Replaces every non-dense base of `model` by a DenseOperator(dense_weight(), bias()) (detached
// copies): the plain HF model a parameterised run exports.
void densify(nn::Model& model);

}  // namespace lowrank::train
