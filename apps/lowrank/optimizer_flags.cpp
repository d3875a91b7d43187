// The optimizer flags of `pretrain` and `finetune`; see optimizer_flags.h.
#include "apps/lowrank/optimizer_flags.h"

#include "lowrank/core/json.h"
#include "lowrank/optim/methods.h"

namespace lowrank::cli {

void OptimizerFlags::add_to(CLI::App& cmd, const std::string& optimizer) {
  optimizer_ = optimizer;
  std::string names = "adamw";
  for (const MethodInfo& m : optim::registry().list()) names += ", " + m.name;
  cmd.add_option("--optimizer", optimizer_,
                 "The optimizer: " + names + " (lowrank methods lists their options)")
      ->capture_default_str();
  cmd.add_option("--optimizer-options", options_text_,
                 "The optimizer's options as a JSON object, e.g. '{\"rank\": 64, \"projector\": "
                 "\"randomized_svd\"}'; adamw takes '{\"state_bits\": 8}' (8-bit moments)");
  rank_flag_ = cmd.add_option("--rank", rank_, "Low-rank optimizer: projection rank r");
  update_gap_flag_ =
      cmd.add_option("--update-gap", update_gap_, "Low-rank optimizer: refresh the subspace every T steps");
  scale_flag_ = cmd.add_option("--scale", scale_, "Low-rank optimizer: scale alpha of the projected update");
  cmd.add_flag("--per-layer-updates", per_layer_updates_,
               "Step each parameter as soon as its gradient is ready and free it (GaLore's layer-wise "
               "mode): gradients of one parameter resident at a time; turns gradient clipping off");
}

train::OptimizerRequest OptimizerFlags::request() const {
  train::OptimizerRequest r;
  r.name = optimizer_;
  if (!options_text_.empty()) r.options = parse_json(options_text_, "--optimizer-options");
  if (rank_flag_ && rank_flag_->count() > 0) r.rank = rank_;
  if (update_gap_flag_ && update_gap_flag_->count() > 0) r.update_gap = update_gap_;
  if (scale_flag_ && scale_flag_->count() > 0) r.scale = scale_;
  r.per_layer_updates = per_layer_updates_;
  return r;
}

}  // namespace lowrank::cli
