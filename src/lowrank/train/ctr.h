// Training and evaluating the CTR models of nn/ctr.h: the trainer's loop (trainer.h: AdamW or a
// low-rank optimizer, warmup + cosine schedule, clipping, atomic checkpoints and exact resume,
// metrics.jsonl) with the binary cross entropy of the logits,
//   L = −(1/B) Σ_b y_b log σ(z_b) + (1 − y_b) log(1 − σ(z_b)),
// and evaluation by ROC AUC and log loss (eval/binary_metrics.h) on a held-out split.
// Order: each epoch visits every training row once, in a permutation drawn from (seed, epoch); the
// sampler counter is the number of rows consumed, so a resumed run continues the same order.
// metrics.jsonl: {"step", "loss", "lr", "grad_norm", "rows_per_s"} per step, and after each evaluation
// {"step", "test_auc", "test_logloss", "test_rows"}.
#pragma once

#include <cstdint>
#include <filesystem>

#include "lowrank/core/json.h"
#include "lowrank/data/ctr_data.h"
#include "lowrank/nn/ctr.h"
#include "lowrank/train/trainer.h"

namespace lowrank::train {

struct CtrEvalResult {
  double auc = 0, logloss = 0;
  int64_t rows = 0;
  double ctr = 0;      // fraction of positive labels
  double seconds = 0;  // inference time (forward passes only)
  OrderedJson to_json() const;
};

// Predicted click probabilities σ(z) [N] (float64) of `data`, in batches of `batch_size`, no gradients.
at::Tensor predict_ctr(const nn::CtrModel& model, const data::CtrData& data, int64_t batch_size = 8192,
                       double* seconds = nullptr);
// AUC and log loss of the model on `data`. Throws InvalidArgument for empty data or one class.
CtrEvalResult evaluate_ctr(const nn::CtrModel& model, const data::CtrData& data, int64_t batch_size = 8192);

struct CtrTrainConfig {
  // steps (0: `epochs` passes over the training rows), batch_size, lr, schedule, clipping, AdamW,
  // seed, checkpoint_every, stop_after; seq_len is 1.
  TrainerConfig trainer;
  int64_t epochs = 1;
  int64_t eval_every = 0;  // evaluate on the test split every N steps (0: only at the end)
  int64_t eval_batch_size = 8192;
};

struct CtrTrainResult {
  int64_t step = 0;
  bool finished = false;
  std::vector<StepRecord> steps;
  CtrEvalResult test;  // the last evaluation (rows 0 when none ran)
};

// Trains every tensor of `model` on `train`, evaluating on `test`. With `resume` and a checkpoint in
// `run_dir`, continues from it bitwise. Throws InvalidArgument for a bad config or data of another
// schema, Corruption for a damaged checkpoint, IoError.
CtrTrainResult train_ctr(nn::CtrModel& model, const data::CtrData& train, const data::CtrData& test,
                         CtrTrainConfig config, const std::filesystem::path& run_dir, bool resume);

}  // namespace lowrank::train
