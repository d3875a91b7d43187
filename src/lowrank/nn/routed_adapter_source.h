// Adapters a routed forward reads from outside the model's slots. A serving engine that keeps its
// adapters' weights in its own memory (S-LoRA's unified memory pool, Sheng et al., 2023,
// arXiv:2311.03285, §4: serve/paged_lora.h) attaches nothing to the model; instead, while a
// RoutedAdapterScope is open on a thread, every routed slot forward on that thread
// (LinearSlot::forward / forward_shared_input with an AdapterRouting) computes the slots' base
// outputs and hands them to the scope's source, which adds each row's adapter delta itself. The
// slots' attached adapters take no part then, and the fused decode step declines (it would read
// them), so the routed path is the only one.
#pragma once

#include <span>
#include <string_view>

#include <ATen/ATen.h>

namespace lowrank::nn {

struct AdapterRouting;

class RoutedAdapterSource {
 public:
  virtual ~RoutedAdapterSource() = default;
  // ys[i][b] += Δ_a(x[b]) of slot `slots[i]` (its name) for a = routing.row_adapter[b] ≥ 0, for
  // slots that read the same input x [B, T…, in]; ys[i] [B, T…, out_i] hold the base outputs.
  virtual void add(std::span<const std::string_view> slots, const at::Tensor& x,
                   const AdapterRouting& routing, std::span<at::Tensor> ys) const = 0;
};

class RoutedAdapterScope {
 public:
  // Opens a scope on this thread (scopes nest; `source` must outlive the scope).
  explicit RoutedAdapterScope(const RoutedAdapterSource& source);
  ~RoutedAdapterScope();
  RoutedAdapterScope(const RoutedAdapterScope&) = delete;
  RoutedAdapterScope& operator=(const RoutedAdapterScope&) = delete;

  // The innermost scope's source on this thread, or null.
  static const RoutedAdapterSource* current();

 private:
  const RoutedAdapterSource* previous_;
};

}  // namespace lowrank::nn
