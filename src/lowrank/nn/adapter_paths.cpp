// The plain and the routed adapter paths of a slot forward; see adapter_paths.h.
#include "lowrank/nn/adapter_paths.h"

#include <ATen/Parallel.h>

#include "lowrank/core/error.h"
#include "lowrank/nn/segment_plan.h"
#include "lowrank/nn/stacked_low_rank.h"

namespace lowrank::nn {

const Adapter* SlotAdapters::find(std::string_view adapter_name) const {
  for (const auto& [n, a] : adapters)
    if (n == adapter_name) return a;
  return nullptr;
}

void add_adapters(std::span<const SlotAdapters> slots, const at::Tensor& x, std::span<at::Tensor> ys) {
  std::vector<StackedLowRank> low_rank(slots.size());
  std::vector<const StackedLowRank*> factors(slots.size(), nullptr);
  for (size_t i = 0; i < slots.size(); ++i) {
    const SlotAdapters& slot = slots[i];
    if (!slot.enabled || slot.adapters.empty()) continue;
    const at::Tensor base_y = ys[i];
    std::vector<LowRankDelta> deltas;
    for (const auto& [adapter_name, adapter] : slot.adapters) {
      if (auto d = adapter->low_rank_delta()) {
        deltas.push_back(std::move(*d));
        continue;
      }
      at::Tensor d = adapter->delta(x, base_y, *slot.base);
      LR_CHECK(d.sizes() == base_y.sizes(), InvalidArgument, "slot ", slot.name, ": adapter \"", adapter_name,
               "\" returned shape ", d.sizes(), ", expected ", base_y.sizes());
      ys[i] = ys[i] + d;
    }
    if (deltas.empty()) continue;
    low_rank[i] = stacked(deltas);
    factors[i] = &low_rank[i];
    ys[i] = ys[i].contiguous();
  }
  add_low_rank(ys, x, factors);
}

namespace {

// Adds, for every slot, the adapters that cannot run as segments (no low-rank form, or gradients
// recorded) on the rows routed to them, gathered into one batch per adapter, while the base output
// is still untouched; returns the low-rank forms of the others, for the segments.
SegmentForms add_gathered_deltas(std::span<const SlotAdapters> slots, const at::Tensor& x,
                                 const AdapterRouting& routing, std::span<at::Tensor> ys) {
  const bool in_place = !at::GradMode::is_enabled();
  const int64_t rows = x.size(0);
  SegmentForms forms(routing.adapters.size(), slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    const SlotAdapters& slot = slots[i];
    if (!slot.enabled) continue;
    const at::Tensor base_y = ys[i];
    for (size_t a = 0; a < routing.adapters.size(); ++a) {
      const Adapter* adapter = slot.find(routing.adapters[a]);
      if (adapter == nullptr) continue;  // the adapter does not target this slot
      if (in_place)
        if (auto d = adapter->low_rank_delta()) {
          forms.at(a, i) = stacked({*d});
          continue;
        }
      std::vector<int64_t> members;
      for (int64_t b = 0; b < rows; ++b)
        if (routing.row_adapter[static_cast<size_t>(b)] == static_cast<int64_t>(a)) members.push_back(b);
      if (members.empty()) continue;
      if (static_cast<int64_t>(members.size()) == rows) {
        ys[i] = ys[i] + adapter->delta(x, base_y, *slot.base);
        continue;
      }
      const at::Tensor index = at::tensor(members, at::TensorOptions(at::kLong)).to(x.device());
      const at::Tensor d =
          adapter->delta(x.index_select(0, index), base_y.index_select(0, index), *slot.base);
      ys[i] = ys[i].index_add(0, index, d);
    }
    ys[i] = ys[i].contiguous();
  }
  return forms;
}

}  // namespace

void add_routed_adapters(std::span<const SlotAdapters> slots, const at::Tensor& x,
                         const AdapterRouting& routing, std::span<at::Tensor> ys) {
  const int64_t rows = x.size(0);
  LR_CHECK(static_cast<int64_t>(routing.row_adapter.size()) == rows, InvalidArgument, "slot ", slots[0].name,
           ": adapter routing has ", routing.row_adapter.size(), " rows, the input ", rows);
  // Without gradients, a low-rank adapter is applied to each run of consecutive rows that use it
  // (a segment): the run is a view of x and y, so it costs one pair of products at the adapter's
  // own rank, added into y in place, with no gather or scatter. Other adapters, and every adapter
  // while gradients are recorded, gather their rows first.
  const SegmentForms forms = add_gathered_deltas(slots, x, routing, ys);
  std::vector<Segment> segments = plan_segments(routing.row_adapter, routing.adapters.size());
  segments = gather_short_segments(std::move(segments), forms, x, ys);
  auto apply = [&](const Segment& s) {
    std::vector<at::Tensor> rows_of_y;
    std::vector<const StackedLowRank*> factors;
    for (size_t i = 0; i < slots.size(); ++i) {
      const auto& form = forms.at(s.adapter, i);
      rows_of_y.push_back(ys[i].narrow(0, s.start, s.length));
      factors.push_back(form ? &*form : nullptr);
    }
    add_low_rank(rows_of_y, x.narrow(0, s.start, s.length), factors);
  };
  if (segments.size() < 2 || at::get_num_threads() < 2) {
    for (const Segment& s : segments) apply(s);
    return;
  }
  // Many small segments: one thread per segment is better than splitting each small product
  // across threads. The segments write disjoint rows of y. Worker threads start without this
  // thread's inference mode, which the in-place additions into y (an inference tensor) need.
  const bool inference = c10::InferenceMode::is_enabled();
  at::parallel_for(0, static_cast<int64_t>(segments.size()), 1, [&](int64_t begin, int64_t end) {
    const c10::InferenceMode inference_guard(inference);
    const at::NoGradGuard no_grad;
    for (int64_t i = begin; i < end; ++i) apply(segments[static_cast<size_t>(i)]);
  });
}

}  // namespace lowrank::nn
