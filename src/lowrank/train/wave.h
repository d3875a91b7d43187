// Training and evaluating the wave-equation encoder–decoder (nn/wave_cnn.h) on data sets of
// `lowrank wave simulate` (data/wave2d.h): the trainer's loop (trainer.h: AdamW, warmup + cosine
// schedule, clipping, atomic checkpoints and exact resume, metrics.jsonl) with the mean squared
// error in units of the model's residual scale,
//   L = (1/B) Σ_b ‖ŷ_b − y_b‖² / (n² · s_out²),
// in epochs over the training samples (epoch_order.h).
// Error measure: the relative L2 error over a split, ‖Ŷ − Y‖ / ‖Y‖ (all samples and cells at once),
// beside the persistence baseline's (ŷ = u^t) so that a number has a scale.
// metrics.jsonl: {"step", "loss", "lr", "grad_norm", "samples_per_s"} per step, and after each
// evaluation {"step", "test_relative_l2", "test_mse"}.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/data/wave2d.h"
#include "lowrank/nn/wave_cnn.h"
#include "lowrank/train/trainer.h"

namespace lowrank::train {

struct WaveEvalResult {
  double relative_l2 = 0;              // ‖Ŷ − Y‖ / ‖Y‖
  double mse = 0;                      // mean (ŷ − y)² per cell
  double persistence_relative_l2 = 0;  // ‖U^t − Y‖ / ‖Y‖
  int64_t samples = 0;
  OrderedJson to_json() const;
};

// The model's errors on `data`, in batches of `batch_size`, without gradients. InvalidArgument
// for an empty data set.
WaveEvalResult evaluate_wave(const nn::WaveCnn& model, const data::WaveDataset& data,
                             int64_t batch_size = 32);

struct WaveTrainConfig {
  // steps (0: `epochs` passes), batch_size, lr, schedule, clipping, AdamW, seed,
  // checkpoint_every, stop_after; seq_len is 1.
  TrainerConfig trainer;
  int64_t epochs = 1;
  int64_t eval_every = 0;  // evaluate on the test split every N steps (0: only at the end)
  int64_t eval_batch_size = 32;
};

struct WaveTrainResult {
  int64_t step = 0;
  bool finished = false;
  std::vector<StepRecord> steps;
  WaveEvalResult train;  // the errors on the training samples after the last step (finished runs)
  WaveEvalResult test;   // the last evaluation on the test split (samples 0: none ran)
};

// Trains every tensor of `model` on `train`, evaluating on `test` (may be empty: no evaluation).
// With `resume` and a checkpoint in `run_dir`, continues from it bitwise. Throws InvalidArgument
// for a bad config or data of another grid, Corruption for a damaged checkpoint, IoError.
WaveTrainResult train_wave(nn::WaveCnn& model, const data::WaveDataset& train, const data::WaveDataset& test,
                           WaveTrainConfig config, const std::filesystem::path& run_dir, bool resume);

}  // namespace lowrank::train
