// ZeRO stage 1 (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion
// Parameter Models", SC 2020, §5.1 P_os): the optimizer state is partitioned over the
// data-parallel ranks; gradients are still all-reduced (DDP's Reducer), each rank updates only the
// tensors it owns, and the updated weights are then broadcast from their owners.
//
// - Ownership is by whole tensor, sorted-greedy as torch.distributed.optim.ZeroRedundancyOptimizer
//   (_partition_parameters): tensors by decreasing weight, each to the rank with the least weight
//   so far. A matrix is never flat-sharded: flat sharding silently turned Q-GaLore's targets into
//   plain AdamW under FSDP (unslothai/unsloth#10887).
// - The weight of a tensor is the optimizer state it will hold: 2·numel for Adam moments; for a
//   tensor the GaLore family projects at rank r, GaLore's layout (galore_projector.py: the
//   smaller side is projected), 2·r·max(m, n) for the moments of the projected gradient plus
//   r·min(m, n) for the projector.
// - The owner runs the unchanged step_parameter; the step's shared decisions (projector refresh
//   steps, FRUGAL's global block selection in begin_step) are made identically on every rank,
//   and only the owner computes a weight's projector, from the all-reduced gradient.
// - Checkpoints gather the whole state to every rank, each entry from its owner, and rank 0
//   writes it in the unsharded layout: any world size, with or without ZeRO, resumes it.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lowrank/dist/group.h"
#include "lowrank/optim/adamw.h"

namespace lowrank::train {

struct ZeroSharding {
  std::vector<int> owner;       // per trained tensor, in the optimizer's order
  std::vector<int64_t> weight;  // the state elements each is expected to hold
  std::vector<std::string> names;

  // Sorted-greedy over `world` ranks (ties: the lower index first, the lower rank first).
  static ZeroSharding assign(const std::vector<std::pair<std::string, at::Tensor>>& params,
                             const optim::Optimizer& optimizer, int world);
  // The rank owning state entry `entry` ("<param>.<key>", longest parameter-name match; entries
  // that name no parameter belong to rank 0).
  int owner_of_entry(const std::string& entry) const;
};

// One optimizer step under ZeRO-1: begin_step(lr), step_parameter for every tensor this rank owns
// that has a gradient, end_step(), then every tensor broadcast from its owner. Collective.
void zero_step(optim::Optimizer& optimizer, const std::vector<at::Tensor>& params,
               const ZeroSharding& sharding, dist::Group& group, double lr);

// The whole optimizer state (state_tensors() layout), each entry from the rank that owns it,
// on every rank. `key` must be the same on every rank and new for each call (the store
// exchange's name). Collective.
std::vector<std::pair<std::string, at::Tensor>> gather_optimizer_state(const optim::Optimizer& optimizer,
                                                                       const ZeroSharding& sharding,
                                                                       dist::Group& group,
                                                                       std::string_view key);

// Frees the state of the tensors this rank does not own (after a resume loaded all of it).
void release_unowned_state(optim::Optimizer& optimizer, const ZeroSharding& sharding, int rank);

}  // namespace lowrank::train
