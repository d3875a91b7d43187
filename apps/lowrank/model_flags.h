// The model-loading flags that the verbs running a model share (eval, logits, generate, serve):
// --model DIR, --adapter DIR[:WEIGHT] (repeatable), --dtype, --device, and loading what they name
// (a dense or compressed model, then its adapters). One definition, so the verbs cannot drift.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "lowrank/nn/model.h"

namespace lowrank::cli {

struct ModelFlags {
  std::string model;
  std::vector<std::string> adapters;
  std::string dtype = "float32";
  std::string device = "cpu";

  // Adds --model (required; `model_help` describes the directory) and, with `adapters`, --adapter.
  void add_model(CLI::App& cmd, const std::string& model_help, bool adapters = true);
  // Adds --dtype (`dtype_help` lists the dtypes) and --device.
  void add_compute(CLI::App& cmd,
                   const std::string& dtype_help = "Compute dtype: float32, bfloat16, float16, float64");
  // The model (compress::load_model: dense or compressed) on the chosen dtype and device, with
  // every --adapter attached.
  nn::Model load() const;
};

}  // namespace lowrank::cli
