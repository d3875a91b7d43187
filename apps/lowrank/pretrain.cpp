// `lowrank pretrain --preset tiny|small --corpus NAME|PATH --out DIR [--steps N] [--resume]
// [--seed S] [--optimizer NAME [--rank r --update-gap T --scale α --optimizer-options JSON]]
// [--parameterization NAME [--parameterization-options JSON]]
// [--mixer NAME | --layer-mixers a,b,... [--mixer-options JSON]]`: tokenizer,
// dataset, training from scratch, HF export and validation perplexity; see src/lowrank/train/pretrain.h and
// docs/training.md.
#include <cstdio>
#include <iostream>

#include "apps/lowrank/dist_flags.h"
#include "apps/lowrank/optimizer_flags.h"
#include "apps/lowrank/verbs.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"
#include "lowrank/train/pretrain.h"

namespace lowrank::cli {

VerbRunner add_pretrain(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("pretrain", "Train a small Llama-style model from scratch on a corpus");
  auto o = std::make_shared<train::PretrainOptions>();
  auto out = std::make_shared<std::string>();
  std::string presets;
  for (const auto& p : train::pretrain_presets()) presets += "\n  " + p.name + ": " + p.help;
  cmd->add_option("--preset", o->preset, "Model and schedule preset:" + presets)->capture_default_str();
  cmd->add_option("--corpus", o->corpus,
                  "Named corpus (bible, gcide, fortunes, cpp-headers) or a file/directory")
      ->capture_default_str();
  cmd->add_option("--out", *out, "Output directory (tokenizer/, dataset/, run/, model/, pretrain.json)")
      ->required();
  cmd->add_option("--steps", o->steps, "Optimizer steps (default: the preset's)");
  cmd->add_option("--lr", o->lr, "Peak learning rate (default: the preset's; the cosine decays to lr/10)");
  cmd->add_flag("--resume", o->resume, "Continue from the newest checkpoint in OUT/run");
  cmd->add_option("--seed", o->seed, "Seed of the initialisation, split and window sampler")
      ->capture_default_str();
  cmd->add_option("--checkpoint-every", o->checkpoint_every,
                  "Checkpoint every N steps (default: the preset's)");
  cmd->add_option("--stop-after", o->stop_after,
                  "Stop after step N without writing a checkpoint, as if killed (for testing --resume)");
  cmd->add_option("--max-documents", o->max_documents, "Use only the first N documents of the corpus");
  cmd->add_option("--batch-size", o->batch_size, "Windows per optimizer step (default: the preset's)");
  cmd->add_option(
      "--seq-len", o->seq_len,
      "Tokens per training window, and the model's max_position_embeddings (default: the preset's)");
  cmd->add_option("--device", o->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--autocast", o->autocast,
                  "bf16 or fp16: autocast of the forward passes on the device (weights and optimizer stay "
                  "float32; fp16 adds dynamic loss scaling)")
      ->check(CLI::IsMember({"bf16", "fp16"}));
  // The optimizer: AdamW, or a low-rank method of optim/ (`lowrank methods` lists their options).
  auto optimizer = std::make_shared<OptimizerFlags>();
  optimizer->add_to(*cmd, o->optimizer.name);
  // A low-rank weight parameterisation of the attention/MLP projections (`lowrank methods`).
  auto param_options_text = std::make_shared<std::string>();
  cmd->add_option("--parameterization", o->parameterization,
                  "Train the attention/MLP weights through a low-rank parameterisation: lowrank, sltrain, "
                  "relora, sst, trp or maestro (the exported model is dense)");
  cmd->add_option("--parameterization-options", *param_options_text,
                  "The parameterisation's options as a JSON object, e.g. '{\"rank\": 32, \"alpha\": 16, "
                  "\"density\": 0.03}' (--rank sets its rank when the optimizer is adamw)");
  // The token mixers: a LowrankMixerForCausalLM instead of Llama attention (docs/mixers.md).
  auto mixer_options_text = std::make_shared<std::string>();
  cmd->add_option("--mixer", o->mixer,
                  "Token mixer of every layer (a causal one; lowrank methods lists them)");
  cmd->add_option("--layer-mixers", o->layer_mixers, "Token mixer per layer, comma-separated (hybrids)");
  cmd->add_option("--mixer-options", *mixer_options_text,
                  "The mixer's options as a JSON object (with --layer-mixers: {\"<mixer>\": {...}})");
  // Data-parallel training: --nproc N, or one rank of torchrun's world (docs/distributed.md).
  auto dist_flags = std::make_shared<DistFlags>();
  dist_flags->add_to(*cmd);
  return [o, out, optimizer, param_options_text, mixer_options_text, dist_flags, &global] {
    o->out = *out;
    const std::filesystem::path rank_logs = o->out / "run" / "logs";
    if (dist_flags->launch(rank_logs)) return;  // this process was the launcher; the ranks ran
    const std::unique_ptr<dist::Group> group = dist_flags->join(rank_logs);
    o->bucket_bytes = dist_flags->reducer().bucket_bytes;
    o->zero = dist_flags->zero;
    if (!mixer_options_text->empty()) o->mixer_options = parse_json(*mixer_options_text, "--mixer-options");
    if (!param_options_text->empty())
      o->parameterization_options = parse_json(*param_options_text, "--parameterization-options");
    o->optimizer = optimizer->request();
    const train::PretrainSummary s =
        train::pretrain(*o, group.get());     // checks every option before any stage
    if (group && group->rank() != 0) return;  // rank 0 reports
    if (global.json) {
      std::cout << s.to_json().dump(2) << "\n";
      return;
    }
    if (!s.finished) {
      log::info("stopped after step ", s.steps, "; continue with --resume");
      return;
    }
    std::printf("%s%s: %lld steps, final loss %.4f, validation perplexity %.3f (95%% CI %.3f .. %.3f)\n",
                s.model_dir.string().c_str(), s.cached ? " (cached)" : "", static_cast<long long>(s.steps),
                s.final_loss, s.validation.perplexity, s.validation.ci_low, s.validation.ci_high);
  };
}

}  // namespace lowrank::cli
