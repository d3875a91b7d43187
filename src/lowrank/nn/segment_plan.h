// How a routed batch (AdapterRouting: one adapter per row) is cut into work: the runs of
// consecutive rows that use one adapter (the segments of S-LoRA/Punica's SGMV, Sheng et al.,
// 2023; Chen et al., 2023), and which of them go to the gathered kernel (ops/lora_gather.h, BGMV)
// rather than a GEMM pair each. Internal to nn/: LinearSlot's routed path (adapter_paths.cpp).
//
// Shapes (B routed rows, T tokens per row, S slots that read the same input, A routed adapters):
//   x                 [B, T…, in]      the shared input; a segment is rows [start, start + length)
//   ys[i]             [B, T…, out_i]   slot i's output, updated in place
//   forms(a, i).a     [r_ai, in]       adapter a's factors in slot i (absent: the adapter does
//   forms(a, i).b     [out_i, r_ai]      not target slot i, or has no low-rank form)
//   task (per segment × slot)          tokens = length · T, x and y pointers at row `start`
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/stacked_low_rank.h"

namespace lowrank::nn {

// Rows [start, start + length) of the batch, all routed to adapter `adapter`.
struct Segment {
  int64_t start = 0, length = 0;
  size_t adapter = 0;
};

// The maximal runs of equal entries of `row_adapter` whose adapter is in [0, adapters), in row
// order; rows routed to the base alone (< 0) or to no known adapter belong to no segment.
std::vector<Segment> plan_segments(std::span<const int64_t> row_adapter, size_t adapters);

// The low-rank form of each (routed adapter, slot) pair, where it has one.
class SegmentForms {
 public:
  SegmentForms(size_t adapters, size_t slots) : slots_(slots), forms_(adapters * slots) {}
  std::optional<StackedLowRank>& at(size_t adapter, size_t slot) { return forms_[adapter * slots_ + slot]; }
  const std::optional<StackedLowRank>& at(size_t adapter, size_t slot) const {
    return forms_[adapter * slots_ + slot];
  }
  size_t slots() const { return slots_; }

 private:
  size_t slots_;
  std::vector<std::optional<StackedLowRank>> forms_;  // [adapter * slots + slot]
};

// Adds, in place, the forms of every segment of at most ops::lora_gather_max_tokens() tokens
// whose tensors the gathered kernel reads (float32, contiguous, on x's device) through one
// lora_gather (or lora_gather_cuda) call for all of them, and returns the segments left for the
// GEMM pair. Returns `segments` untouched when the kernel does not apply (gradients recorded,
// gathering off, x not contiguous float32 on the CPU or on CUDA with the CUDA twin built).
std::vector<Segment> gather_short_segments(std::vector<Segment> segments, const SegmentForms& forms,
                                           const at::Tensor& x, std::span<at::Tensor> ys);

}  // namespace lowrank::nn
