// `lowrank finetune`: an adapter trained on a corpus on top of a frozen HF model, with the
// runtime's trainer (train/trainer.h: progress, JSONL metrics, checkpoints, exact resume).
//   1. the corpus is tokenized with the model's tokenizer.json into OUT/dataset (cached);
//   2. the adapter is created (adapt::create_adapter) and only its tensors are trained (--method
//      full and welore train the model's own tensors instead: FinetuneOptions::method);
//   3. OUT holds the PEFT adapter directory (adapter_config.json, adapter_model.safetensors),
//      OUT/run the metrics and checkpoints, OUT/finetune.json the summary with validation
//      perplexity of the base and of the adapted model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "lowrank/adapt/config.h"
#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/json.h"
#include "lowrank/eval/perplexity.h"
#include "lowrank/train/optimizer_request.h"
#include "lowrank/train/trainer.h"

namespace lowrank::dist {
class Group;
}  // namespace lowrank::dist

namespace lowrank::adapt {

struct FinetuneOptions {
  std::filesystem::path model;  // HF model directory with tokenizer.json
  // An adapt::registry() method; "full" (full fine-tuning baseline: every tensor, OUT/model); or
  // "welore" (train/welore.h: the low-rank factors of a `compress --method welore` directory,
  // written to OUT/model in the same compressed format). `model` may be a compressed directory
  // (compress/format.h): an adapter then trains over its operators (QLoRA-style over INT4).
  std::string method = "lora";
  Json config = Json::object();  // adapter_config.json keys (r, lora_alpha, target_modules, ...)
  std::string corpus = "bible";  // named corpus or path
  std::filesystem::path out;
  // steps, batch, lr, ... (weight decay 0 by default here). Its optimizer fields are set from
  // `optimizer`.
  train::TrainerConfig trainer;
  // The optimizer of the trainable tensors: "adamw" or a method of optim/ with its options and
  // flags. A low-rank method projects the 2-D adapter tensors whose names contain one of its
  // target_modules (default self_attn, mlp: all of an all-linear adapter's factors) with the rank
  // clamped to the tensor's short side; 1-D tensors and the rest run AdamW inside the same
  // optimizer.
  train::OptimizerRequest optimizer;
  bool resume = false;
  int64_t max_documents = -1;
  int64_t eval_tokens = 1 << 15;  // validation tokens scored before and after
  // The model's weights and computation: float32, or bfloat16 / float16 for pure half precision
  // (the base, the adapter and the optimizer states all in that type). Mixed precision keeps
  // float32 here and sets trainer.autocast instead; the two are exclusive.
  at::ScalarType dtype = at::kFloat;
  // Data-parallel runs (finetune()'s `group`): DDP's gradient bucket size and the ZeRO stage
  // (train/data_parallel.h, train/zero.h).
  int64_t bucket_bytes = 25 << 20;
  int zero = 0;
};

// Defaults for adapter training: 200 steps of 8 × 128 tokens, lr 1e-3 with 20 warmup steps,
// no weight decay (PEFT/transformers' Trainer default).
train::TrainerConfig default_finetune_trainer();

struct FinetuneSummary {
  std::filesystem::path adapter_dir;
  std::string method;
  int64_t trainable_parameters = 0;
  int64_t base_parameters = 0;
  int64_t steps = 0;
  bool finished = false;
  double final_loss = 0;
  double train_seconds = 0;
  double peak_rss_mib = 0;  // of the whole process, at the end
  OrderedJson memory;       // training-state bytes by kind (train::TrainResult::memory)
  eval::PerplexityResult base_validation;
  eval::PerplexityResult validation;
  // Method-specific facts of the run: "loram" (criterion, pruned sizes, alignment losses),
  // "petal" (the quality proxy's loss bounds and threshold).
  OrderedJson details = OrderedJson::object();
  OrderedJson to_json() const;
};

// The trainer's target for an adapter: its tensors (PEFT names), checkpointed raw in
// adapter_state.safetensors, with every layer's before_step/after_step hooks wired in.
train::TrainTarget training_target(AttachedAdapter& adapter);

// Throws InvalidArgument (bad option, unknown method), NotFound (model, tokenizer, corpus,
// unknown optimizer). Options, methods and the optimizer are checked before any work.
// With `group` (dist/group.h), this process is one rank of a data-parallel run (docs/distributed.md):
// the batch is the global one, rank 0 prepares the dataset while the others wait, and rank 0 alone
// scores the validation split and writes the adapter. LoRAM (an alignment run of its own) is refused.
FinetuneSummary finetune(const FinetuneOptions& options, dist::Group* group = nullptr);

}  // namespace lowrank::adapt
