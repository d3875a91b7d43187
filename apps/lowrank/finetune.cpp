// `lowrank finetune --model DIR --method M [--config JSON] --data CORPUS --out ADAPTER_DIR
// [--optimizer NAME [--rank r --update-gap T --scale α --optimizer-options JSON]]`: an adapter
// trained on a corpus over a frozen model; see src/lowrank/adapt/finetune.h.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "apps/lowrank/dist_flags.h"
#include "apps/lowrank/optimizer_flags.h"
#include "apps/lowrank/verbs.h"
#include "lowrank/adapt/finetune.h"
#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/nn/run.h"

namespace lowrank::cli {

VerbRunner add_finetune(CLI::App& app, const GlobalOptions& global) {
  auto* cmd =
      app.add_subcommand("finetune", "Train an adapter (LoRA family) on a corpus over a frozen model");
  struct Args {
    adapt::FinetuneOptions o;
    std::string model, out, config;
    int64_t r = 0;
    double alpha = 0;
    std::vector<std::string> targets;
    int64_t steps = 0, batch = 0, seq_len = 0, checkpoint_every = 0, stop_after = 0;
    double lr = 0;
    uint64_t seed = 0;
    std::string dtype = "float32";
    OptimizerFlags optimizer;
  };
  auto args = std::make_shared<Args>();
  args->o.trainer = adapt::default_finetune_trainer();
  cmd->add_option("--model", args->model, "HF model directory (with tokenizer.json)")->required();
  cmd->add_option("--method", args->o.method,
                  "Adapter method (lowrank methods lists them), full (every tensor), or welore (the "
                  "low-rank factors of a `compress --method welore` --model; OUT/model)")
      ->capture_default_str();
  cmd->add_option(
      "--config", args->config,
      "adapter_config.json keys as a JSON file or inline JSON, e.g. '{\"r\":16,\"lora_alpha\":32}'");
  cmd->add_option("--r", args->r, "Rank (overrides --config)");
  cmd->add_option("--alpha", args->alpha, "lora_alpha (overrides --config)");
  cmd->add_option("--target", args->targets, "Target module names (repeatable; default all-linear)");
  cmd->add_option("--data", args->o.corpus,
                  "Named corpus (bible, gcide, fortunes, cpp-headers) or a file/directory")
      ->capture_default_str();
  cmd->add_option("--out", args->out, "Output adapter directory (PEFT layout; run/ and dataset/ inside)")
      ->required();
  cmd->add_option("--steps", args->steps, "Optimizer steps (default 200)");
  cmd->add_option("--batch", args->batch, "Windows per step (default 8; with ranks, the global batch)");
  cmd->add_option("--seq-len", args->seq_len, "Tokens per window (default 128)");
  cmd->add_option("--lr", args->lr, "Peak learning rate (default 1e-3)");
  cmd->add_option("--seed", args->seed, "Seed of the initialisation and the window sampler")
      ->capture_default_str();
  cmd->add_option("--checkpoint-every", args->checkpoint_every, "Checkpoint every N steps (default 100)");
  cmd->add_option("--stop-after", args->stop_after,
                  "Stop after step N without a checkpoint (for testing --resume)");
  cmd->add_option(
         "--autocast", args->o.trainer.autocast,
         "bf16 or fp16: autocast of the forward passes (weights, adapter and optimizer stay float32; "
         "fp16 adds dynamic loss scaling)")
      ->check(CLI::IsMember({"bf16", "fp16"}));
  cmd->add_option("--dtype", args->dtype,
                  "float32, or bfloat16 / float16 for pure half precision: the base, the adapter and the "
                  "optimizer states in that type (exclusive with --autocast)")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}))
      ->capture_default_str();
  cmd->add_flag("--resume", args->o.resume, "Continue from the newest checkpoint in OUT/run");
  cmd->add_option("--max-documents", args->o.max_documents, "Use only the first N documents of the corpus");
  // The optimizer of the adapter's tensors: AdamW, or a low-rank method of optim/ (pretrain's flags).
  args->optimizer.add_to(*cmd, args->o.optimizer.name);
  // Data-parallel training: --nproc N, or one rank of torchrun's world (docs/distributed.md).
  auto dist_flags = std::make_shared<DistFlags>();
  dist_flags->add_to(*cmd);
  return [args, dist_flags, &global] {
    const std::filesystem::path rank_logs = std::filesystem::path(args->out) / "run" / "logs";
    if (dist_flags->launch(rank_logs)) return;  // this process was the launcher; the ranks ran
    const std::unique_ptr<dist::Group> group = dist_flags->join(rank_logs);
    adapt::FinetuneOptions o = args->o;
    o.bucket_bytes = dist_flags->reducer().bucket_bytes;
    o.zero = dist_flags->zero;
    o.optimizer = args->optimizer.request();  // checked by finetune() before any work
    o.model = args->model;
    o.out = args->out;
    o.dtype = nn::parse_dtype(args->dtype);
    if (!args->config.empty()) {
      o.config = std::filesystem::is_regular_file(args->config) ? read_json_file(args->config)
                                                                : parse_json(args->config, "--config");
      LR_CHECK(o.config.is_object(), InvalidArgument, "--config: expected a JSON object");
    }
    if (args->r > 0) o.config["r"] = args->r;
    if (args->alpha > 0) o.config["lora_alpha"] = args->alpha;
    if (!args->targets.empty()) o.config["target_modules"] = args->targets;
    if (args->steps > 0) o.trainer.steps = args->steps;
    if (args->batch > 0) o.trainer.batch_size = args->batch;
    if (args->seq_len > 0) o.trainer.seq_len = args->seq_len;
    if (args->lr > 0) o.trainer.lr = args->lr;
    if (args->checkpoint_every > 0) o.trainer.checkpoint_every = args->checkpoint_every;
    o.trainer.warmup_steps = std::min(o.trainer.warmup_steps, std::max<int64_t>(1, o.trainer.steps / 10));
    o.trainer.min_lr = std::min(o.trainer.min_lr, o.trainer.lr);
    o.trainer.seed = args->seed;
    o.trainer.stop_after = args->stop_after;
    const adapt::FinetuneSummary s = adapt::finetune(o, group.get());
    if (group && group->rank() != 0) return;  // rank 0 reports
    if (global.json) {
      std::cout << s.to_json().dump(2) << "\n";
      return;
    }
    if (!s.finished) {
      std::printf("stopped after step %lld (resume with --resume)\n", static_cast<long long>(s.steps));
      return;
    }
    std::printf("%s: %lld trainable parameters (%.3f%% of %lld), %lld steps in %.1f s, final loss %.4f\n",
                s.method.c_str(), static_cast<long long>(s.trainable_parameters),
                100.0 * static_cast<double>(s.trainable_parameters) / static_cast<double>(s.base_parameters),
                static_cast<long long>(s.base_parameters), static_cast<long long>(s.steps), s.train_seconds,
                s.final_loss);
    std::printf("validation perplexity: base %.3f -> adapted %.3f\n", s.base_validation.perplexity,
                s.validation.perplexity);
    std::printf("adapter written to %s\n", s.adapter_dir.c_str());
  };
}

}  // namespace lowrank::cli
