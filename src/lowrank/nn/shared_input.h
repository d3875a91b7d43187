// Work derived from a linear layer's input alone, shared by the base operators of the slots that
// read that input. LinearSlot::forward_shared_input (q, k, v; gate, up) opens a scope around its
// slots' base forwards; an operator whose first step depends only on x and on state it shares with
// the other slots caches that step here under a key naming the shared state, and the next slot
// finds it. SVDQuant's q, k and v hold one smoothing vector λ and one down projection L₂, so
// x̂ = x/λ and x̂·L₂ᵀ are computed once per input instead of once per slot, as the paper's fused
// kernel does. Nothing cached outlives the scope (the cached tensors are released with it).
#pragma once

#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::nn {

class SharedInputScope {
 public:
  using Key = std::pair<const void*, const void*>;

  // Opens a scope for `x` on this thread (scopes nest; `x` must outlive the scope).
  explicit SharedInputScope(const at::Tensor& x);
  ~SharedInputScope();
  SharedInputScope(const SharedInputScope&) = delete;
  SharedInputScope& operator=(const SharedInputScope&) = delete;

  // The innermost scope open on this thread if it was opened for `x` itself (the same tensor, not
  // an equal one); otherwise null.
  static SharedInputScope* for_input(const at::Tensor& x);

  // The tensors stored under `key`, or null.
  const std::vector<at::Tensor>* find(Key key) const;
  void put(Key key, std::vector<at::Tensor> tensors);
  size_t size() const { return entries_.size(); }

 private:
  const at::Tensor& x_;
  SharedInputScope* previous_;
  std::vector<std::pair<Key, std::vector<at::Tensor>>> entries_;
};

}  // namespace lowrank::nn
