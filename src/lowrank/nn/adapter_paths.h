// The two ways LinearSlot::forward_shared_input adds adapters to its slots' base outputs:
//   plain   every enabled adapter on every row (training, single-adapter inference);
//   routed  each row (batch element) through the adapter AdapterRouting names for it (serving a
//           batch that mixes adapters).
// Internal to nn/ (linear_slot.cpp calls them after the base forwards).
//
// Shapes (B batch rows, T… further leading dims, S slots that read the same input):
//   x          [B, T…, in]       the input all S slots read
//   ys[i]      [B, T…, out_i]    slot i's base output on entry, base + adapters on return
//   base_y     [B, T…, out_i]    ys[i] before any adapter (what DoRA-like deltas rescale)
//   Δ(x)       [B, T…, out_i]    an adapter's delta; routed: [n, T…, out_i] on its n gathered rows
//   A, B       [r, in], [out_i, r]  a low-rank adapter's factors (stacked_low_rank.h)
#pragma once

#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/nn/linear_slot.h"

namespace lowrank::nn {

// One slot as the adapter paths see it.
struct SlotAdapters {
  std::string_view name;  // for error messages
  const BaseOperator* base = nullptr;
  bool enabled = true;                                                // adapters enabled on the slot
  std::vector<std::pair<std::string_view, const Adapter*>> adapters;  // attach order

  // nullptr when the slot holds no adapter of that name.
  const Adapter* find(std::string_view adapter_name) const;
};

// ys[i] += Σ Δ_a(x) over the enabled adapters of slot i. Adapters with a low_rank_delta() share
// one pair of GEMMs per slot (and the first with the other slots); the others add their own
// delta first, while the base output is still untouched. Throws InvalidArgument (naming the slot
// and adapter) for a delta of the wrong shape.
void add_adapters(std::span<const SlotAdapters> slots, const at::Tensor& x, std::span<at::Tensor> ys);

// ys[i][b] += Δ_a(x[b]) for a = routing.row_adapter[b] (nothing for rows routed to the base alone
// or to an adapter slot i does not hold). Throws InvalidArgument for a routing whose row count is
// not x.size(0).
void add_routed_adapters(std::span<const SlotAdapters> slots, const at::Tensor& x,
                         const AdapterRouting& routing, std::span<at::Tensor> ys);

}  // namespace lowrank::nn
