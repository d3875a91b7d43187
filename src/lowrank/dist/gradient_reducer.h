// Gradient averaging for data-parallel training: DDP's own c10d::Reducer over a Group, built as
// torch.nn.parallel.DistributedDataParallel builds it.
//
// - Buckets: c10d::compute_bucket_assignment_by_size over the parameters with limits
//   [first_bucket, bucket] (DDP: 1 MiB, then bucket_cap_mb 25), reversed, so that the buckets of
//   the last layers (whose gradients backward produces first) fill and all-reduce first. After
//   the first synchronised step the Reducer rebuilds its buckets in the order the gradients
//   actually arrived (rebuild_buckets, as DDP's forward calls it).
// - gradient_as_bucket_view: each parameter's .grad is a view into its bucket, so gradients are
//   not held twice (GaLore users saw DDP double gradient memory without it, GaLore issue 55).
// - A bucket all-reduces (then divides by the world size) as soon as every gradient in it is
//   ready, during backward. Backward returns with every parameter's .grad the mean over ranks.
// - Accumulation: only a backward after prepare_for_backward() synchronises, as DDP's no_sync():
//   the micro-batches before the last accumulate locally and the last one all-reduces the sum.
//
// Every parameter must get a gradient in every synchronised backward (find_unused_parameters is
// off, as DDP's default); each storage must appear once (tied tensors are given once).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lowrank/dist/group.h"

namespace lowrank::dist {

struct ReducerOptions {
  int64_t bucket_bytes = 25 << 20;       // DDP's bucket_cap_mb 25
  int64_t first_bucket_bytes = 1 << 20;  // DDP's _DEFAULT_FIRST_BUCKET_BYTES
};

// The Reducer's current buckets (after the first step: as rebuilt in gradient-ready order).
struct ReducerStats {
  int64_t buckets = 0;
  int64_t bytes = 0;  // gradient bytes all-reduced per synchronised backward (each rank's input)
  std::vector<int64_t> bucket_bytes;
};

class GradientReducer {
 public:
  // Broadcasts rank 0's `params` to every rank first (DDP's constructor does), then builds the
  // buckets. `names[i]` names params[i] in error messages. Throws InvalidArgument for a
  // parameter without requires_grad or two parameters sharing a storage.
  GradientReducer(Group& group, std::vector<at::Tensor> params, std::vector<std::string> names,
                  ReducerOptions options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Before the forward pass of a synchronised micro-batch: rebuilds the buckets after the first
  // step, then counts the iteration.
  void prepare_for_forward();
  // Before the backward pass that must synchronise (the last micro-batch of a step).
  void prepare_for_backward();
  ReducerStats stats() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace lowrank::dist
