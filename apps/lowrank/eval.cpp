// `lowrank eval --model DIR --data DIR|TEXTFILE [--seq-len N] [--stride S]`: sliding-window
// perplexity (Hugging Face's strided method) with a 95% interval over documents (token datasets)
// or windows (text files); see src/lowrank/eval/perplexity.h and docs/training.md.
#include <cstdio>
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/adapt/model_adapters.h"
#include "lowrank/compress/format.h"
#include "lowrank/core/json.h"
#include "lowrank/eval/perplexity.h"
#include "lowrank/nn/run.h"

namespace lowrank::cli {

VerbRunner add_eval(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("eval", "Perplexity of a model on a token dataset or a text file");
  struct Args {
    std::string model, data, split = "validation", dtype = "float32", device = "cpu";
    int64_t seq_len = 0, stride = 0, batch = 8, max_tokens = 0;
    std::vector<std::string> adapters;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--model", args->model, "HF model directory (config.json, safetensors, tokenizer.json)")
      ->required();
  cmd->add_option("--adapter", args->adapters, "PEFT adapter directory, optionally DIR:WEIGHT (repeatable)");
  cmd->add_option("--data", args->data,
                  "A token dataset directory (lowrank data prepare) or a UTF-8 text file (tokenized with the "
                  "model's tokenizer.json)")
      ->required();
  cmd->add_option("--split", args->split, "Dataset split to score (dataset directories only)")
      ->capture_default_str();
  cmd->add_option("--seq-len", args->seq_len, "Window length (default: the model's context, at most 1024)");
  cmd->add_option("--stride", args->stride, "Window step (default: seq-len / 2)");
  cmd->add_option("--batch", args->batch, "Windows per forward pass")->capture_default_str();
  cmd->add_option("--max-tokens", args->max_tokens, "Score at most this many tokens (default: all)");
  cmd->add_option("--dtype", args->dtype, "Compute dtype: float32, bfloat16, float16, float64")
      ->capture_default_str();
  cmd->add_option("--device", args->device, "cpu, cuda or cuda:N")->capture_default_str();
  return [args, &global] {
    nn::Model model =
        compress::load_model(args->model, {nn::parse_dtype(args->dtype), nn::parse_device(args->device)});
    adapt::load_adapters(model, args->adapters);
    const eval::EvalTokens data =
        eval::load_eval_tokens(args->data, args->model, args->split, args->max_tokens);
    eval::PerplexityOptions o;
    o.seq_len = args->seq_len;
    o.stride = args->stride;
    o.batch_size = args->batch;
    const eval::PerplexityResult r = eval::perplexity(model, data.tokens, o, data.document_starts);
    if (global.json) {
      std::cout << r.to_json().dump(2) << "\n";
      return;
    }
    std::printf("perplexity %.4f  (95%% CI %.4f .. %.4f over %lld %ss)\n", r.perplexity, r.ci_low, r.ci_high,
                static_cast<long long>(r.ci_samples), r.ci_unit.c_str());
    std::printf("nll %.6f nats/token over %lld tokens in %lld windows, seq-len %lld, stride %lld\n", r.nll,
                static_cast<long long>(r.tokens), static_cast<long long>(r.chunks),
                static_cast<long long>(r.seq_len), static_cast<long long>(r.stride));
  };
}

}  // namespace lowrank::cli
