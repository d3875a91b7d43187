// Data-parallel training with the loop of trainer.h: N ranks give the run that one process gives
// with the same global batch (docs/distributed.md).
//
// - The global batch (TrainerConfig::batch_size windows per micro-batch) is split evenly: rank r
//   draws window-sampler counters [c + r·b, c + (r+1)·b) of the global micro-batch that starts at
//   counter c, with b = batch_size / N. The union is exactly the one-process micro-batch, and the
//   sampler's state stays one integer (the next c), so checkpoints are the same at any world size.
// - Gradients are averaged by DDP's Reducer (dist/gradient_reducer.h) during the backward of each
//   step's last micro-batch; the earlier ones accumulate locally (DDP's no_sync). Clipping, the
//   update and the logged (all-reduced) loss are then identical on every rank.
// - Rank 0 alone writes metrics.jsonl and checkpoints; every rank reads a checkpoint to resume.
// - Before step 1 every rank compares its run's fingerprint with every other's through the store
//   (check_same_run): a mismatch stops every rank with the first field that differs.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/dist/gradient_reducer.h"
#include "lowrank/dist/group.h"

namespace lowrank::optim {
class Optimizer;
}  // namespace lowrank::optim

namespace lowrank::train {

struct TrainerConfig;
struct TrainTarget;
struct TokenStream;

// Named fields that must be equal on every rank (values are any text: JSON, hashes).
using Fingerprint = std::vector<std::pair<std::string, std::string>>;

struct DataParallel {
  dist::Group* group = nullptr;
  dist::ReducerOptions reducer;
  // 1: ZeRO stage 1 (zero.h), the optimizer state partitioned over the ranks; 0: replicated.
  int zero = 0;
  // Fields of the run beyond the trainer's own (the model config, tokenizer and dataset hashes):
  // compared with run_fingerprint()'s before step 1.
  Fingerprint fingerprint;

  int rank() const { return group ? group->rank() : 0; }
  int size() const { return group ? group->size() : 1; }
};

// The DataParallel of a run on `group` (null: one process, an empty one): DDP's bucket cap
// `bucket_bytes`, ZeRO stage `zero` and the run's own fingerprint fields.
DataParallel make_data_parallel(dist::Group* group, int64_t bucket_bytes, int zero, Fingerprint fingerprint);

// Whether a run continues from a checkpoint: `resume` (--resume), or torchrun restarted the group
// (TORCHELASTIC_RESTART_COUNT > 0) and `run_dir` holds a checkpoint, which every restarted worker
// then continues from, as torchrun's elastic agent expects of its workers.
bool resume_after_restart(const dist::Group* group, const std::filesystem::path& run_dir, bool resume);

// The trainer's part of a run's fingerprint: the version, the trainer config (optimizer and
// parameterisation with their options), every trained tensor's name, shape and dtype, and the
// token stream (its size and a SHA-256 of 64 evenly spaced slices).
Fingerprint run_fingerprint(const TrainerConfig& config, const TrainTarget& target, const TokenStream& data);

// Exchanges `fields` and throws InvalidArgument on every rank when two ranks differ, naming the
// first field that differs and the ranks on each side. Collective: every rank must call it.
void check_same_run(dist::Group& group, const Fingerprint& fields);

// Replicated mode with a low-rank optimizer, after a step that refreshed projectors: every rank
// computed its projectors (GaLore's SVD, a random basis, FRUGAL's block choice) from the same
// all-reduced gradient, so they agree bit for bit on one build and machine type, but an SVD on other
// hardware can flip signs (pytorch/pytorch#97410). Each rank hashes its projector state and block
// choice; a rank that differs from rank 0 stops every rank, naming the step (ZeRO-1, where only the
// owner computes a projector, cannot disagree). No-op for AdamW. Collective.
void check_same_projectors(dist::Group& group, const optim::Optimizer& optimizer, int64_t step);

// Refusals for a world of `world_size` (> 1): an indivisible global batch, per-layer updates;
// and for ZeRO-1 (`zero` 1) a parameterisation (its hooks touch optimizer state, which under
// ZeRO-1 only the owner holds) or a stage other than 0 and 1.
void check_data_parallel_config(const TrainerConfig& config, int world_size, int zero = 0);

}  // namespace lowrank::train
