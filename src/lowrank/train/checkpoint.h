// A training run's directory on disk: its checkpoints (written atomically, read back for an exact
// resume) and its metrics log.
//
// Run directory layout:
//   metrics.jsonl                  one object per step: step, loss, lr, grad_norm, tokens_per_s
//   checkpoints/latest             the name of the newest complete checkpoint ("step-00000100")
//   checkpoints/step-00000100/     config.json + model.safetensors (HF layout, float32),
//                                  optimizer.safetensors (<param>.exp_avg / .exp_avg_sq),
//                                  trainer_state.json (step, sampler counter, tokens, config)
// With a parameterisation (parameterization.h) model.safetensors holds the trained factors and
// the frozen state under `<slot>.<name>` instead (not an HF model until densify()); a fine-tuned
// adapter's checkpoint holds its tensors in TrainTarget::weights_file.
// A checkpoint is built in a temporary directory and renamed into place, then `latest` is
// replaced atomically: a killed run leaves the previous checkpoint intact. Resuming restores
// weights, optimizer moments, the step and the sampler counter (the only randomness), and drops
// metrics lines past the checkpoint, so the loss sequence is bitwise that of an uninterrupted run
// (same build, device and thread count).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>

#include "lowrank/optim/adamw.h"
#include "lowrank/train/trainer.h"

namespace lowrank::train {

// Where a run stands: the counters trainer_state.json records beside the tensors.
struct CheckpointPosition {
  int64_t step = 0;              // optimizer steps done
  int64_t tokens = 0;            // training tokens consumed
  uint64_t sampler_counter = 0;  // WindowSampler::counter()
  double loss_scale = 0;         // fp16 autocast's loss scale (loss_scaler.h); 0: none
  int64_t loss_scale_growth_tracker = 0;
  int64_t world_size = 1;  // data-parallel ranks that wrote it (recorded; any world size resumes it)
};

// Writes checkpoints/step-<step> of `run_dir` (target's weights, the optimizer's state,
// trainer_state.json with `config`), points `latest` at it and removes the older ones. Throws
// IoError when the directory cannot be written.
// `optimizer_state`, when given, is written in place of optimizer.state_tensors() (ZeRO-1's
// gathered state, zero.h).
void write_checkpoint(const std::filesystem::path& run_dir, const TrainTarget& target,
                      const optim::Optimizer& optimizer, const TrainerConfig& config,
                      const CheckpointPosition& position,
                      const std::vector<std::pair<std::string, at::Tensor>>* optimizer_state = nullptr);

// The newest complete checkpoint of a run directory (nullopt when none). Throws Corruption when
// `latest` names a directory that does not exist.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& run_dir);

// Restores `checkpoint` into `target`'s tensors (params and frozen) and `optimizer`, and returns
// its position. Throws InvalidArgument when it was written with another global batch
// (batch_size × grad_accum), seq_len, seed, optimizer or parameterisation than `config`, Corruption for a
// tensor of another shape, NotFound for a missing file or tensor.
CheckpointPosition read_checkpoint(const std::filesystem::path& checkpoint, const TrainerConfig& config,
                                   TrainTarget& target, optim::Optimizer& optimizer);

// Where a run starts: with `resume` and a checkpoint in `run_dir`, that checkpoint restored into
// `target` and `optimizer` (read_checkpoint) and run_dir/metrics.jsonl cut back to its step;
// otherwise step 0 and an emptied metrics.jsonl. Shared by the trainers (trainer.h, classify.h).
// `owner` false (a data-parallel rank other than 0): the checkpoint is read, metrics.jsonl left alone.
CheckpointPosition start_run(const std::filesystem::path& run_dir, bool resume, const TrainerConfig& config,
                             TrainTarget& target, optim::Optimizer& optimizer, bool owner = true);

// Keeps the lines of a metrics.jsonl with step <= `step` (a killed run may have logged past its
// last checkpoint; a torn last line ends the kept part), rewritten atomically. No-op when the
// file does not exist.
void truncate_metrics(const std::filesystem::path& path, int64_t step);

}  // namespace lowrank::train
