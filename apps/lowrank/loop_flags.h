// The flags of the supervised training loop (train/trainer.h) shared by the verbs that train a
// small model from scratch (`wave train`, `ctr train`, `retrieve train`):
//   [--steps N | --epochs E] [--batch-size B] [--lr LR] [--min-lr LR] [--warmup N]
//   [--weight-decay W] [--clip C] [--checkpoint-every N] [--stop-after N] [--seed S] [--resume]
// Each verb sets its defaults in the struct before add_to (--help shows them).
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "lowrank/train/trainer.h"

namespace lowrank::cli {

struct LoopFlags {
  int64_t steps = 0, epochs = 1, batch_size = 32, warmup = 0, checkpoint_every = 0, stop_after = 0;
  double lr = 1e-3, min_lr = 1e-5, weight_decay = 0, clip = 1.0;
  uint64_t seed = 0;
  bool resume = false;

  // Adds the flags to `cmd`; `unit` names what a batch holds ("samples", "rows", "pairs"), `seeded`
  // what --seed seeds. Without `clip`, --clip is not offered (the loop never clips). The struct must
  // outlive the parse.
  void add_to(CLI::App& cmd, const std::string& unit, const std::string& seeded, bool clip = true);
  // The loop's settings: steps, batch size, lr (min_lr capped at lr), warmup, clipping, AdamW weight
  // decay, seed, checkpoints. The verb sets what else it needs (Adam's betas, epochs).
  train::TrainerConfig trainer_config() const;
};

}  // namespace lowrank::cli
