// The optimizer flags shared by `lowrank pretrain` and `lowrank finetune`:
//   --optimizer NAME [--rank r --update-gap T --scale α --optimizer-options JSON] [--per-layer-updates]
// parsed into a train::OptimizerRequest, which the library validates before the verb's pipeline
// does any work (train/optimizer_request.h).
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "lowrank/train/optimizer_request.h"

namespace lowrank::cli {

class OptimizerFlags {
 public:
  // Adds the six flags to `cmd`; `optimizer` is the default name shown in --help. The object
  // must outlive the parse (the flags write into it).
  void add_to(CLI::App& cmd, const std::string& optimizer = "adamw");

  // The parsed flags. Throws InvalidArgument naming --optimizer-options when its text is not JSON.
  train::OptimizerRequest request() const;

 private:
  std::string optimizer_ = "adamw";
  std::string options_text_;
  int64_t rank_ = 0, update_gap_ = 0;
  double scale_ = 0;
  CLI::Option* rank_flag_ = nullptr;
  CLI::Option* update_gap_flag_ = nullptr;
  CLI::Option* scale_flag_ = nullptr;
  bool per_layer_updates_ = false;
};

}  // namespace lowrank::cli
