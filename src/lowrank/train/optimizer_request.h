// The optimizer a training run asks for, as `lowrank pretrain` and `lowrank finetune` take it:
//   --optimizer NAME [--rank r --update-gap T --scale α --optimizer-options JSON] [--per-layer-updates]
// The verbs only parse these flags into an OptimizerRequest; apply_optimizer_request() is the one
// place that merges and validates them (before any work starts) and writes them into the
// TrainerConfig that the trainer builds its optimizer from (make_optimizer, trainer.h).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>

#include "lowrank/core/json.h"
#include "lowrank/optim/low_rank_config.h"
#include "lowrank/train/trainer.h"

namespace lowrank::train {

struct OptimizerRequest {
  std::string name = "adamw";                        // --optimizer: adamw or a method of optim::registry()
  Json options = Json::object();                     // --optimizer-options
  std::optional<int64_t> rank = std::nullopt;        // --rank, written over options["rank"]
  std::optional<int64_t> update_gap = std::nullopt;  // --update-gap, written over options["update_gap"]
  std::optional<double> scale = std::nullopt;        // --scale, written over options["scale"]
  bool per_layer_updates = false;                    // --per-layer-updates (TrainerConfig::per_layer_updates)
};

// Validates `request` and writes it into `config`: optimizer, optimizer_options (the options
// with the flags written over them; for adamw its beta1, beta2, eps, weight_decay and
// bias_correction go into config.adam instead), and per_layer_updates with clip_norm 0 (a global norm needs
// every gradient at once). Returns the low-rank method's configuration (nullopt for adamw).
// Throws InvalidArgument naming the flag for a non-object --optimizer-options, a rank or update
// gap < 1, a negative scale, a low-rank flag with adamw, or an option the optimizer rejects
// (optim::method_config, optim::AdamWStateOptions); NotFound for an unknown optimizer.
std::optional<optim::LowRankConfig> apply_optimizer_request(const OptimizerRequest& request,
                                                            TrainerConfig& config);

// With a weight parameterisation and plain AdamW (which projects nothing) --rank is the
// parameterisation's rank: moves request.rank into parameterization_options["rank"]. No-op
// otherwise. Throws InvalidArgument for a rank < 1.
void give_rank_to_parameterization(OptimizerRequest& request, std::string_view parameterization,
                                   Json& parameterization_options);

// Checks a low-rank method's projection rank against the weights it would project (slot name,
// out, in): InvalidArgument naming --rank and the first weight whose short side is smaller. A
// density (FRUGAL) sizes each projection from its weight, so it always fits.
void check_projection_rank(const optim::LowRankConfig& config,
                           std::span<const std::tuple<std::string, int64_t, int64_t>> slots);

}  // namespace lowrank::train
