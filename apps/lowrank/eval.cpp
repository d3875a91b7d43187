// `lowrank eval --model DIR --data DIR|TEXTFILE [--seq-len N] [--stride S]`: sliding-window
// perplexity (Hugging Face's strided method) with a 95% interval over documents (token datasets)
// or windows (text files); see src/lowrank/eval/perplexity.h and docs/training.md.
#include <cstdio>
#include <iostream>

#include "apps/lowrank/model_flags.h"
#include "apps/lowrank/verbs.h"
#include "lowrank/core/json.h"
#include "lowrank/eval/perplexity.h"

namespace lowrank::cli {

VerbRunner add_eval(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("eval", "Perplexity of a model on a token dataset or a text file");
  struct Args {
    ModelFlags model;
    std::string data, split = "validation";
    int64_t seq_len = 0, stride = 0, batch = 8, max_tokens = 0;
  };
  auto args = std::make_shared<Args>();
  args->model.add_model(*cmd, "HF model directory (config.json, safetensors, tokenizer.json)");
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
  args->model.add_compute(*cmd);
  return [args, &global] {
    nn::Model model = args->model.load();
    const eval::EvalTokens data =
        eval::load_eval_tokens(args->data, args->model.model, args->split, args->max_tokens);
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
