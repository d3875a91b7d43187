// The shared model-loading flags; see model_flags.h.
#include "apps/lowrank/model_flags.h"

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/compress/format.h"
#include "lowrank/nn/run.h"

namespace lowrank::cli {

void ModelFlags::add_model(CLI::App& cmd, const std::string& model_help, bool with_adapters) {
  cmd.add_option("--model", model, model_help)->required();
  if (with_adapters)
    cmd.add_option("--adapter", adapters, "PEFT adapter directory, optionally DIR:WEIGHT (repeatable)");
}

void ModelFlags::add_compute(CLI::App& cmd, const std::string& dtype_help) {
  cmd.add_option("--dtype", dtype, dtype_help)->capture_default_str();
  cmd.add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
}

nn::Model ModelFlags::load() const {
  nn::Model loaded = compress::load_model(model, {nn::parse_dtype(dtype), nn::parse_device(device)});
  adapt::load_adapters(loaded, adapters);
  return loaded;
}

}  // namespace lowrank::cli
