// Low-rank adapters in the form a slot fuses them in: stacked factors, and the product that adds
// them into slot outputs (one pair of GEMMs per slot, the first shared by slots that read the same
// input). Internal to nn/: LinearSlot's plain and routed adapter paths (adapter_paths.h) use it.
#pragma once

#include <span>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/linear_slot.h"

namespace lowrank::nn {

// The fusable adapters of one slot stacked: A = [A₁; A₂; …] [R, in] and B = [s₁B₁, s₂B₂, …]
// [out, R] with scale 1, or one adapter's own A, B and scale (applied by the GEMM, as its α).
struct StackedLowRank {
  at::Tensor a, b;
  double scale = 1;
};

StackedLowRank stacked(const std::vector<LowRankDelta>& deltas);

// ys[i] += s_i·(x·A_iᵀ)·B_iᵀ for every slot i with factors (null: none), x [..., in] and
// ys[i] [..., out_i] with the same leading shape. Adds in place when no gradient is recorded
// (ys[i] must then be contiguous; it may be a view, which is what gets updated); otherwise
// replaces ys[i].
void add_low_rank(std::span<at::Tensor> ys, const at::Tensor& x,
                  std::span<const StackedLowRank* const> factors);

}  // namespace lowrank::nn
