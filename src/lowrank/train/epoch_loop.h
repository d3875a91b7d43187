// The loop shared by the models trained on rows visited in epochs (train/ctr.h, train/wave.h,
// train/crisp.h): the trainer's step (trainer.h: supervised_step, finish_step), the row order of
// epoch_order.h, atomic checkpoints and exact resume (checkpoint.h), metrics.jsonl. A caller
// supplies the micro-batch loss of the sampled rows and, optionally, an evaluation every few steps.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/train/trainer.h"

namespace lowrank::train {

struct EpochLoop {
  // The mean loss of the micro-batch of training rows `rows` (int64), differentiable.
  std::function<at::Tensor(const at::Tensor& rows)> micro_loss;
  // Called after step s when eval_every divides s and s is not the last step, and once after the
  // last step (gradients off); it may append lines to metrics.jsonl through `metrics`. Optional.
  std::function<void(int64_t step, std::ostream& metrics)> evaluate;
  int64_t eval_every = 0;
  std::string rate_key = "rows_per_s";  // metrics.jsonl's name for the rows per second
};

struct EpochLoopResult {
  int64_t step = 0;
  bool finished = false;  // false: config.stop_after ended it, as if killed (no checkpoint)
  std::vector<StepRecord> steps;
};

// `tc.steps` when set, else the steps of `epochs` passes over `rows` rows (the last batch of an epoch
// may run into the next). Sets seq_len to 1 (a row is one sample) and validates the config.
TrainerConfig epoch_trainer_config(TrainerConfig tc, int64_t epochs, int64_t rows);

// Trains `target.params` (requires_grad is set on them, and cleared when the loop finishes) for
// `tc.steps` steps over `rows` training rows in run_dir (created): from its checkpoint with
// `resume`, bitwise as if uninterrupted. Throws as start_run and write_checkpoint, IoError for
// metrics.jsonl.
EpochLoopResult run_epoch_loop(TrainTarget& target, int64_t rows, const TrainerConfig& tc,
                               const std::filesystem::path& run_dir, bool resume, const EpochLoop& loop);

}  // namespace lowrank::train
