// The optimizer flags shared by `lowrank pretrain` and `lowrank finetune`:
//   --optimizer NAME [--rank r --update-gap T --scale α --optimizer-options JSON] [--per-layer-updates]
// parsed into TrainerConfig's (optimizer, optimizer_options) pair and validated before the verb
// does any work (an unknown name, a rank or update gap below 1, a bad option: InvalidArgument
// or NotFound naming the flag).
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "lowrank/core/json.h"

namespace lowrank::cli {

class OptimizerFlags {
 public:
  // Adds the five flags to `cmd`; `optimizer` is the default name shown in --help. The object
  // must outlive the parse (the flags write into it).
  void add_to(CLI::App& cmd, const std::string& optimizer = "adamw");

  const std::string& optimizer() const { return optimizer_; }
  // Whether --rank was given, and its value.
  bool has_rank() const { return rank_flag_ && rank_flag_->count() > 0; }
  int64_t rank() const { return rank_; }
  bool per_layer_updates() const { return per_layer_updates_; }
  // Forgets --rank (pretrain hands it to a parameterisation instead when the optimizer is adamw).
  void drop_rank() { rank_dropped_ = true; }

  // The optimizer name and its options: --optimizer-options with --rank, --update-gap and --scale
  // written over it. Throws InvalidArgument naming the flag for an unparsable or non-object
  // JSON, a rank or update gap < 1, a negative scale, or low-rank flags with adamw; NotFound for
  // an unknown optimizer; InvalidArgument for an option the method rejects (optim::method_config, or
  // for adamw optim::AdamWStateOptions).
  Json options() const;

 private:
  std::string optimizer_ = "adamw";
  std::string options_text_;
  int64_t rank_ = 0, update_gap_ = 0;
  double scale_ = 0;
  CLI::Option* rank_flag_ = nullptr;
  CLI::Option* update_gap_flag_ = nullptr;
  CLI::Option* scale_flag_ = nullptr;
  bool rank_dropped_ = false;
  bool per_layer_updates_ = false;
};

}  // namespace lowrank::cli
