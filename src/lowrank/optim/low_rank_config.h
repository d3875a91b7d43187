// LowRankConfig: the settings of LowRankAdam (low_rank_adam.h, where the step's equations are),
// with the choices the GaLore family's codes differ on as explicit fields; its validation, its
// JSON record, and the parser of the `optimizer_options` object that the methods' presets
// (methods.h) are overridden with.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/optim/adamw.h"

namespace lowrank::optim {

enum class MomentCore { kAdam, kSgd };
enum class EpsPlacement { kGaLore, kAdamW };
enum class DecayPlacement { kBeforeUpdate, kAfterUpdate };
enum class ResidualRule { kNone, kFira, kSignSgd, kSgd };
enum class Selection { kProjector, kBlock };
enum class BlockOrder { kRandom, kAscending, kDescending };

struct LowRankConfig {
  std::string method = "galore";  // the registry name, for messages
  // Projector: "svd", "randomized_svd", "random", "gaussian", "columns", "rows", "randk",
  // "randperm", "dct" (projector.h). Ignored with Selection::kBlock.
  std::string projector = "svd";
  int64_t rank = 128;             // r, when density is unset
  std::optional<double> density;  // FRUGAL ρ ∈ [0, 1]: r = round(ρ·d) (dense), ⌊ρ·axis⌋ (coords)
  uint64_t seed = 0;              // random projectors and block order
  int64_t oversample = 4;         // randomized_svd projector: p
  int64_t power_iters = 1;        // randomized_svd projector: q
  int64_t update_gap = 200;       // T: refresh every T optimizer steps
  double scale = 0.25;            // α on the projected update (and FRUGAL's state-free part)
  bool reset_on_refresh = false;  // zero M and V when the subspace changes
  bool reset_step = true;         // with reset_on_refresh, restart t too (FRUGAL's _init_state does)
  MomentCore core = MomentCore::kAdam;
  EpsPlacement eps_placement = EpsPlacement::kGaLore;
  DecayPlacement decay = DecayPlacement::kAfterUpdate;
  ResidualRule residual = ResidualRule::kNone;
  double residual_lr_scale = 1.0;  // FRUGAL inactive_lr_scale
  double fira_gamma = 1.01;        // Fira's norm-growth limit γ
  Selection selection = Selection::kProjector;
  BlockOrder block_order = BlockOrder::kRandom;
  // 8: Adam states of >= min_8bit_size elements are kept block-wise 8-bit (quantized_state.h),
  // 32: float32. bitsandbytes' rule (its 8-bit Adam, and GaLoreAdamW8bit built on it) counts a
  // projected weight's state R [.., r] and a plain parameter's full state alike; with
  // eight_bit_plain false only the projected weights' states are quantized.
  int64_t state_bits = 32;
  int64_t min_8bit_size = 4096;
  bool eight_bit_plain = true;
  // GradNormLoRP (gradnorm_lorp.h): the projected weights take a weight-normalised step, Adam on
  // their row norms g and the projected core on the direction's gradient ∇V.
  bool weight_norm = false;
  bool orthogonal_grad = true;  // ∇V = (I − v̂v̂ᵀ)G per row; false: ∇V = G (the code's)
  // β1, β2, ε, λ (weight_decay) and bias correction, for projected and plain parameters alike.
  AdamConfig adam;
  // A 2-D parameter whose name contains one of these is projected; everything else is AdamW.
  std::vector<std::string> target_modules = {"self_attn", "mlp"};

  // Throws InvalidArgument naming the field for an inconsistent configuration.
  void validate() const;
  OrderedJson to_json() const;
};

// `base` with the options in `options` (a JSON object; null or absent keys keep base's values)
// applied: rank, density, projector (or "block"), seed, oversample, power_iters, update_gap,
// scale, reset_on_refresh, reset_step, core ("adam", "sgd"), eps_placement ("galore", "adamw"),
// weight_decay_placement ("before", "after"), residual ("none", "fira", "sign_sgd", "sgd"),
// residual_lr_scale, fira_gamma, block_order ("random", "ascending", "descending"), state_bits
// (32, 8), min_8bit_size, eight_bit_plain, weight_norm, orthogonal_grad, beta1, beta2, eps, weight_decay,
// target_modules (array of strings). Throws
// InvalidArgument naming `what` and the key for an unknown key, a wrong type or an invalid value.
LowRankConfig apply_options(LowRankConfig base, const Json& options, std::string_view what);

}  // namespace lowrank::optim
