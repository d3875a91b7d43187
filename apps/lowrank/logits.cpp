// `lowrank logits --model DIR [--adapter DIR...] --input IN.safetensors --out OUT.safetensors`: one forward
// pass of a Llama-family model over int64 input_ids [batch, seq]; writes float32 logits [batch, seq, vocab].
#include <iostream>

#include "apps/lowrank/model_flags.h"
#include "apps/lowrank/verbs.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"
#include "lowrank/nn/run.h"

namespace lowrank::cli {

VerbRunner add_logits(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("logits", "Run a model on input ids and write the logits");
  struct Args {
    ModelFlags model;
    std::string input, out;
  };
  auto args = std::make_shared<Args>();
  args->model.add_model(*cmd, "HF model directory (config.json + safetensors)", /*adapters=*/false);
  cmd->add_option("--input", args->input,
                  "safetensors file with int64 input_ids [batch, seq] (and optionally attention_mask)")
      ->required();
  cmd->add_option("--out", args->out, "safetensors file to write float32 logits [batch, seq, vocab] to")
      ->required();
  cmd->add_option("--adapter", args->model.adapters,
                  "PEFT adapter directory, optionally DIR:WEIGHT (repeatable)");
  args->model.add_compute(*cmd);
  return [args, &global] {
    nn::Model model = args->model.load();
    const std::vector<int64_t> shape = nn::run_logits(model, args->input, args->out);
    if (global.json) {
      std::cout << OrderedJson{{"out", args->out}, {"shape", shape}}.dump(2) << "\n";
      return;
    }
    log::info("wrote logits ", ::lowrank::str(at::IntArrayRef(shape)), " to ", args->out);
  };
}

}  // namespace lowrank::cli
