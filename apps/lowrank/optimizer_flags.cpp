// The optimizer flags of `pretrain` and `finetune`; see optimizer_flags.h.
#include "apps/lowrank/optimizer_flags.h"

#include "lowrank/core/error.h"
#include "lowrank/optim/adamw.h"
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

Json OptimizerFlags::options() const {
  Json options = Json::object();
  if (!options_text_.empty()) options = parse_json(options_text_, "--optimizer-options");
  LR_CHECK(options.is_object(), InvalidArgument, "--optimizer-options: expected a JSON object");
  const bool rank_given = has_rank() && !rank_dropped_;
  const bool gap_given = update_gap_flag_ && update_gap_flag_->count() > 0;
  const bool scale_given = scale_flag_ && scale_flag_->count() > 0;
  LR_CHECK(!rank_given || rank_ >= 1, InvalidArgument, "--rank must be >= 1, got ", rank_);
  LR_CHECK(!gap_given || update_gap_ >= 1, InvalidArgument, "--update-gap must be >= 1, got ", update_gap_);
  LR_CHECK(!scale_given || scale_ >= 0, InvalidArgument, "--scale must be >= 0, got ", scale_);
  if (rank_given) options["rank"] = rank_;
  if (gap_given) options["update_gap"] = update_gap_;
  if (scale_given) options["scale"] = scale_;
  if (optimizer_ == "adamw") {
    LR_CHECK(
        !rank_given && !gap_given && !scale_given, InvalidArgument,
        "--rank, --update-gap and --scale need a low-rank --optimizer (",
        [] {
          std::string names;
          for (const MethodInfo& m : optim::registry().list()) names += (names.empty() ? "" : ", ") + m.name;
          return names;
        }(),
        ")");
    (void)optim::AdamWStateOptions::from_json(options, "--optimizer-options");  // state_bits, min_8bit_size
    return options;
  }
  if (!optim::registry().contains(optimizer_)) {
    std::string names = "adamw";
    for (const MethodInfo& m : optim::registry().list()) names += ", " + m.name;
    throw NotFound(str("--optimizer: unknown optimizer \"", optimizer_, "\" (known: ", names, ")"));
  }
  // A bad option value (a rank of 0 in the JSON, an unknown key) fails here, before any work.
  (void)optim::method_config(optimizer_, options);
  return options;
}

}  // namespace lowrank::cli
