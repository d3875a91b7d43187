// The optimizer flags of a training run, merged and validated once; see optimizer_request.h.
#include "lowrank/train/optimizer_request.h"

#include <algorithm>

#include "lowrank/core/error.h"
#include "lowrank/optim/adamw.h"
#include "lowrank/optim/methods.h"

namespace lowrank::train {
namespace {

// "a, b, c": the registered low-rank optimizers.
std::string low_rank_names() {
  std::string names;
  for (const MethodInfo& m : optim::registry().list()) names += (names.empty() ? "" : ", ") + m.name;
  return names;
}

void check_rank_flag(const OptimizerRequest& request) {
  LR_CHECK(!request.rank || *request.rank >= 1, InvalidArgument, "--rank must be >= 1, got ", *request.rank);
}

}  // namespace

void give_rank_to_parameterization(OptimizerRequest& request, std::string_view parameterization,
                                   Json& parameterization_options) {
  if (parameterization.empty() || request.name != "adamw" || !request.rank) return;
  check_rank_flag(request);
  parameterization_options["rank"] = *request.rank;
  request.rank.reset();
}

std::optional<optim::LowRankConfig> apply_optimizer_request(const OptimizerRequest& request,
                                                            TrainerConfig& config) {
  Json options = request.options;
  LR_CHECK(options.is_object(), InvalidArgument, "--optimizer-options: expected a JSON object");
  check_rank_flag(request);
  LR_CHECK(!request.update_gap || *request.update_gap >= 1, InvalidArgument,
           "--update-gap must be >= 1, got ", *request.update_gap);
  LR_CHECK(!request.scale || *request.scale >= 0, InvalidArgument, "--scale must be >= 0, got ",
           *request.scale);
  if (request.rank) options["rank"] = *request.rank;
  if (request.update_gap) options["update_gap"] = *request.update_gap;
  if (request.scale) options["scale"] = *request.scale;
  std::optional<optim::LowRankConfig> low_rank;
  if (request.name == "adamw") {
    LR_CHECK(!request.rank && !request.update_gap && !request.scale, InvalidArgument,
             "--rank, --update-gap and --scale need a low-rank --optimizer (", low_rank_names(), ")");
    // AdamW's β, ε and decay go to the trainer's AdamConfig (over its defaults), so that every
    // method of a comparison can run with the same Adam hyperparameters; the rest are the
    // state options (state_bits, min_8bit_size).
    Json adam = config.adam.to_json(), state = Json::object();
    for (const auto& [key, value] : options.items()) (adam.contains(key) ? adam : state)[key] = value;
    for (const auto& [key, value] : state.items())
      LR_CHECK(key == "state_bits" || key == "min_8bit_size", InvalidArgument,
               "--optimizer-options: adamw takes beta1, beta2, eps, weight_decay, bias_correction, "
               "state_bits and min_8bit_size, not \"",
               key, "\" (the projection options belong to a low-rank optimizer)");
    config.adam = optim::AdamConfig::from_json(adam, "--optimizer-options");
    (void)optim::AdamWStateOptions::from_json(state, "--optimizer-options");
    options = std::move(state);
  } else {
    if (!optim::registry().contains(request.name))
      throw NotFound(str("--optimizer: unknown optimizer \"", request.name, "\" (known: adamw, ",
                         low_rank_names(), ")"));
    low_rank = optim::method_config(request.name, options);  // a bad option value or an unknown key
  }
  config.optimizer = request.name;
  config.optimizer_options = std::move(options);
  if (request.per_layer_updates) {
    config.per_layer_updates = true;
    config.clip_norm = 0;
  }
  return low_rank;
}

void check_projection_rank(const optim::LowRankConfig& config,
                           std::span<const std::tuple<std::string, int64_t, int64_t>> slots) {
  if (config.density) return;
  for (const auto& [name, out, in] : slots)
    LR_CHECK(config.rank <= std::min(out, in), InvalidArgument, "--rank ", config.rank, " is larger than ",
             name, " [", out, ", ", in, "] allows (at most ", std::min(out, in), ")");
}

}  // namespace lowrank::train
