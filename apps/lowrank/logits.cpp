// `lowrank logits --model DIR [--adapter DIR...] --input IN.safetensors --out OUT.safetensors`: one forward
// pass of a Llama-family model over int64 input_ids [batch, seq]; writes float32 logits [batch, seq, vocab].
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/adapt/model_adapters.h"
#include "lowrank/compress/format.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"
#include "lowrank/nn/run.h"

namespace lowrank::cli {

VerbRunner add_logits(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("logits", "Run a model on input ids and write the logits");
  struct Args {
    std::string model, input, out, dtype = "float32", device = "cpu";
    std::vector<std::string> adapters;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--model", args->model, "HF model directory (config.json + safetensors)")->required();
  cmd->add_option("--input", args->input,
                  "safetensors file with int64 input_ids [batch, seq] (and optionally attention_mask)")
      ->required();
  cmd->add_option("--out", args->out, "safetensors file to write float32 logits [batch, seq, vocab] to")
      ->required();
  cmd->add_option("--adapter", args->adapters, "PEFT adapter directory, optionally DIR:WEIGHT (repeatable)");
  cmd->add_option("--dtype", args->dtype, "Compute dtype: float32, bfloat16, float16, float64")
      ->capture_default_str();
  cmd->add_option("--device", args->device, "cpu, cuda or cuda:N")->capture_default_str();
  return [args, &global] {
    nn::Model model =
        compress::load_model(args->model, {nn::parse_dtype(args->dtype), nn::parse_device(args->device)});
    adapt::load_adapters(model, args->adapters);
    const std::vector<int64_t> shape = nn::run_logits(model, args->input, args->out);
    if (global.json) {
      std::cout << OrderedJson{{"out", args->out}, {"shape", shape}}.dump(2) << "\n";
      return;
    }
    log::info("wrote logits ", ::lowrank::str(at::IntArrayRef(shape)), " to ", args->out);
  };
}

}  // namespace lowrank::cli
